"""Checks of a sweep's inputs that run before any configuration: the price frame and whole-number
arguments (the backtest model's numbers are checked by run_backtest itself). Each error names
the argument, shows the value and says the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd


def shown(value) -> str:
    """``value`` for a message: a numpy scalar as the Python number it holds (0, not np.int64(0))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def whole_number(name: str, value, *, minimum: int, unit: str = "", example: int) -> int:
    """``value`` if it is a whole number (an int, not a bool or a float) >= ``minimum``, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number{unit} >= {minimum} (got {shown(value)}); "
                         f"e.g. {name}={example}.")
    return int(value)


def check_prices(prices: pd.DataFrame) -> None:
    """Refuse a price frame the engine would misread: sessions that are not dates, repeated or out
    of order, and closes that are not positive finite numbers (a missing close is NaN)."""
    close = prices["close"]
    dates = close.index
    if not isinstance(dates, pd.DatetimeIndex):
        raise ValueError(f"prices are indexed by a {type(dates).__name__}, not by session dates; index them by "
                         "a DatetimeIndex (e.g. prices.set_index(pd.to_datetime(dates))).")
    if dates.hasnans:
        raise ValueError(f"prices have a row without a date (NaT) at row {int(np.flatnonzero(dates.isna())[0])}; "
                         "drop it (e.g. prices[prices.index.notna()]).")
    steps = np.diff(dates.asi8)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        if steps[row - 1] == 0:
            raise ValueError(f"prices have two rows dated {dates[row]:%Y-%m-%d}; keep one row per session "
                             "(e.g. prices[~prices.index.duplicated(keep='last')]).")
        raise ValueError(f"prices' dates are out of order: {dates[row]:%Y-%m-%d} comes after "
                         f"{dates[row - 1]:%Y-%m-%d}; sort them (prices.sort_index()).")
    values = close.to_numpy(dtype=float)
    bad = ~np.isnan(values) & ~((values > 0) & np.isfinite(values))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(f"prices['close'] of {close.columns[column]} on {dates[row]:%Y-%m-%d} is "
                         f"{shown(values[row, column])}; a close must be a finite number > 0: fix the data, or mark "
                         "that session's price missing (NaN).")
