"""Five strategy families, written as a user would write their own (no private fast path).

Each is decided at the close of ``t`` from closes up to ``t``; the engine trades it
``execution_lag_sessions`` later. Sweep one with `research_lib.sweeps.run_sweep`, e.g.
``run_sweep(families.rsi_thresholds, {"window": [7, 14], "lower": [25, 30], "upper": [70, 75]}, prices)``.

- `ma_crossover` (fast, slow): long while the fast mean close is above the slow one, flat otherwise.
- `rsi_thresholds` (window, lower, upper): enter when the RSI falls below ``lower``, exit above ``upper``.
- `bollinger_bands` (window, k): enter when the close falls below the mean less ``k`` standard
  deviations, exit when it is back at the mean or above.
- `time_series_momentum` (lookback, holding, short): every ``holding`` sessions, long (or, with
  ``short``, short) each symbol by the sign of its trailing ``lookback`` return; flat otherwise.
- `cross_sectional_momentum` (lookback, skip, top_n): at each month end, equal weights on the
  ``top_n`` symbols with the highest return from ``lookback`` to ``skip`` sessions ago (one portfolio).

The first four are per-symbol books (each symbol its own book), the last a portfolio book.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.sweeps.engine import entry_exit, target_weights
from research_lib.sweeps.indicators import Indicators

__all__ = ["bollinger_bands", "cross_sectional_momentum", "ma_crossover", "rsi_thresholds", "time_series_momentum"]


@entry_exit
def ma_crossover(ind: Indicators, fast: int, slow: int):
    """Long while the ``fast``-session mean close is above the ``slow``-session mean (a mean over a
    window with a missing close is undefined: flat)."""
    if not 1 <= fast < slow:
        raise ValueError(f"fast ({fast}) and slow ({slow}) must be whole numbers of sessions with 1 <= fast < slow; "
                         "e.g. fast=10, slow=50. To sweep the pairs of a product grid that qualify, pass them as a list: "
                         "[{'fast': f, 'slow': s} for f in fasts for s in slows if f < s].")
    long = ind.sma(fast) > ind.sma(slow)
    return long, ~long


@entry_exit
def rsi_thresholds(ind: Indicators, window: int, lower: float, upper: float):
    """Enter when the ``window``-session RSI is below ``lower``, exit when it is above ``upper``."""
    rsi = ind.rsi(window)
    return rsi < lower, rsi > upper


@entry_exit
def bollinger_bands(ind: Indicators, window: int, k: float):
    """Mean reversion: enter below the lower band (mean - ``k`` population standard deviations of
    the last ``window`` closes), exit at the mean or above."""
    mean = ind.sma(window)
    return ind.close < mean - k * ind.std(window), ind.close >= mean


@target_weights(book="per_symbol")
def time_series_momentum(ind: Indicators, lookback: int, holding: int, short: bool = False):
    """Every ``holding`` sessions (from the first session), each symbol long if its return over the
    last ``lookback`` sessions is positive, else flat (``short``: short); no return known: flat."""
    if isinstance(holding, bool) or not isinstance(holding, (int, np.integer)) or holding < 1:
        raise ValueError(f"holding must be a whole number of sessions >= 1 (got {holding!r}); e.g. holding=21.")
    trailing = ind.trailing_return(lookback)
    down = -1.0 if short else 0.0
    weights = np.where(trailing > 0, 1.0, np.where(trailing <= 0, down, 0.0))
    decides = np.arange(len(trailing)) % holding == 0
    return pd.DataFrame(np.where(decides[:, None], weights, np.nan), index=trailing.index, columns=trailing.columns)


@target_weights
def cross_sectional_momentum(ind: Indicators, lookback: int, skip: int, top_n: int):
    """At each month end, equal weights on the ``top_n`` symbols priced that session with the
    highest return from ``lookback`` to ``skip`` sessions ago (ties: the earlier column; fewer
    scores: all of them; none: cash)."""
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ValueError(f"top_n must be a whole number >= 1 (got {top_n!r}); e.g. top_n=5.")
    scores = ind.trailing_return(lookback, skip).where(ind.close.notna())
    chosen = scores.rank(axis=1, ascending=False, method="first") <= top_n
    weights = chosen.div(chosen.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    weights.loc[~ind.month_ends().to_numpy()] = np.nan  # no decision between month ends: holdings drift
    return weights
