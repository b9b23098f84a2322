"""Weekly and monthly features computed from daily closes, without peeking.

On a day ``t`` inside week (or month) ``P``, only periods that ended before ``P`` began are
used: the close of each completed period is the last close observed in it, and the
current, unfinished period is ignored. So nothing later in ``t``'s own period can leak in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FREQUENCIES = {"weekly": "W", "monthly": "M"}
PERIODS_PER_YEAR = {"weekly": 52, "monthly": 12}


def _completed_period_closes(close: pd.DataFrame, frequency: str) -> tuple[pd.DataFrame, pd.PeriodIndex]:
    if frequency not in FREQUENCIES:
        raise ValueError(f"unknown frequency {frequency!r}; valid: {sorted(FREQUENCIES)}")
    periods = pd.DatetimeIndex(close.index).to_period(FREQUENCIES[frequency])
    ends = close.groupby(periods).last()
    return ends, periods


def _as_of_previous_period(values: pd.DataFrame, periods: pd.PeriodIndex, index: pd.Index) -> pd.DataFrame:
    """Give each day the value of the period before its own."""
    shifted = values.shift(1)
    out = shifted.reindex(periods)
    out.index = index
    return out


def period_return(close: pd.DataFrame, frequency: str, periods: int) -> pd.DataFrame:
    """Return over the last ``periods`` completed weeks or months."""
    ends, day_periods = _completed_period_closes(close, frequency)
    return _as_of_previous_period(ends / ends.shift(periods) - 1.0, day_periods, close.index)


def period_volatility(close: pd.DataFrame, frequency: str, periods: int) -> pd.DataFrame:
    """Annualized volatility of the last ``periods`` completed weekly or monthly log returns."""
    ends, day_periods = _completed_period_closes(close, frequency)
    vol = np.log(ends).diff().rolling(periods, min_periods=periods).std() * np.sqrt(PERIODS_PER_YEAR[frequency])
    return _as_of_previous_period(vol, day_periods, close.index)
