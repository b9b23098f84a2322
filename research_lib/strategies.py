"""Baseline strategies: target weights decided at the close of rebalance dates.

Every function here uses, for date ``t``, only closes up to and including ``t``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.config import StrategyConfig
from research_lib.features import momentum

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


def top_n_equal_weights(scores: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Equal weights on the ``top_n`` highest scores of each row (ties: earlier column).

    A row with fewer valid scores holds all of them; a row with none is all cash (zeros).
    """
    ranks = scores.rank(axis=1, ascending=False, method="first")
    chosen = ranks <= top_n
    counts = chosen.sum(axis=1).replace(0, np.nan)
    return chosen.div(counts, axis=0).fillna(0.0)


def baseline_weights(close: pd.DataFrame, config: StrategyConfig, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """Target weights (rebalance dates x symbols) for the configured strategy.

    ``ml_signal`` and ``llm_signal`` hold the ``top_n`` symbols by ``scores`` (dates x
    symbols: the out-of-sample ML scores, or the analyst's expected excess returns); dates
    without scores hold cash.
    """
    dates = rebalance_dates(close.index, config.rebalance)
    priced = close.notna()  # only symbols with a price on the decision date can be chosen
    if config.name == "equal_weight":
        listed = priced.astype(float)
        weights = listed.div(listed.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    elif config.name in ("ml_signal", "llm_signal"):
        if scores is None:
            raise ValueError(f"strategy {config.name!r} needs its scores (signals_ml.parquet from 03_ml_signals, "
                             "or signals_llm.parquet from 04_claude_signals).")
        weights = top_n_equal_weights(scores.reindex(index=close.index, columns=close.columns).where(priced), config.top_n)
    else:
        weights = top_n_equal_weights(momentum(close, config.lookback_days, config.skip_days).where(priced), config.top_n)
    return weights.loc[dates]
