"""Shared indicators for a sweep: each computed once per distinct set of arguments.

A strategy receives ``ind``, an `Indicators` of the sweep's prices, and asks it for what it
needs (``ind.rsi(14)``); every configuration asking for the same indicator with the same
arguments gets the same values, computed the first time. Every indicator is sessions x symbols
and uses, for session ``t``, closes up to ``t`` only. Windows count rows of the price frame
(sessions), not calendar days. A rolling window (`sma`, `std`, `rsi`) that holds a missing close
gives NaN (no value is made up across a listing gap); `trailing_return` compares two closes and
spans a gap between them. A user's own indicator is shared the same way through `Indicators.memo`.

What a strategy gets is its own (shallow, copy-on-write) copy of the stored frame: changing it
changes nothing for the other configurations, and its numpy arrays (``.to_numpy()``) are
read-only. A numpy array stored through `Indicators.memo` is handed out as a read-only view.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable

import numpy as np
import pandas as pd

from research_lib.sweeps._checks import whole_number

__all__ = ["Indicators"]


class Indicators:
    """Memoized indicators of one price frame.

    Parameters
    ----------
    prices : the canonical price frame (fields x symbols columns); ``close`` is required.

    Attributes
    ----------
    computed : how many times each indicator was computed, by ``(name, arguments)`` (each 1:
        the memo works).
    """

    def __init__(self, prices: pd.DataFrame):
        self._prices = prices
        self._close = prices["close"]
        self.computed: Counter = Counter()
        self._memo: dict[Hashable, object] = {}

    @property
    def prices(self) -> pd.DataFrame:
        """The price frame (a copy of it: see the module docstring)."""
        return self._prices.copy(deep=False)

    @property
    def close(self) -> pd.DataFrame:
        """Sessions x symbols of closes (a copy of them: see the module docstring)."""
        return self._close.copy(deep=False)

    def memo(self, name: str, compute: Callable[..., pd.DataFrame], *args: Hashable) -> pd.DataFrame:
        """``compute(*args)`` the first time ``(name, args)`` is asked for, the stored value after
        (see the module docstring: a caller that changes it changes only its own copy)."""
        key = (name, *args)
        if key not in self._memo:
            self.computed[key] += 1
            self._memo[key] = compute(*args)
        return _handed_out(self._memo[key])

    def returns(self) -> pd.DataFrame:
        """Simple daily returns (NaN where this or the previous close is missing)."""
        return self.memo("returns", lambda: self._close.pct_change(fill_method=None))

    def sma(self, window: int) -> pd.DataFrame:
        """Mean close over the last ``window`` sessions."""
        _check_window("window", window)
        return self.memo("sma", lambda w: self._close.rolling(w, min_periods=w).mean(), window)

    def std(self, window: int) -> pd.DataFrame:
        """Population standard deviation (ddof=0, as Bollinger defines it) of the close over ``window`` sessions."""
        _check_window("window", window)
        return self.memo("std", lambda w: self._close.rolling(w, min_periods=w).std(ddof=0), window)

    def rsi(self, window: int) -> pd.DataFrame:
        """Relative strength index, 0-100: ``100 - 100 / (1 + mean gain / mean loss)`` with simple
        means of the close's daily changes over ``window`` sessions (Cutler's form, vectorbt's default).

        Not Wilder's: the feature ``rsi_14`` (`research_lib.features`) averages with Wilder's
        exponential smoothing (alpha ``1 / window``), so the two differ for the same window.
        """
        _check_window("window", window)

        def compute(w: int) -> pd.DataFrame:
            change = self._close.diff()
            gain = change.clip(lower=0).rolling(w, min_periods=w).mean()
            loss = (-change).clip(lower=0).rolling(w, min_periods=w).mean()
            return 100.0 - 100.0 / (1.0 + gain / loss)

        return self.memo("rsi", compute, window)

    def trailing_return(self, lookback: int, skip: int = 0) -> pd.DataFrame:
        """The return from the close ``lookback`` sessions ago to the close ``skip`` sessions ago.

        Sessions are rows: a missing close between the two does not stop it (the return spans the
        gap, e.g. a suspension), a missing close at either end gives NaN.
        """
        _check_window("lookback", lookback)
        if not 0 <= whole_number("skip", skip, minimum=0, unit=" of sessions", example=0) < lookback:
            raise ValueError(f"skip must be >= 0 and smaller than lookback ({lookback}) (got {skip}); e.g. skip=0.")
        return self.memo("trailing_return", lambda n, s: self._close.shift(s) / self._close.shift(n) - 1.0,
                         lookback, skip)

    def month_ends(self) -> pd.Series:
        """True on the last session of each month in the price frame (the month's last row, which
        is not its last calendar or exchange day when sessions are missing), once a later session
        shows the month is over: the frame's last month is never marked (a Series by session)."""
        def compute() -> pd.Series:
            months = self._close.index.to_period("M")
            return pd.Series(np.r_[months[1:] != months[:-1], False], index=self._close.index)

        return self.memo("month_ends", compute)


def _handed_out(value):
    """A caller's own copy of a stored value: shallow and copy-on-write (pandas), a read-only view (numpy)."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return value.copy(deep=False)
    if isinstance(value, np.ndarray):
        value = value.view()
        value.flags.writeable = False
    return value


def _check_window(name: str, window) -> None:
    whole_number(name, window, minimum=1, unit=" of sessions", example=14)
