"""Stage 06, first half (``06_validate_strategy``): backtests of the configured strategy and its
alternatives, ``metrics.json``'s numbers, and the tearsheet's title."""

from __future__ import annotations

import pandas as pd

from research_lib.backtest import BacktestResult, NoPosition, run_backtest
from research_lib.config import RunConfig
from research_lib.portfolio import baseline_weights
from research_lib.stages.folder import RunFolder
from research_lib.stages.strategies import LLM_SIGNAL, MOMENTUM, STRATEGIES
from research_lib.units import format_usd
from research_lib.validation.metrics import backtest_metrics, headline_metrics

__all__ = ["SWEEP_LOOKBACKS", "SWEEP_TOP_N", "backtest_strategies", "candidate_weights", "cost_stress", "run_trials",
           "tearsheet_title", "validation_metrics"]

# The baseline family swept by every run, so the gate's overfitting statistics always have
# alternatives to compare the headline strategy with (all recorded in the sweep registry).
SWEEP_LOOKBACKS = (126, 252, 378)
SWEEP_TOP_N = (3, 5, 8)


def candidate_weights(folder: RunFolder) -> dict[str, pd.DataFrame]:
    """The configured strategy's ``weights.parquet`` first, then the alternatives the run has: the
    momentum baseline, and the top-n ML and LLM signal rules when their signals are fresh.
    Made once per folder: the cost stress test backtests these same weights again."""
    def build() -> dict[str, pd.DataFrame]:
        weights = {folder.config.strategy.name: folder.weights}
        for name, strategy in STRATEGIES.items():
            if strategy.alternative and name not in weights and (strategy.needs is None or folder.is_fresh(strategy.needs)):
                weights[name] = strategy.weights(folder)
        return weights
    return folder.memo("candidate_weights", build)


def backtest_strategies(folder: RunFolder) -> dict[str, BacktestResult]:
    """Backtest every candidate's weights (`candidate_weights`), the configured strategy first."""
    prices, model = folder.prices, folder.config.backtest_model()
    return {name: run_backtest(w, prices, **model) for name, w in candidate_weights(folder).items()}


def validation_metrics(folder: RunFolder, results: dict[str, BacktestResult]) -> dict:
    """metrics.json: the configured strategy's numbers and its benchmark's, plus any alternative."""
    config = folder.config
    benchmark = folder.prices["close"][config.data.benchmark].pct_change(fill_method=None)
    main, *others = results
    year = config.sessions_per_year
    metrics = {"strategy_name": main,  # annualized over `year` sessions, as validation.json records
               **backtest_metrics(**_parts(results[main]), benchmark=benchmark, periods_per_year=year)}
    metrics["alternatives"] = {name: backtest_metrics(**_parts(results[name]), benchmark=benchmark,
                                                      periods_per_year=year)["strategy"] for name in others}
    events = results[main].events
    if len(events):  # delistings met (none in the bundled history): counted, and the largest named
        largest = events.loc[events["weight"].abs().sort_values(ascending=False, kind="stable").index[:5]]
        metrics["delisting_events"] = {
            "counts": {str(k): int(v) for k, v in events["event"].value_counts().sort_index().items()},
            "under_1e-6_of_nav": int((events["weight"].abs() < 1e-6).sum()),  # an optimizer's rounding dust
            "largest": [{"date": f"{e.date:%Y-%m-%d}", "symbol": str(e.symbol), "event": str(e.event),
                         "weight": float(f"{e.weight:.4g}")} for e in largest.itertuples()]}
    if LLM_SIGNAL in results:
        metrics["llm_signal_by_cutoff"] = _split_at_cutoff(results[LLM_SIGNAL].returns, config)
    if STRATEGIES[main].optimized and STRATEGIES[main].on_views(config):
        metrics["strategy_by_cutoff"] = _split_at_cutoff(results[main].returns, config)  # it trades on the views too
    return metrics


def _split_at_cutoff(returns: pd.Series, config: RunConfig) -> dict:
    """The LLM strategy's numbers before and after the model's knowledge cutoff: only the
    part after it can show skill rather than memory."""
    cutoff = pd.Timestamp(config.llm.cutoff)
    parts = {"before_cutoff": returns[returns.index <= cutoff], "after_cutoff": returns[returns.index > cutoff]}
    out = {name: (headline_metrics(part, config.sessions_per_year) if len(part) >= 21 else None)
           for name, part in parts.items()}
    return {"knowledge_cutoff": str(cutoff.date()), **out}


def _parts(result: BacktestResult) -> dict:
    return {"returns": result.returns, "turnover": result.turnover, "costs": result.costs}


def tearsheet_title(config: RunConfig, llm_report: dict | None, strategy: str) -> str:
    """The tearsheet's title: the headline strategy (metrics.json's ``strategy_name``) and the
    scenario, the LLM analyst and its cost when the run had one, after the warning of a synthetic
    market when the prices were generated."""
    market = config.data.market_label()
    headline = f"{config.report.title} | {strategy} ({config.scenario})"
    return (f"{market} | " if market else "") + headline + _analyst_title(llm_report)


def _analyst_title(llm_report: dict | None) -> str:
    if not llm_report or "analyst" not in llm_report:
        return " | no LLM analyst in this run"
    r = llm_report
    per_signal = f"{format_usd(r['usd_per_signal'])} per signal" if r.get("views") else "no views"
    return (f" | analyst: {r['analyst']}; tokens {r['input_tokens']:,} in, {r['output_tokens']:,} out, "
            f"{r['cache_read_tokens']:,} cache read, {r['cache_write_tokens']:,} cache write; {format_usd(r['cost_usd'])} "
            f"({per_signal})")


def run_trials(folder: RunFolder, results: dict[str, BacktestResult]) -> dict:
    """Every configuration this run backtested, ``name -> (params, daily returns)``: the
    backtested strategies plus a small sweep of the momentum baseline."""
    config, prices = folder.config, folder.prices
    dumped = config.model_dump(mode="json")
    common = {"data": dumped["data"], "backtest": dumped["backtest"]}
    trials = {}
    for name, result in results.items():  # a backtest a notebook added is a trial of its strategy section
        params = {s: dumped[s] for s in (STRATEGIES[name].sections if name in STRATEGIES else ("strategy",))}
        params["strategy"] = {**params["strategy"], "name": name}
        trials[name] = ({**common, **params}, result.returns)
    close = prices["close"][config.tradable(prices["close"].columns)]
    for lookback in SWEEP_LOOKBACKS:
        for top_n in SWEEP_TOP_N:
            strategy = config.strategy.model_copy(update={"name": MOMENTUM, "lookback_days": lookback, "top_n": top_n})
            name = f"momentum_{lookback}d_top{top_n}"
            if name in trials or (lookback == config.strategy.lookback_days and top_n == config.strategy.top_n
                                  and MOMENTUM in trials):
                continue
            try:
                result = run_backtest(baseline_weights(close, strategy), prices, **config.backtest_model())
            except NoPosition:  # e.g. a lookback longer than the history: never trades, not a trial
                continue
            trials[name] = ({**common, "strategy": strategy.model_dump(mode="json")}, result.returns)
    return trials


def cost_stress(folder: RunFolder, results: dict[str, BacktestResult], main: str, sessions: pd.DatetimeIndex,
                gate_multiple: float) -> dict[str, dict]:
    """Strategy ``main``'s headline numbers over ``sessions`` at 1x, 2x, 3x and the gate's multiple
    of the trading costs; the same weights backtested again, never rebuilt."""
    weights, prices, stress = candidate_weights(folder)[main], folder.prices, {}
    for multiple in sorted({1.0, 2.0, 3.0, gate_multiple}):
        stressed = results[main] if multiple == 1.0 else run_backtest(
            weights, prices, **folder.config.backtest_model(multiple))
        stress[f"{multiple:g}x"] = headline_metrics(stressed.returns.reindex(sessions).dropna(),
                                                    folder.config.sessions_per_year)
    return stress
