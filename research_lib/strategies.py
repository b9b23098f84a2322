"""Baseline strategies: target weights decided at the close of rebalance dates.

Every function here uses, for date ``t``, only closes up to and including ``t``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.config import StrategyConfig

_PERIOD = {"monthly": "M", "weekly": "W"}


def rebalance_dates(sessions: pd.DatetimeIndex, frequency: str) -> pd.DatetimeIndex:
    """The last session of each month (or week) present in ``sessions``.

    The last period is included only if it is complete as far as ``sessions`` can tell,
    i.e. a later session exists; so a date is never picked because the data ends there.
    """
    if frequency not in _PERIOD:
        raise ValueError(f"unknown rebalance frequency {frequency!r}; valid: {sorted(_PERIOD)}")
    sessions = pd.DatetimeIndex(sessions)
    periods = sessions.to_period(_PERIOD[frequency])
    is_last = np.r_[periods[1:] != periods[:-1], False]
    return sessions[is_last]


def momentum_scores(close: pd.DataFrame, lookback_days: int = 252, skip_days: int = 21) -> pd.DataFrame:
    """12-1 style momentum: the return from ``t - lookback_days`` to ``t - skip_days``.

    NaN until a symbol has ``lookback_days`` sessions of history.
    """
    return close.shift(skip_days) / close.shift(lookback_days) - 1.0


def top_n_equal_weights(scores: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Equal weights on the ``top_n`` highest scores of each row (ties: earlier column).

    A row with fewer valid scores holds all of them; a row with none is all cash (zeros).
    """
    ranks = scores.rank(axis=1, ascending=False, method="first")
    chosen = ranks <= top_n
    counts = chosen.sum(axis=1).replace(0, np.nan)
    return chosen.div(counts, axis=0).fillna(0.0)


def baseline_weights(close: pd.DataFrame, config: StrategyConfig) -> pd.DataFrame:
    """Target weights (rebalance dates x symbols) for the configured baseline strategy."""
    dates = rebalance_dates(close.index, config.rebalance)
    if config.name == "equal_weight":
        listed = close.notna().astype(float)
        weights = listed.div(listed.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    else:
        scores = momentum_scores(close, config.lookback_days, config.skip_days)
        weights = top_n_equal_weights(scores, config.top_n)
    return weights.loc[dates]
