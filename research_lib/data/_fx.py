"""Currency conversion, point in time: prices or returns in one currency expressed in another.

An FX rate is a daily close on the forex calendar (``24/5``: a UTC weekday, known at the next
midnight UTC), e.g. Yahoo's ``EURUSD=X``: US dollars per euro. A value dated session ``t`` of
another calendar is converted at the last rate published by ``t``'s close
(`align_point_in_time`): a New York close (21:00 UTC) uses the previous UTC day's rate, never the
rate of a day that has not closed yet. A session before the first published rate has no
conversion and is NaN. No broker here trades forex: rates are research inputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.data._frame import canonical_frame
from research_lib.data._markets import MARKET_CALENDARS, align_point_in_time

__all__ = ["convert_prices", "convert_returns", "rate_on_sessions"]


def rate_on_sessions(rate: pd.Series, sessions: pd.DatetimeIndex, calendar: str | None,
                     rate_calendar: str | None = MARKET_CALENDARS["forex"]) -> pd.Series:
    """``rate`` (daily closes on ``rate_calendar``) as known at the close of each of ``sessions``
    (on ``calendar``): the last rate published by then; NaN before the first one.

    Raises
    ------
    ValueError
        if a rate is not a finite number > 0 (a rate of 0 or below converts nothing), naming the
        first such date and value.
    """
    rate = pd.Series(rate, dtype=float).dropna()
    bad = rate[~(np.isfinite(rate) & (rate > 0))]
    if len(bad):
        raise ValueError(f"FX rate {rate.name or ''} on {bad.index[0]:%Y-%m-%d} is {float(bad.iloc[0])!r}; a rate must be a "
                         "finite number > 0 (units of the target currency per unit of the source): fix or drop it.")
    frame = canonical_frame({"close": rate.rename("rate").to_frame()})
    return align_point_in_time([(frame, rate_calendar)], sessions, calendar)["close"]["rate"]


def convert_prices(prices: pd.DataFrame, rate: pd.Series, calendar: str | None,
                   rate_calendar: str | None = MARKET_CALENDARS["forex"]) -> pd.DataFrame:
    """A canonical frame's prices times the rate known at each session's close (volumes in units
    are kept): prices in the rate's target currency, e.g. euro prices x ``EURUSD=X`` in dollars."""
    known = rate_on_sessions(rate, prices.index, calendar, rate_calendar).to_numpy()[:, None]
    fields = {field: prices[field] * known if field != "volume" else prices[field]
              for field in prices.columns.get_level_values(0).unique()}
    return canonical_frame(fields)


def convert_returns(returns: pd.Series, rate: pd.Series, calendar: str | None,
                    rate_calendar: str | None = MARKET_CALENDARS["forex"]) -> pd.Series:
    """Daily simple returns in the source currency as returns in the target currency:
    ``(1 + r[t]) * x[t] / x[t-1] - 1`` with ``x[t]`` the rate known at session ``t``'s close;
    NaN where either rate is not known yet."""
    known = rate_on_sessions(rate, returns.index, calendar, rate_calendar)
    return ((1.0 + returns) * known / known.shift(1) - 1.0).rename(returns.name)
