"""The strategies a run can trade, as a table ``{name: Strategy}``: how each one's target
weights are made from the run folder, what it trades on, and which parameters define it.

This table is the one place a strategy's name decides anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from research_lib.config import RunConfig
from research_lib.params import did_you_mean
from research_lib.portfolio import baseline_weights
from research_lib.stages.folder import RunFolder
from research_lib.validation.evidence import analyst_is_claude

__all__ = ["LLM_SIGNAL", "MOMENTUM", "STRATEGIES", "Strategy", "judged_after_cutoff", "rule_weights", "strategy"]

MOMENTUM, LLM_SIGNAL = "momentum_12_1", "llm_signal"


@dataclass(frozen=True)
class Strategy:
    """One row of the table.

    weights : the strategy's target weights (rebalance dates x symbols) for a run folder.
    optimized : made by the portfolio optimizer and risk layer (else a baseline rule).
    alternative : backtested beside the configured strategy when ``needs`` is fresh.
    needs : the artifact it trades on (None: prices only).
    sections : the parameter sections that define it as a trial of the sweep registry.
    on_views : whether, under these parameters, it trades on the analyst's views.
    """

    weights: Callable[[RunFolder], pd.DataFrame]
    optimized: bool = False
    alternative: bool = False
    needs: str | None = None
    sections: tuple[str, ...] = ("strategy",)
    on_views: Callable[[RunConfig], bool] = lambda config: False


def _rule(name: str, scores: Callable[[RunFolder], pd.DataFrame] | None = None) -> Callable[[RunFolder], pd.DataFrame]:
    """The weights of the baseline rule ``name`` with the run's ``strategy`` parameters."""
    def weights(folder: RunFolder) -> pd.DataFrame:
        close = folder.prices["close"]
        close = close[folder.config.tradable(close.columns)]
        strategy = folder.config.strategy.model_copy(update={"name": name})
        return baseline_weights(close, strategy, scores=scores(folder, close.index) if scores else None)
    return weights


def _ml_scores(folder: RunFolder, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    return folder.signals


def _analyst_scores(folder: RunFolder, sessions: pd.DatetimeIndex) -> pd.DataFrame:
    scores = folder.views.pivot(index="date", columns="symbol", values="expected_excess_return")
    return scores.reindex(sessions).ffill(limit=21)  # a view lasts its horizon


def _portfolio_on_views(config: RunConfig) -> bool:
    return config.portfolio.uses_signals and config.portfolio.signal in ("llm", "blend")


STRATEGIES: dict[str, Strategy] = {
    MOMENTUM: Strategy(_rule(MOMENTUM), alternative=True),
    "equal_weight": Strategy(_rule("equal_weight")),
    "ml_signal": Strategy(_rule("ml_signal", _ml_scores), alternative=True, needs="signals",
                          sections=("strategy", "ml", "features")),
    LLM_SIGNAL: Strategy(_rule(LLM_SIGNAL, _analyst_scores), alternative=True, needs="views",
                         sections=("strategy", "llm", "features"), on_views=lambda config: True),
    "portfolio": Strategy(lambda folder: folder.weights, optimized=True,
                          sections=("strategy", "portfolio", "risk", "ml", "llm", "features"),
                          on_views=_portfolio_on_views),
}


def rule_weights(folder: RunFolder, name: str | None = None) -> pd.DataFrame:
    """The target weights of strategy ``name`` (default: the configured one) from its table row."""
    return strategy(name or folder.config.strategy.name).weights(folder)


def strategy(name: str) -> Strategy:
    """The table's row for ``name``; an unknown name is refused with the known ones."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy {name!r} is not in the table; known: {sorted(STRATEGIES)}."
                         f"{did_you_mean(name, STRATEGIES)}")
    return STRATEGIES[name]


def judged_after_cutoff(config: RunConfig, name: str, llm_report: dict | None) -> bool:
    """Whether strategy ``name`` is judged only after the model's knowledge cutoff: it trades on the
    analyst's views and the analyst was Claude (before its cutoff, Claude may remember the market)."""
    row = STRATEGIES.get(name)  # a notebook's own backtest is not in the table: it trades on no views
    return analyst_is_claude(llm_report) and row is not None and row.on_views(config)
