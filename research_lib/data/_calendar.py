"""Exchange calendars: the dates a price history may have.

Dates are exchange-local session dates. ``calendar`` is an ``exchange_calendars`` code
(``XNYS`` New York, ``XLON`` London, ``XTKS`` Tokyo, ``24/7`` every day, ...); a date that
is not one of its sessions (a weekend, a holiday) is refused. ``None`` checks no calendar.
Whatever the calendar, a date is accepted only once its session has closed (a close is not
known before): with a calendar, today's session after its close (``exchange_calendars``
gives it: 16:00 New York, 13:00 on an early close); with ``None`` or ``24/7``, a day ends at
midnight UTC, so dates up to yesterday (UTC).
"""

from __future__ import annotations

import datetime as dt
import warnings
from functools import lru_cache

import pandas as pd

from research_lib.params import did_you_mean

_SHOWN = 10  # dates listed in a message


def calendar_error(name: str, *, nullable: bool = True) -> str | None:
    """Why ``name`` is not an ``exchange_calendars`` code, or ``None`` if it is one; ``nullable``:
    the setting may also be null (no calendar checked), and the reason says so."""
    import exchange_calendars as xcals

    names = xcals.get_calendar_names(include_aliases=True)
    if name in names:
        return None
    return ("is not an exchange_calendars code; use e.g. XNYS (New York), XLON (London), XTKS (Tokyo), "
            "24/7 (every day)" + (", or null to check no calendar." if nullable else ".")
            + did_you_mean(name, names, fold=str.upper))


def session_problems(dates: pd.DatetimeIndex, calendar: str | None, source: str, now: pd.Timestamp) -> list[str]:
    """Sentences naming the dates of ``dates`` (sorted, unique) whose session has not closed at
    ``now`` (a time-zone-aware time), else those off ``calendar``."""
    local = now.tz_convert(_exchange(calendar).tz if calendar else "UTC")
    unclosed, closing = _unclosed(dates, calendar, local)
    if len(unclosed):
        return [f"Data from {source} has {len(unclosed)} dates whose session has not closed yet (now "
                f"{local:%Y-%m-%d %H:%M} {local.tz}{closing}): {_listed(unclosed)}; a close is known only once its "
                "session has closed: remove those rows, or load the file again after the close."]
    if calendar is None or len(dates) == 0:
        return []
    first_known = _exchange(calendar).bound_min()
    if first_known is not None and dates[0] < first_known:
        return [f"Data from {source} starts on {dates[0]:%Y-%m-%d}, before the first {calendar} session the calendar knows "
                f"({first_known:%Y-%m-%d}); set data.start to {first_known:%Y-%m-%d} or later, or data.calendar: null "
                "to check no calendar."]
    off = dates.difference(_calendar(calendar, dates[0].year, dates[-1].year).sessions)
    if not len(off):
        return []
    return [f"Data from {source} has {len(off)} dates that are not {calendar} sessions (weekends, holidays or other days "
            f"the exchange was closed): {_listed(off)}; remove those rows, or set data.calendar to the exchange these "
            "prices trade on (null: any day, e.g. crypto)."]


def _unclosed(dates: pd.DatetimeIndex, calendar: str | None, now: pd.Timestamp) -> tuple[pd.DatetimeIndex, str]:
    """The dates whose session closes after ``now`` (in the exchange's time zone), and a note of
    today's close when it is one of them: with a calendar, dates after today and today's session
    before its close; without one, dates from today (a day closes at midnight UTC)."""
    today = pd.Timestamp(now.date())
    if calendar is None:
        return dates[dates >= today], ""
    exchange = _calendar(calendar, today.year, today.year)
    if today not in exchange.sessions or exchange.session_close(today) <= now:
        return dates[dates > today], ""
    close = exchange.session_close(today).tz_convert(now.tz)
    return dates[dates >= today], f"; the {today:%Y-%m-%d} session closes at {close:%Y-%m-%d %H:%M}"


@lru_cache(maxsize=8)
def _exchange(name: str):
    """The ``exchange_calendars`` calendar with its default span (for its time zone and bounds)."""
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange_calendars' own pandas deprecation warnings
        warnings.simplefilter("ignore")
        return xcals.get_calendar(name)


@lru_cache(maxsize=32)
def _calendar(name: str, first_year: int, last_year: int):
    """The calendar over whole years (whole years always hold sessions, which exchange_calendars
    requires), within its bounds. Cached: the library keeps one span per calendar."""
    import exchange_calendars as xcals

    exchange = _exchange(name)
    first, last = pd.Timestamp(first_year, 1, 1), pd.Timestamp(last_year, 12, 31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xcals.get_calendar(name, start=max(first, exchange.bound_min() or first),
                                  end=min(last, exchange.bound_max() or last))


def _listed(dates: pd.DatetimeIndex) -> str:
    shown = ", ".join(f"{d:%Y-%m-%d} ({d:%a})" for d in dates[:_SHOWN])
    return shown + (f" and {len(dates) - _SHOWN} more" if len(dates) > _SHOWN else "")


def calendar_sessions(calendar: str | None, start: dt.date, end: dt.date) -> pd.DatetimeIndex:
    """The sessions of ``calendar`` from ``start`` to ``end`` (inclusive); every day for ``None``."""
    if calendar is None:
        return pd.date_range(start, end, freq="D", name="date")
    sessions = _calendar(calendar, start.year, end.year).sessions
    return pd.DatetimeIndex(sessions[(sessions >= pd.Timestamp(start)) & (sessions <= pd.Timestamp(end))],
                            name="date").astype("datetime64[ns]")
