"""Shared indicators for a sweep: each computed once per distinct set of arguments.

A strategy receives ``ind``, an `Indicators` of the sweep's prices, and asks it for what it
needs (``ind.rsi(14)``); every configuration asking for the same indicator with the same
arguments gets the same frame, computed the first time. Every indicator is sessions x symbols
and uses, for session ``t``, closes up to ``t`` only. A window that holds a missing close gives
NaN (no value is made up across a listing gap). A user's own indicator is shared the same way
through `Indicators.memo`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

import numpy as np
import pandas as pd

__all__ = ["Indicators"]


class Indicators:
    """Memoized indicators of one price frame.

    Parameters
    ----------
    prices : the canonical price frame (fields x symbols columns); ``close`` is required.

    Attributes
    ----------
    close : sessions x symbols of closes.
    computed : how many times each indicator was computed, by ``(name, arguments)`` (each 1:
        the memo works).
    """

    def __init__(self, prices: pd.DataFrame):
        self.prices = prices
        self.close = prices["close"]
        self.computed: Counter = Counter()
        self._memo: dict[Hashable, pd.DataFrame] = {}

    def memo(self, name: str, compute: Callable[..., pd.DataFrame], *args: Hashable) -> pd.DataFrame:
        """``compute(*args)`` the first time ``(name, args)`` is asked for, the stored frame after."""
        key = (name, *args)
        if key not in self._memo:
            self.computed[key] += 1
            self._memo[key] = compute(*args)
        return self._memo[key]

    def returns(self) -> pd.DataFrame:
        """Simple daily returns (NaN where this or the previous close is missing)."""
        return self.memo("returns", lambda: self.close.pct_change(fill_method=None))

    def sma(self, window: int) -> pd.DataFrame:
        """Mean close over the last ``window`` sessions."""
        _check_window("window", window)
        return self.memo("sma", lambda w: self.close.rolling(w, min_periods=w).mean(), window)

    def std(self, window: int) -> pd.DataFrame:
        """Population standard deviation (ddof=0, as Bollinger defines it) of the close over ``window`` sessions."""
        _check_window("window", window)
        return self.memo("std", lambda w: self.close.rolling(w, min_periods=w).std(ddof=0), window)

    def rsi(self, window: int) -> pd.DataFrame:
        """Relative strength index, 0-100: ``100 - 100 / (1 + mean gain / mean loss)`` with simple
        means of the close's daily changes over ``window`` sessions (Cutler's form, vectorbt's default)."""
        _check_window("window", window)

        def compute(w: int) -> pd.DataFrame:
            change = self.close.diff()
            gain = change.clip(lower=0).rolling(w, min_periods=w).mean()
            loss = (-change).clip(lower=0).rolling(w, min_periods=w).mean()
            return 100.0 - 100.0 / (1.0 + gain / loss)

        return self.memo("rsi", compute, window)

    def trailing_return(self, lookback: int, skip: int = 0) -> pd.DataFrame:
        """The return from the close ``lookback`` sessions ago to the close ``skip`` sessions ago."""
        _check_window("lookback", lookback)
        if not 0 <= skip < lookback:
            raise ValueError(f"skip must be >= 0 and smaller than lookback ({lookback}) (got {skip}); e.g. skip=0.")
        return self.memo("trailing_return", lambda n, s: self.close.shift(s) / self.close.shift(n) - 1.0,
                         lookback, skip)

    def month_ends(self) -> pd.Series:
        """True on the last session of each month, when a later session shows the month is over."""
        def compute() -> pd.Series:
            months = self.close.index.to_period("M")
            return pd.Series(np.r_[months[1:] != months[:-1], False], index=self.close.index)

        return self.memo("month_ends", compute)


def _check_window(name: str, window) -> None:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"{name} must be a whole number of sessions >= 1 (got {window!r}); e.g. {name}=14.")
