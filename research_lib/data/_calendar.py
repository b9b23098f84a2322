"""Exchange calendars: the dates a price history may have.

Dates are exchange-local session dates. ``calendar`` is an ``exchange_calendars`` code
(``XNYS`` New York, ``XLON`` London, ``XTKS`` Tokyo, ``24/7`` every day, ...); a date that
is not one of its sessions (a weekend, a holiday) is refused. ``None`` checks no calendar.
A date after today (in the exchange's time zone; UTC without a calendar) is refused
whatever the calendar: no price is known for a session that has not happened yet.
"""

from __future__ import annotations

import datetime as dt
import difflib
import warnings
from functools import lru_cache

import pandas as pd

_SHOWN = 10  # dates listed in a message


def calendar_error(name: str) -> str | None:
    """Why ``name`` is not an ``exchange_calendars`` code, or ``None`` if it is one."""
    import exchange_calendars as xcals

    names = xcals.get_calendar_names(include_aliases=True)
    if name in names:
        return None
    hint = difflib.get_close_matches(str(name).upper(), names, n=1)
    return ("is not an exchange_calendars code; use e.g. XNYS (New York), XLON (London), XTKS (Tokyo), "
            "24/7 (every day), or null to check no calendar" + (f". Did you mean {hint[0]!r}?" if hint else ""))


def today_on(calendar: str | None) -> dt.date:
    """Today's date where ``calendar``'s exchange is (UTC when ``None``)."""
    return pd.Timestamp.now(tz=_exchange(calendar).tz if calendar else "UTC").date()


def session_problems(dates: pd.DatetimeIndex, calendar: str | None, source: str, today: dt.date) -> list[str]:
    """Sentences naming the dates of ``dates`` (sorted, unique) after ``today`` or off ``calendar``."""
    future = dates[dates > pd.Timestamp(today)]
    if len(future):
        return [f"Data from {source} has {len(future)} dates after today ({today}): {_listed(future)}; "
                "a price cannot be known before its session: remove those rows."]
    if calendar is None or len(dates) == 0:
        return []
    first_known = _exchange(calendar).bound_min()
    if first_known is not None and dates[0] < first_known:
        return [f"Data from {source} starts on {dates[0]:%Y-%m-%d}, before the first {calendar} session the calendar knows "
                f"({first_known:%Y-%m-%d}); set data.start to {first_known:%Y-%m-%d} or later, or data.calendar: null "
                "to check no calendar."]
    off = dates.difference(_sessions(calendar, dates[0].year, dates[-1].year))
    if not len(off):
        return []
    return [f"Data from {source} has {len(off)} dates that are not {calendar} sessions (weekends, holidays or other days "
            f"the exchange was closed): {_listed(off)}; remove those rows, or set data.calendar to the exchange these "
            "prices trade on (null: any day, e.g. crypto)."]


@lru_cache(maxsize=8)
def _exchange(name: str):
    """The ``exchange_calendars`` calendar with its default span (for its time zone and bounds)."""
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange_calendars' own pandas deprecation warnings
        warnings.simplefilter("ignore")
        return xcals.get_calendar(name)


@lru_cache(maxsize=32)
def _sessions(name: str, first_year: int, last_year: int) -> pd.DatetimeIndex:
    """The sessions of whole years (whole years always hold sessions, which exchange_calendars
    requires), within the calendar's bounds. Cached: the library keeps one span per calendar."""
    import exchange_calendars as xcals

    exchange = _exchange(name)
    first, last = pd.Timestamp(first_year, 1, 1), pd.Timestamp(last_year, 12, 31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xcals.get_calendar(name, start=max(first, exchange.bound_min() or first),
                                  end=min(last, exchange.bound_max() or last)).sessions


def _listed(dates: pd.DatetimeIndex) -> str:
    shown = ", ".join(f"{d:%Y-%m-%d} ({d:%a})" for d in dates[:_SHOWN])
    return shown + (f" and {len(dates) - _SHOWN} more" if len(dates) > _SHOWN else "")
