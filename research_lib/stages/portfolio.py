"""Stage 05 (``05_build_portfolio``): the configured strategy's target weights and how they were made.

For strategy ``portfolio``: signals -> optimizer -> volatility target -> pre-trade risk checks
(`research_lib.portfolio.construct_portfolio`) -> drawdown circuit breaker; any other
strategy's weights are its baseline rule's (`research_lib.stages.strategies`).
"""

from __future__ import annotations

import pandas as pd

from research_lib._io import write_parquet
from research_lib.backtest import run_backtest
from research_lib.features import momentum
from research_lib.portfolio import rebalance_dates
from research_lib.risk import drawdown_circuit_breaker, follow_multiplier
from research_lib.stages.folder import RunFolder, produces
from research_lib.stages.strategies import STRATEGIES

__all__ = ["OPTIMIZER_WEIGHTS_FILE", "RISK_EVENTS_FILE", "build_weights", "make_weights", "portfolio_signals",
           "risk_event_tables", "risk_layer_summary"]

OPTIMIZER_WEIGHTS_FILE = "weights_optimizer.parquet"
RISK_EVENTS_FILE = "risk_events.parquet"


def portfolio_signals(folder: RunFolder, close: pd.DataFrame) -> tuple[dict, dict]:
    """The signal sources ``portfolio.signal`` names, and their Idzorek confidences where they
    state one: the analyst's probability ``p`` that a direction is right maps to ``2p - 1``
    (a coin flip is no confidence at all); ML and momentum get ``portfolio.model_confidence``."""
    config = folder.config
    p = config.portfolio
    if not p.uses_signals:
        return {}, {}
    wanted = ("ml", "llm") if p.signal == "blend" else (p.signal,)
    scores, confidences = {}, {}
    if "ml" in wanted:
        scores["ml"] = folder.signals
    if "llm" in wanted:
        views = folder.views
        scores["llm"] = views.pivot(index="date", columns="symbol", values="expected_excess_return")
        confidences["llm"] = (2.0 * views.pivot(index="date", columns="symbol", values="confidence") - 1.0).clip(0.0, 1.0)
    if "momentum" in wanted:
        scores["momentum"] = momentum(close, config.strategy.lookback_days, config.strategy.skip_days)
    return scores, confidences


def build_weights(folder: RunFolder) -> dict:
    """Target weights of the configured strategy, saved as ``weights.parquet`` with how they were made.

    The month-end optimizations show a progress bar (`research_lib.progress`).

    An optimized strategy also saves the optimizer's weights, the risk layer's clamps and
    ``portfolio_report.json``. Returns ``{"weights", "report", "construction"}``
    (``construction`` None for a baseline).
    """
    name = folder.config.strategy.name
    construction, report = None, {"strategy": name}
    if not STRATEGIES[name].optimized:
        weights = STRATEGIES[name].weights(folder)
        report["construction"] = "baseline rule (params: strategy)"
    else:
        weights, construction, report = _construct(folder)
        write_parquet(construction.optimizer_weights, folder.path(OPTIMIZER_WEIGHTS_FILE))
        write_parquet(construction.risk_events.astype({"date": "datetime64[ns]"}), folder.path(RISK_EVENTS_FILE))
    folder.write_report("portfolio", report)
    folder.save("weights", weights)
    return {"weights": weights, "report": report, "construction": construction}


@produces("weights")
def make_weights(folder: RunFolder) -> pd.DataFrame:
    return build_weights(folder)["weights"]


def _construct(folder: RunFolder) -> tuple:
    from research_lib.portfolio import construct_portfolio  # PyPortfolioOpt and cvxpy: only when optimizing

    config, prices = folder.config, folder.prices
    p = config.portfolio
    tradable = config.tradable(prices["close"].columns)
    close = prices["close"][tradable]
    volume = prices["volume"].reindex(columns=tradable) if "volume" in prices.columns.get_level_values(0) else None
    scores, confidences = portfolio_signals(folder, close)
    decisions = rebalance_dates(close.index, p.rebalance)
    construction = construct_portfolio(close, decisions, p, config.risk,
                                       scores=scores, confidences=confidences, volume=volume,
                                       benchmark=prices["close"][config.data.benchmark],
                                       sessions_per_year=config.sessions_per_year)
    weights = construction.weights
    trips = None
    if p.circuit_breaker is not None and weights.to_numpy().any():
        unmanaged = run_backtest(weights, prices, **config.backtest_model())
        multiplier = drawdown_circuit_breaker(unmanaged.returns, p.circuit_breaker.max_drawdown,
                                              p.circuit_breaker.cooldown_days)
        trips = int(((multiplier == 0) & (multiplier.shift(1, fill_value=1.0) == 1)).sum())
        weights = follow_multiplier(weights, multiplier)
    events = construction.risk_events
    has_volume = volume is not None and volume.notna().any().any()
    report = {"strategy": "portfolio", "signal": p.signal if p.uses_signals else None,
              "signal_sources": sorted(scores),
              "analyst": (folder.report("llm") or {}).get("analyst") if "llm" in scores else None,
              "method": p.method, "returns_model": p.returns_model if p.method in ("max_sharpe", "efficient_risk", "efficient_return") else None,
              "risk_model": p.risk_model, "rebalances": len(construction.weights),
              "cash_dates": int(construction.notes["note"].str.startswith("cash").sum()),
              "previous_targets_kept": int(construction.notes["note"].str.startswith("previous").sum()),
              "risk_clamped": int((events["action"] == "clamped").sum()),
              "risk_rejected": int((events["action"] == "rejected").sum()),
              "adv_checked": bool(has_volume), "capital": p.capital,
              "vol_target": p.vol_target.model_dump() if p.vol_target else None,
              "circuit_breaker_trips": trips, "left_out": _left_out(close, decisions, p.lookback_days)}
    return weights, construction, report


def _left_out(close: pd.DataFrame, decisions: pd.DatetimeIndex, lookback: int) -> dict:
    """(decision date, symbol) pairs the optimizer could not hold: no price at the date (not listed yet,
    or delisted), or a price at the date but not over the whole lookback (listed too recently)."""
    priced_now = close.reindex(decisions).notna()
    priced_throughout = close.notna().astype(float).rolling(lookback + 1).min().reindex(decisions).eq(1.0)
    return {"no_price": int((~priced_now).to_numpy().sum()),
            "short_history": int((priced_now & ~priced_throughout).to_numpy().sum())}


def risk_layer_summary(built: dict) -> str:
    """One line on what the pre-trade checks did to the rebalances of `build_weights`."""
    if built["construction"] is None:
        return f"strategy {built['report']['strategy']!r} is a baseline rule: its weights do not go through the risk layer"
    events = built["construction"].risk_events
    counts = events["action"].value_counts()
    if events.empty:
        return "every order fit the limits: nothing clamped or rejected"
    summary = f"{counts.get('clamped', 0)} trades clamped, {counts.get('rejected', 0)} rejected"
    if counts.get("accepted", 0):  # position-reducing trades that left net exposure beyond its limit
        summary += f", {counts['accepted']} position-reducing trades accepted beyond the net limit"
    return summary


def risk_event_tables(built: dict, last: int = 10) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The risk layer's events of `build_weights` by limit (counts per action) and the ``last``
    ones, or None when there are none (a notebook then shows only `risk_layer_summary`'s line)."""
    events = built["construction"].risk_events if built["construction"] is not None else None
    if events is None or events.empty:
        return None
    by_limit = events.groupby([events["reason"].str.split(":").str[0].rename("limit"), "action"]).size()
    return by_limit.unstack(fill_value=0), events.tail(last)
