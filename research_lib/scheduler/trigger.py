"""The calendar trigger: fire times a number of minutes from every session close of an exchange.

Times come from the session closes of exchange_calendars: weekends and holidays have no
session, and an early close moves the jobs with it (the day after Thanksgiving closes at
13:00: research 13:30, trade 12:45). Fire times are tz-aware, in the schedule's time zone.
"""

from __future__ import annotations

import datetime as dt
import functools
import warnings
from zoneinfo import ZoneInfo

import pandas as pd
from apscheduler.triggers.base import BaseTrigger

_UTC = dt.timezone.utc


@functools.lru_cache(maxsize=32)
def _fire_table(exchange: str, minutes: int, decade: int) -> pd.Series:
    """Fire times (UTC, ascending; session close + ``minutes``) -> session, for the sessions of
    ``exchange`` in the 30 years around ``decade``."""
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange_calendars' own pandas deprecation warnings
        warnings.simplefilter("ignore")
        closes = xcals.get_calendar(exchange, start=f"{decade - 10}-01-01", end=f"{decade + 19}-12-31").closes
    return pd.Series(closes.index, index=pd.DatetimeIndex(closes.array) + pd.Timedelta(minutes=minutes))


class SessionTrigger(BaseTrigger):
    """An APScheduler trigger firing ``minutes`` after (negative: before) every session close of
    ``exchange``, early closes included; fire times are given in ``timezone``.

    Stored (pickled) in the job store with the job; the calendar itself is not stored.
    """

    # Pickled under the package's public name, as before the package was split: job stores
    # written by earlier versions keep loading, and a later move inside the package cannot break them.
    __module__ = "research_lib.scheduler"

    def __init__(self, exchange: str, minutes: int, timezone: str):
        self.exchange, self.minutes, self.timezone = exchange, int(minutes), timezone

    def __eq__(self, other: object) -> bool:  # is the stored schedule the configured one?
        return isinstance(other, SessionTrigger) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"SessionTrigger({self.exchange!r}, {self.minutes:+d} min from the close, {self.timezone!r})"

    def _fires(self, when: dt.datetime) -> pd.Series:
        """Fire times (UTC, ascending) -> session, for the sessions around ``when``."""
        return _fire_table(self.exchange, self.minutes, when.astimezone(_UTC).year // 10 * 10)

    def _local(self, stamp: pd.Timestamp) -> dt.datetime:
        return stamp.tz_convert(ZoneInfo(self.timezone)).to_pydatetime()

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        """The first fire time after ``previous_fire_time``, or at or after ``now`` when there is none."""
        start = previous_fire_time + dt.timedelta(microseconds=1) if previous_fire_time else now
        fires = self._fires(start)
        i = fires.index.searchsorted(pd.Timestamp(start).tz_convert(_UTC), side="left")
        return self._local(fires.index[i]) if i < len(fires) else None

    def previous_fire_time(self, now: dt.datetime) -> dt.datetime | None:
        """The last fire time at or before ``now``."""
        fires = self._fires(now)
        i = fires.index.searchsorted(pd.Timestamp(now).tz_convert(_UTC), side="right")
        return self._local(fires.index[i - 1]) if i > 0 else None

    def session_of(self, fire_time: dt.datetime) -> dt.date:
        """The session of ``fire_time`` (of the first fire time at or after it)."""
        fires = self._fires(fire_time)
        i = fires.index.searchsorted(pd.Timestamp(fire_time).tz_convert(_UTC), side="left")
        return fires.iloc[min(i, len(fires) - 1)].date()

    def local_times(self, around: dt.datetime, days: int = 400) -> tuple[set[tuple[int, int]], set[int]]:
        """The (hour, minute) pairs in ``timezone`` and the cron weekdays (0 = Sunday) of the fire
        times within ``days`` of ``around``: what a crontab must cover."""
        fires = self._fires(around)
        window = abs(fires.index - pd.Timestamp(around).tz_convert(_UTC)) <= pd.Timedelta(days=days)
        local = fires.index[window].tz_convert(ZoneInfo(self.timezone))
        return set(zip(local.hour, local.minute)), set(local.day_of_week.map(lambda d: (d + 1) % 7))
