"""Baseline strategies and their parameters: target weights decided at the close of rebalance dates.

Every function here uses, for date ``t``, only closes up to and including ``t``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pydantic import Field, model_validator

from research_lib.features import momentum
from research_lib.params import StrictModel
from research_lib.portfolio._types import RebalanceFrequency, StrategyName

class StrategyConfig(StrictModel):
    """The baseline strategy backtested by 06_validate_strategy."""

    name: StrategyName = "momentum_12_1"
    lookback_days: int = Field(252, ge=2, description="momentum window in sessions")
    skip_days: int = Field(21, ge=0, description="most recent sessions left out of momentum")
    top_n: int = Field(5, ge=1, description="number of symbols held, equally weighted")
    rebalance: RebalanceFrequency = "monthly"

    @model_validator(mode="after")
    def _skip_inside_lookback(self) -> StrategyConfig:
        if self.skip_days >= self.lookback_days:
            raise ValueError(f"skip_days ({self.skip_days}) must be smaller than lookback_days ({self.lookback_days})")
        return self


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


def _equal_weights(close: pd.DataFrame, config: StrategyConfig, scores: pd.DataFrame | None) -> pd.DataFrame:
    listed = close.notna().astype(float)
    return listed.div(listed.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)


def _top_scored(close: pd.DataFrame, config: StrategyConfig, scores: pd.DataFrame | None) -> pd.DataFrame:
    if scores is None:
        raise ValueError(f"strategy {config.name!r} needs its scores (signals_ml.parquet from 03_fit_ml_signals, "
                         "or signals_llm.parquet from 04_ask_claude).")
    priced = close.notna()  # only symbols with a price on the decision date can be chosen
    return top_n_equal_weights(scores.reindex(index=close.index, columns=close.columns).where(priced), config.top_n)


def _momentum(close: pd.DataFrame, config: StrategyConfig, scores: pd.DataFrame | None) -> pd.DataFrame:
    return top_n_equal_weights(momentum(close, config.lookback_days, config.skip_days).where(close.notna()), config.top_n)


# The rule of each baseline (``portfolio`` is built by the optimizer, not by a rule).
_RULES = {"momentum_12_1": _momentum, "equal_weight": _equal_weights, "ml_signal": _top_scored,
          "llm_signal": _top_scored}


def baseline_weights(close: pd.DataFrame, config: StrategyConfig, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """Target weights (rebalance dates x symbols) for the configured strategy.

    ``ml_signal`` and ``llm_signal`` hold the ``top_n`` symbols by ``scores`` (dates x
    symbols: the out-of-sample ML scores, or the analyst's expected excess returns); dates
    without scores hold cash.
    """
    dates = rebalance_dates(close.index, config.rebalance)
    return _RULES.get(config.name, _momentum)(close, config, scores).loc[dates]
