"""Artifacts of one run folder, read if present and fresh, computed (then saved) if not.

Notebooks call these so that each one also runs alone from JupyterLab: a stage reads
what upstream stages left in ``run_dir`` and the library fills in whatever is missing.
Each artifact ``X.parquet`` has a ``X.json`` beside it recording a hash of the parameter
sections it was computed from; an artifact made with other parameters is recomputed,
never silently reused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

from research_lib import paths
from research_lib._io import git_commit, read_json, write_json, write_parquet
from research_lib.backtest import BacktestResult, NoPosition, run_backtest
from research_lib.config import RunConfig, load_config
from research_lib.data import load_prices, read_snapshot, write_snapshot
from research_lib.env import load_env_file
from research_lib.errors import ConfigError
from research_lib.units import SESSIONS_PER_YEAR
from research_lib.features import VIX_FEATURES
from research_lib.features import momentum
from research_lib.signals.labels import forward_returns
from research_lib.validation.metrics import backtest_metrics, headline_metrics
from research_lib.strategies import baseline_weights, rebalance_dates

if TYPE_CHECKING:  # heavy (scikit-learn, statsmodels, anthropic): imported where used, so light stages start fast
    from research_lib.llm import AnalystSettings, ClaudeAnalyst, LLMResult, ResponseCache

PRICES_FILE = "prices.parquet"
FEATURES_FILE = "features.parquet"
SIGNALS_FILE = "signals_ml.parquet"
PREDICTIONS_FILE = "ml_predictions.parquet"
ML_REPORT_FILE = "ml_report.json"
LLM_VIEWS_FILE = "signals_llm.parquet"
LLM_REPORT_FILE = "llm_report.json"
IC_FILE = "ic_by_date.parquet"
WEIGHTS_FILE = "weights.parquet"
OPTIMIZER_WEIGHTS_FILE = "weights_optimizer.parquet"
RISK_EVENTS_FILE = "risk_events.parquet"
PORTFOLIO_REPORT_FILE = "portfolio_report.json"

STATE_DB = "spartan.sqlite"  # the workspace's SQLite state under data/ (LLM response cache, later the ledger)

# The parameter sections each artifact depends on.
_DEPENDS = {PRICES_FILE: ("data", "features"), FEATURES_FILE: ("data", "features"),
            SIGNALS_FILE: ("data", "features", "ml"), LLM_VIEWS_FILE: ("data", "features", "ml", "llm"),
            WEIGHTS_FILE: ("data", "features", "ml", "llm", "strategy", "portfolio", "risk", "backtest")}


def open_run(config_path: str | Path, run_dir: str | Path) -> tuple[RunConfig, Path]:
    """Load the run's parameters (and keys from ``.env``) and make sure its folder exists."""
    load_env_file()
    config = load_config(config_path)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return config, run_dir


def config_key(config: RunConfig, sections: tuple[str, ...]) -> str:
    """A short hash of the named parameter sections; with ``data``, of the user's price file too
    (``data.source: file``), so that every artifact made from it is made again once it is edited."""
    dumped = config.model_dump(mode="json")
    named = {s: dumped[s] for s in sections}
    if "data" in sections and config.data.source == "file" and config.data.path:
        from research_lib.data import sha256_of

        try:
            named["data_file_sha256"] = sha256_of(Path(config.data.path))
        except OSError:  # missing or unreadable: never fresh, and the load says why
            named["data_file_sha256"] = None
    payload = json.dumps(named, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# Artifacts whose inputs are other artifacts of the run: they are stale when an input was rewritten
# (a refit signal, or views from another analyst once a key is set), whatever the parameters say.
_INPUTS = {WEIGHTS_FILE: (PRICES_FILE, SIGNALS_FILE, LLM_VIEWS_FILE)}


def _input_hashes(path: Path) -> dict[str, str | None]:
    from research_lib.data import sha256_of

    inputs = [path.parent / name for name in _INPUTS.get(path.name, ())]
    return {p.name: sha256_of(p) if p.is_file() else None for p in inputs}


def _is_fresh(path: Path, config: RunConfig) -> bool:
    record = read_json(path.with_suffix(".json"))
    return (path.is_file() and record is not None
            and record.get("config_key") == config_key(config, _DEPENDS[path.name])
            and record.get("inputs", {}) == _input_hashes(path))


def _save_frame(frame: pd.DataFrame, path: Path, config: RunConfig) -> pd.DataFrame:
    path.with_suffix(".json").unlink(missing_ok=True)  # never a new frame beside an old record
    write_parquet(frame, path)
    write_json(path.with_suffix(".json"), {"config_key": config_key(config, _DEPENDS[path.name]), "rows": len(frame),
                                           "inputs": _input_hashes(path)})
    return frame


def _cached_frame(path: Path, config: RunConfig, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    return pd.read_parquet(path) if _is_fresh(path, config) else _save_frame(compute(), path, config)


def universe_and_benchmark(config: RunConfig, prices: pd.DataFrame) -> tuple[list[str], str]:
    """The tradable symbols (all loaded but the benchmark and context series) and the benchmark."""
    return config.tradable(prices["close"].columns), config.data.benchmark


def context_symbols(config: RunConfig) -> dict[str, str]:
    """The series loaded besides the universe, each with the parameter that names it (quoted when a
    source lacks it): the benchmark and, when VIX features are wanted, the VIX."""
    named = {config.data.benchmark: "data.benchmark"}
    vix = config.features.vix_symbol
    if vix is not None and any(n in VIX_FEATURES for n in config.features.names):
        named.setdefault(vix, "features.vix_symbol")
    return named


def run_prices(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The run's validated prices: ``prices.parquet`` if fresh, else loaded (via the snapshot cache) and saved."""
    path = Path(run_dir) / PRICES_FILE
    limits = {"max_stale_sessions": config.data.max_stale_sessions, "max_daily_price_ratio": config.data.max_daily_price_ratio}
    if _is_fresh(path, config):
        return read_snapshot(path, **limits)
    data = config.data
    # data.symbols null: the source's default universe, or every symbol of a file
    prices = load_prices(data.source, data.symbols, data.start, data.end, path=data.path, refresh=data.refresh,
                         calendar=data.calendar, context=context_symbols(config), **limits)
    provenance = dict(prices.attrs["provenance"])
    provenance["source_sha256"] = provenance.pop("sha256")
    provenance["config_key"] = config_key(config, _DEPENDS[PRICES_FILE])
    prices.attrs["provenance"] = write_snapshot(prices, path, provenance)
    return prices


def run_features(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The run's (date, symbol) feature panel."""
    from research_lib.signals import compute_features

    return _cached_frame(Path(run_dir) / FEATURES_FILE, config,
                         lambda: compute_features(config, run_prices(config, run_dir)["close"]))


def run_ml_signals(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The run's out-of-sample ML scores (dates x symbols): read if fresh, else fitted with their report."""
    path = Path(run_dir) / SIGNALS_FILE
    return pd.read_parquet(path) if _is_fresh(path, config) else fit_ml_signals(config, run_dir)["signals"]


def fit_ml_signals(config: RunConfig, run_dir: str | Path) -> dict:
    """Fit every configured model walk-forward; save signals, predictions and the evaluation.

    Returns ``{"signals", "models", "report", "importance", "ic_by_date"}``.
    """
    from research_lib.signals import evaluate_signal, fit_models, labels_for, permutation_importance, signal_frame

    run_dir = Path(run_dir)
    close = run_prices(config, run_dir)["close"]
    features = run_features(config, run_dir)
    lag = config.backtest.execution_lag_sessions
    labels = labels_for(features, close, config.ml, lag)
    models = fit_models(features, labels, config.ml, lag)
    report = {"label": config.ml.label, "horizon_days": config.ml.horizon_days, "label_lag_sessions": lag,
              "signal_model": config.ml.signal_model, "models": {}}
    daily_ic = {}
    for name, model in models.items():
        summary, daily_ic[name] = evaluate_signal(signal_frame(model), close, config.ml.horizon_days, lag=lag)
        report["models"][name] = {**summary, "folds": model.folds_}
    importance = permutation_importance(models[config.ml.signal_model], features, labels)
    report["permutation_importance"] = importance["mean"].to_dict()
    ic_by_date = pd.DataFrame(daily_ic)
    write_parquet(pd.DataFrame({n: m.predictions_ for n, m in models.items()}), run_dir / PREDICTIONS_FILE)
    write_parquet(ic_by_date, run_dir / IC_FILE)
    write_json(run_dir / ML_REPORT_FILE, report)
    signals = _save_frame(signal_frame(models[config.ml.signal_model]), run_dir / SIGNALS_FILE, config)
    return {"signals": signals, "models": models, "report": report, "importance": importance, "ic_by_date": ic_by_date}


def strategy_weights(config: RunConfig, prices: pd.DataFrame, run_dir: str | Path, name: str | None = None) -> pd.DataFrame:
    """Target weights of the configured strategy (or of ``name``), reading ML or LLM scores when needed.

    ``portfolio`` is the optimized book of `run_weights`; the others are the baseline rules.
    """
    strategy = config.strategy if name is None else config.strategy.model_copy(update={"name": name})
    if strategy.name == "portfolio":
        return run_weights(config, run_dir)
    close = prices["close"][config.tradable(prices["close"].columns)]
    scores = None
    if strategy.name == "ml_signal":
        scores = run_ml_signals(config, run_dir)
    elif strategy.name == "llm_signal":
        scores = run_llm_scores(config, run_dir).reindex(close.index).ffill(limit=21)  # a view lasts its horizon
    return baseline_weights(close, strategy, scores=scores)


def run_llm_views(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The analyst's views (one row per date and symbol): read if fresh, else asked for."""
    path = Path(run_dir) / LLM_VIEWS_FILE
    if _is_fresh(path, config):
        return pd.read_parquet(path)
    result = fit_llm_signals(config, run_dir)["result"]
    if result is None:
        raise ConfigError("llm.dry_run is true, so the run has no analyst views to trade on; set llm.dry_run: false, "
                          "or use a strategy and portfolio.signal that do not need them (e.g. portfolio.signal: ml)")
    return result.views


def run_llm_scores(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The analyst's expected excess returns (view dates x symbols)."""
    return run_llm_views(config, run_dir).pivot(index="date", columns="symbol", values="expected_excess_return")


def run_weights(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The configured strategy's target weights (rebalance dates x symbols): ``weights.parquet``
    if fresh, else built by `build_weights`."""
    path = Path(run_dir) / WEIGHTS_FILE
    return pd.read_parquet(path) if _is_fresh(path, config) else build_weights(config, run_dir)["weights"]


def portfolio_signals(config: RunConfig, close: pd.DataFrame, run_dir: str | Path) -> tuple[dict, dict]:
    """The signal sources ``portfolio.signal`` names, and their Idzorek confidences where they
    state one: the analyst's probability ``p`` that a direction is right maps to ``2p - 1``
    (a coin flip is no confidence at all); ML and momentum get ``portfolio.model_confidence``."""
    p = config.portfolio
    if not p.uses_signals:
        return {}, {}
    wanted = ("ml", "llm") if p.signal == "blend" else (p.signal,)
    scores, confidences = {}, {}
    if "ml" in wanted:
        scores["ml"] = run_ml_signals(config, run_dir)
    if "llm" in wanted:
        views = run_llm_views(config, run_dir)
        scores["llm"] = views.pivot(index="date", columns="symbol", values="expected_excess_return")
        confidences["llm"] = (2.0 * views.pivot(index="date", columns="symbol", values="confidence") - 1.0).clip(0.0, 1.0)
    if "momentum" in wanted:
        scores["momentum"] = momentum(close, config.strategy.lookback_days, config.strategy.skip_days)
    return scores, confidences


def build_weights(config: RunConfig, run_dir: str | Path, progress: Callable[[int, int], None] | None = None) -> dict:
    """Target weights of the configured strategy, saved as ``weights.parquet`` with how they were made.

    For ``strategy.name: portfolio``: signals -> optimizer -> volatility target -> pre-trade
    risk checks (`research_lib.portfolio.construct_portfolio`) -> drawdown circuit breaker;
    also saves the optimizer's weights, the risk layer's clamps and ``portfolio_report.json``.
    Any other strategy's weights are its baseline rule's.

    Returns ``{"weights", "report", "construction"}`` (``construction`` None for a baseline).
    """
    run_dir = Path(run_dir)
    prices = run_prices(config, run_dir)
    construction, report = None, {"strategy": config.strategy.name}
    if config.strategy.name != "portfolio":
        weights = strategy_weights(config, prices, run_dir)
        report["construction"] = "baseline rule (params: strategy)"
    else:
        weights, construction, report = _construct(config, prices, run_dir, progress)
        write_parquet(construction.optimizer_weights, run_dir / OPTIMIZER_WEIGHTS_FILE)
        write_parquet(construction.risk_events.astype({"date": "datetime64[ns]"}), run_dir / RISK_EVENTS_FILE)
    write_json(run_dir / PORTFOLIO_REPORT_FILE, report)
    _save_frame(weights, run_dir / WEIGHTS_FILE, config)
    return {"weights": weights, "report": report, "construction": construction}


def _construct(config: RunConfig, prices: pd.DataFrame, run_dir: Path, progress) -> tuple:
    from research_lib.portfolio import construct_portfolio

    p = config.portfolio
    tradable = config.tradable(prices["close"].columns)
    close = prices["close"][tradable]
    volume = prices["volume"].reindex(columns=tradable) if "volume" in prices.columns.get_level_values(0) else None
    scores, confidences = portfolio_signals(config, close, run_dir)
    construction = construct_portfolio(close, rebalance_dates(close.index, p.rebalance), p, config.risk,
                                       scores=scores, confidences=confidences, volume=volume,
                                       benchmark=prices["close"][config.data.benchmark], progress=progress)
    weights = construction.weights
    trips = None
    if p.circuit_breaker is not None and weights.to_numpy().any():
        from research_lib.risk import drawdown_circuit_breaker, follow_multiplier

        unmanaged = run_backtest(weights, prices, **backtest_model(config))
        multiplier = drawdown_circuit_breaker(unmanaged.returns, p.circuit_breaker.max_drawdown,
                                              p.circuit_breaker.cooldown_days)
        trips = int(((multiplier == 0) & (multiplier.shift(1, fill_value=1.0) == 1)).sum())
        weights = follow_multiplier(weights, multiplier)
    events = construction.risk_events
    has_volume = volume is not None and volume.notna().any().any()
    report = {"strategy": "portfolio", "signal": p.signal if p.uses_signals else None,
              "signal_sources": sorted(scores), "analyst": (read_llm_report(run_dir) or {}).get("analyst") if "llm" in scores else None,
              "method": p.method, "returns_model": p.returns_model if p.method in ("max_sharpe", "efficient_risk", "efficient_return") else None,
              "risk_model": p.risk_model, "rebalances": len(construction.weights),
              "cash_dates": int(construction.notes["note"].str.startswith("cash").sum()),
              "previous_targets_kept": int(construction.notes["note"].str.startswith("previous").sum()),
              "risk_clamped": int((events["action"] == "clamped").sum()),
              "risk_rejected": int((events["action"] == "rejected").sum()),
              "adv_checked": bool(has_volume), "capital": p.capital,
              "vol_target": p.vol_target.model_dump() if p.vol_target else None,
              "circuit_breaker_trips": trips}
    return weights, construction, report


def portfolio_snapshot(config: RunConfig, run_dir: str | Path, weights: pd.DataFrame) -> dict:
    """The book on the last rebalance date with positions: what the optimizer saw and chose.

    Returns ``{"date", "mu", "cov", "mu_source", "frontier", "contributions", "allocation"}``:
    the expected returns (Black-Litterman's posterior when that is the method; for a strategy
    without return estimates, the historical mean over the lookback, for display), the
    covariance, the efficient frontier under the portfolio constraints, each asset's weight and
    share of risk, and the shares `discrete_allocation` buys with ``portfolio.capital``.
    """
    from research_lib.portfolio import (black_litterman_posterior, discrete_allocation, efficient_frontier,
                                        estimates_at, risk_contributions)

    prices = run_prices(config, run_dir)
    close = prices["close"][config.tradable(prices["close"].columns)]
    held = weights[weights.abs().sum(axis=1) > 0]
    if held.empty:
        raise ValueError("the strategy never holds a position, so there is no book to describe; check its weights")
    date = held.index[-1]
    settings = config.portfolio
    if config.strategy.name != "portfolio" or settings.mu_free:
        settings = settings.model_copy(update={"method": "max_sharpe", "returns_model": "mean_historical"})
    scores, confidences = portfolio_signals(config, close, run_dir)
    est = estimates_at(close, close.index.get_loc(date), settings, scores=scores, confidences=confidences,
                       benchmark=prices["close"][config.data.benchmark])
    if isinstance(est, str):
        raise ValueError(f"no estimates on {date.date()}: {est}")
    mu, cov, source = est.mu, est.cov, f"{settings.returns_model} expected returns"
    if est.views is not None:
        mu, cov = black_litterman_posterior(cov, est.views, settings.risk_free_rate)
        source = "Black-Litterman posterior of the blended views"
    book = held.iloc[-1].reindex(cov.columns).fillna(0.0)
    constraints = config.portfolio.constraints if config.strategy.name == "portfolio" else None
    contributions = pd.DataFrame({"weight": book, "risk_contribution": risk_contributions(book, cov)})
    allocation = discrete_allocation(held.iloc[-1][held.iloc[-1] != 0], close.loc[date], settings.capital,
                                     fractional=settings.fractional_shares)
    try:
        frontier = efficient_frontier(mu, cov, constraints, solver=settings.solver)
    except ValueError:  # e.g. a market-neutral book: no minimum-volatility end to start the frontier from
        frontier = pd.DataFrame(columns=["volatility", "expected_return"], dtype=float)
    return {"date": date, "mu": mu, "cov": cov, "mu_source": source, "contributions": contributions,
            "frontier": frontier, "allocation": allocation}


def progress_printer(label: str, every: float = 0.1) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback printing ``label: done/total`` about every ``every`` of the way."""
    shown = [-1.0]

    def progress(done: int, total: int) -> None:
        if done == total or done / total - shown[0] >= every:
            shown[0] = done / total
            print(f"{label}: {done}/{total}", flush=True)

    return progress


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


def read_portfolio_report(run_dir: str | Path) -> dict | None:
    return read_json(Path(run_dir) / PORTFOLIO_REPORT_FILE)


def backtest_strategies(config: RunConfig, prices: pd.DataFrame, run_dir: str | Path) -> dict[str, BacktestResult]:
    """Backtest the configured strategy's ``weights.parquet`` first, then the alternatives the run
    has: the momentum baseline, and the top-n ML and LLM signal rules when their signals are fresh."""
    main = config.strategy.name
    weights = {main: run_weights(config, run_dir)}
    for name, artifact in (("momentum_12_1", None), ("ml_signal", SIGNALS_FILE), ("llm_signal", LLM_VIEWS_FILE)):
        if name not in weights and (artifact is None or _is_fresh(Path(run_dir) / artifact, config)):
            weights[name] = strategy_weights(config, prices, run_dir, name)
    return {name: run_backtest(w, prices, **backtest_model(config)) for name, w in weights.items()}


def backtest_model(config: RunConfig, cost_multiple: float = 1.0) -> dict:
    """The run's cost model as run_backtest's keyword arguments (trading costs x ``cost_multiple``)."""
    return config.backtest.model(cost_multiple, capital=config.portfolio.capital)


def validation_metrics(config: RunConfig, prices: pd.DataFrame, results: dict[str, BacktestResult]) -> dict:
    """metrics.json: the configured strategy's numbers and its benchmark's, plus any alternative."""
    benchmark = prices["close"][config.data.benchmark].pct_change(fill_method=None)
    main, *others = results
    metrics = {"strategy_name": main, **backtest_metrics(**_parts(results[main]), benchmark=benchmark)}
    metrics["alternatives"] = {name: backtest_metrics(**_parts(results[name]), benchmark=benchmark)["strategy"]
                               for name in others}
    if "llm_signal" in results:
        metrics["llm_signal_by_cutoff"] = _split_at_cutoff(results["llm_signal"].returns, config)
    if main == "portfolio" and config.portfolio.uses_signals and config.portfolio.signal in ("llm", "blend"):
        metrics["strategy_by_cutoff"] = _split_at_cutoff(results[main].returns, config)  # it trades on the views too
    return metrics


def llm_cutoff(config: RunConfig) -> pd.Timestamp:
    """The configured model's knowledge cutoff (far future when none is listed: nothing counts as after it)."""
    return pd.Timestamp(config.llm.knowledge_cutoff.get(config.llm.model, dt.date.max))


def _split_at_cutoff(returns: pd.Series, config: RunConfig) -> dict:
    """The LLM strategy's numbers before and after the model's knowledge cutoff: only the
    part after it can show skill rather than memory."""
    cutoff = llm_cutoff(config)
    parts = {"before_cutoff": returns[returns.index <= cutoff], "after_cutoff": returns[returns.index > cutoff]}
    out = {name: (headline_metrics(part) if len(part) >= 21 else None) for name, part in parts.items()}
    return {"knowledge_cutoff": str(cutoff.date()), **out}


def _parts(result: BacktestResult) -> dict:
    return {"returns": result.returns, "turnover": result.turnover, "costs": result.costs}


def llm_settings(config: RunConfig) -> AnalystSettings:
    from research_lib.llm import AnalystSettings, Price

    llm = config.llm
    price = llm.prices.get(llm.model)
    return AnalystSettings(
        provider=llm.provider, model=llm.model, horizon_days=config.ml.horizon_days,
        price=Price(**price.model_dump()) if price else Price(0.0, 0.0, 0.0, 0.0),
        knowledge_cutoff=llm.knowledge_cutoff.get(llm.model, dt.date.max), budget_usd=llm.budget_usd, mask=llm.mask,
        reasoning=llm.reasoning, max_tokens=llm.max_tokens, temperature=llm.temperature, batch=llm.batch)


def _live_analyst(config: RunConfig) -> ClaudeAnalyst | None:
    """The Claude client when the provider may call it and a key is set; else None."""
    from research_lib.llm import API_KEY_ENV, ClaudeAnalyst, make_client

    llm = config.llm
    if llm.provider not in ("auto", "anthropic") or not os.environ.get(API_KEY_ENV):
        return None
    return ClaudeAnalyst(make_client(llm.timeout_s), llm_settings(config), llm.max_retries)


def fit_llm_signals(config: RunConfig, run_dir: str | Path) -> dict:
    """The analyst's views for every rebalance date, saved with their costs and evaluation.

    Returns ``{"result", "report"}`` (``result`` is None on a dry run, whose estimate is the report).
    """
    from research_lib.llm import ResponseCache, estimate_backfill, generate_views, prompt_tables

    run_dir = Path(run_dir)
    close = run_prices(config, run_dir)["close"]
    features = run_features(config, run_dir)
    tables = prompt_tables(features, rebalance_dates(close.index, config.llm.rebalance), config.llm.inputs)
    cache = ResponseCache(paths.data_dir() / STATE_DB)
    settings = llm_settings(config)
    if config.llm.dry_run:
        report = {"dry_run": estimate_backfill(tables, settings, cache)}
        write_json(run_dir / LLM_REPORT_FILE, report)
        return {"result": None, "report": report}
    claude = _live_analyst(config)
    result = generate_views(tables, settings, cache, claude, headlines=_headlines(config, tables))
    report = {**result.summary, **_evaluate_llm(result, close, config, run_dir)}
    if config.llm.ablation:
        report["ablation"] = _masking_ablation(result, tables, settings, cache, claude, close, config)
    write_parquet(result.abstentions, run_dir / "llm_abstentions.parquet")
    write_parquet(result.requests, run_dir / "llm_requests.parquet")
    write_json(run_dir / LLM_REPORT_FILE, report)
    _save_frame(result.views, run_dir / LLM_VIEWS_FILE, config)
    return {"result": result, "report": report}


def _headlines(config: RunConfig, tables: dict) -> dict | None:
    """Headlines per analysis date from the configured news source (None: no headlines)."""
    if config.llm.headlines == "none" or not tables:
        return None
    from research_lib.llm._news import fetch_alpaca_headlines, headlines_by_date

    dates = sorted(tables)
    symbols = sorted({s for table in tables.values() for s in table.index})
    lookback = pd.Timedelta(days=config.llm.headline_lookback_days)
    found = fetch_alpaca_headlines(symbols, (dates[0] - lookback).to_pydatetime(),
                                   (dates[-1] + pd.Timedelta(days=1)).to_pydatetime())
    return headlines_by_date(found, dates, config.llm.headline_lookback_days, config.llm.max_headlines)


def _view_ic(result: LLMResult, close: pd.DataFrame, config: RunConfig) -> pd.Series:
    """Rank IC of the views' expected excess returns against the returns they could earn."""
    from research_lib.signals.evaluation import information_coefficient

    scores = result.scores()
    if scores.empty:  # no views: no IC, on a date index still (the cutoff split compares dates)
        return pd.Series(dtype=float, index=pd.DatetimeIndex([], name="date"))
    labels = forward_returns(close[scores.columns], config.ml.horizon_days,
                             config.backtest.execution_lag_sessions).reindex(scores.index)
    return information_coefficient(scores, labels, method="spearman", min_symbols=3)


def _view_ic_summary(ic: pd.Series, config: RunConfig) -> dict | None:
    """Views are formed every month (or week); their labels overlap by horizon / spacing."""
    from research_lib.signals.evaluation import ic_summary

    spacing = {"monthly": 21, "weekly": 5}[config.llm.rebalance]
    return ic_summary(ic, horizon=max(1, -(-config.ml.horizon_days // spacing))) if len(ic) else None


def _evaluate_llm(result: LLMResult, close: pd.DataFrame, config: RunConfig, run_dir: Path) -> dict:
    """IC of the views before and after the model's knowledge cutoff, and agreement with the ML signal."""
    from research_lib.signals.evaluation import information_coefficient

    ic = _view_ic(result, close, config)
    cutoff = llm_cutoff(config)
    out = {"ic_before_cutoff": _view_ic_summary(ic[ic.index <= cutoff], config),
           "ic_after_cutoff": _view_ic_summary(ic[ic.index > cutoff], config)}
    agreement = None
    scores = result.scores()
    if not scores.empty and _is_fresh(run_dir / SIGNALS_FILE, config):
        ml = pd.read_parquet(run_dir / SIGNALS_FILE).reindex(index=scores.index, columns=scores.columns)
        both = information_coefficient(scores, ml, method="spearman", min_symbols=3)
        agreement = {"mean_rank_correlation": float(both.mean()) if len(both) else None, "dates": int(len(both))}
    out["agreement_with_ml"] = agreement
    return out


def _masking_ablation(result: LLMResult, tables: dict, settings: AnalystSettings, cache: ResponseCache,
                      claude: ClaudeAnalyst | None, close: pd.DataFrame, config: RunConfig) -> dict:
    """The same dates asked with masking flipped: if unmasked views score much better before
    the cutoff, the model is probably recalling history rather than reading the inputs."""
    from research_lib.llm import generate_views

    flipped_settings = replace(settings, mask=not settings.mask,
                               budget_usd=max(settings.budget_usd - result.summary["cost_usd"], 0.0))
    flipped = generate_views(tables, flipped_settings, cache, claude)
    named = {("masked" if settings.mask else "unmasked"): result, ("unmasked" if settings.mask else "masked"): flipped}
    out = {label: _view_ic_summary(_view_ic(views, close, config), config) for label, views in named.items()}
    out["extra_cost_usd"] = flipped.summary["cost_usd"]
    return out


def read_llm_report(run_dir: str | Path) -> dict | None:
    return read_json(Path(run_dir) / LLM_REPORT_FILE)


def tearsheet_title(config: RunConfig, llm_report: dict | None) -> str:
    """The tearsheet's title; it names the LLM analyst and its cost when the run had one."""
    if not llm_report or "analyst" not in llm_report:
        return config.report.title
    from research_lib.units import format_usd

    r = llm_report
    per_signal = f"{format_usd(r['usd_per_signal'])} per signal" if r.get("views") else "no views"
    return (f"{config.report.title} | LLM views: {r['analyst']}; tokens {r['input_tokens']:,} in, {r['output_tokens']:,} out, "
            f"{r['cache_read_tokens']:,} cache read, {r['cache_write_tokens']:,} cache write; {format_usd(r['cost_usd'])} "
            f"({per_signal})")


# ---------------------------------------------------------------- validation (06_validate)

VALIDATION_JSON = "validation.json"
VALIDATION_HTML = "validation.html"
# The baseline family swept by every run, so the gate's overfitting statistics always have
# alternatives to compare the headline strategy with (all recorded in the sweep registry).
SWEEP_LOOKBACKS = (126, 252, 378)
SWEEP_TOP_N = (3, 5, 8)


def run_trials(config: RunConfig, prices: pd.DataFrame, results: dict[str, BacktestResult]) -> dict:
    """Every configuration this run backtested, ``name -> (params, daily returns)``: the
    strategies of `backtest_strategies` plus a small sweep of the momentum baseline."""
    sections = {"portfolio": ("strategy", "portfolio", "risk", "ml", "llm", "features"),
                "ml_signal": ("strategy", "ml", "features"), "llm_signal": ("strategy", "llm", "features")}
    dumped = config.model_dump(mode="json")
    common = {"data": dumped["data"], "backtest": dumped["backtest"]}
    trials = {}
    for name, result in results.items():
        params = {s: dumped[s] for s in sections.get(name, ("strategy",))}
        params["strategy"] = {**params["strategy"], "name": name}
        trials[name] = ({**common, **params}, result.returns)
    close = prices["close"][config.tradable(prices["close"].columns)]
    for lookback in SWEEP_LOOKBACKS:
        for top_n in SWEEP_TOP_N:
            strategy = config.strategy.model_copy(update={"name": "momentum_12_1", "lookback_days": lookback,
                                                          "top_n": top_n})
            name = f"momentum_{lookback}d_top{top_n}"
            if name in trials or (lookback == config.strategy.lookback_days and top_n == config.strategy.top_n
                                  and "momentum_12_1" in trials):
                continue
            try:
                result = run_backtest(baseline_weights(close, strategy), prices, **backtest_model(config))
            except NoPosition:  # e.g. a lookback longer than the history: never trades, not a trial
                continue
            trials[name] = ({**common, "strategy": strategy.model_dump(mode="json")}, result.returns)
    return trials


def validate_run(config: RunConfig, prices: pd.DataFrame, results: dict[str, BacktestResult],
                 run_dir: str | Path, metrics: dict) -> dict:
    """The statistics that say whether the headline strategy's numbers are luck, and the gate's verdict.

    Records every trial of the run in the workspace's sweep registry first, so the deflated
    Sharpe counts them; writes ``validation.json`` and ``validation.html`` into ``run_dir``.
    """
    from research_lib import validation
    from research_lib.validation import registry
    from research_lib.validation.promotion import evaluate_gate, load_thresholds, verdict
    from research_lib.reports.validation_page import write_validation_page

    run_dir = Path(run_dir)
    main = metrics["strategy_name"]
    llm_report = read_llm_report(run_dir)
    trials = run_trials(config, prices, results)
    db = paths.data_dir() / STATE_DB
    registry.record_trials(db, run_dir.name, "research", trials)
    trial_stats = registry.trial_statistics(db)
    thresholds = load_thresholds()
    returns, judged_on = _judged_returns(config, results[main].returns, main, llm_report)
    # The trials over the headline's sessions; a trial not yet trading (warm-up) is in cash.
    trial_returns = pd.DataFrame({name: r for name, (_, r) in trials.items()}).reindex(returns.index).fillna(0.0)
    stress = {}
    for multiple in sorted({1.0, 2.0, 3.0, thresholds.cost_stress_multiple}):
        stressed = results[main] if multiple == 1.0 else run_backtest(
            run_weights(config, run_dir) if main == "portfolio" else strategy_weights(config, prices, run_dir, main),
            prices, **backtest_model(config, multiple))
        stress[f"{multiple:g}x"] = headline_metrics(stressed.returns.reindex(returns.index).dropna())
    benchmark = prices["close"][config.data.benchmark].pct_change(fill_method=None)
    stats = _statistics(returns, trial_returns, trial_stats, thresholds, benchmark)
    headline = headline_metrics(returns)
    gate_stats = {"sharpe": headline["sharpe"], "win_rate": headline["win_rate"], "max_drawdown": headline["max_drawdown"],
                  "deflated_sharpe": stats["dsr"], "pbo": (stats["pbo"] or {}).get("pbo"), "n_obs": len(returns),
                  "min_track_record": stats["min_track_record"], "n_trials": trial_stats["n_trials"],
                  "stress_cagr": stress[f"{thresholds.cost_stress_multiple:g}x"]["cagr"]}
    criteria = evaluate_gate(gate_stats, thresholds)
    moments, pbo, walk = stats["moments"], stats["pbo"] or {}, stats["walk"]
    llm_report = read_llm_report(run_dir)
    report = {
        "strategy": main, "run_id": run_dir.name, "judged_on": judged_on, "gate_stats": gate_stats,
        "verdict": verdict(criteria), "thresholds": thresholds.model_dump(), "moments": moments, "psr": stats["psr"],
        "trials": {**trial_stats, "this_run": sorted(trials), "expected_max_sharpe_annual":
                   stats["expected_max_sharpe"] * SESSIONS_PER_YEAR ** 0.5},
        "pbo": {k: v for k, v in pbo.items() if k != "logits"},
        "bootstrap": stats["bootstrap"],
        "cost_stress": stress,
        "by_year": validation.breakdown_by_year(returns).reset_index().to_dict("records"),
        "by_regime": validation.breakdown_by_regime(returns, benchmark).reset_index().to_dict("records"),
        "walk_forward": walk and {"sharpe_annual": walk["sharpe"] * SESSIONS_PER_YEAR ** 0.5,
                                  "sessions": len(walk["returns"]), "choices": walk["choices"]},
        "llm": _llm_validation(llm_report, metrics),
        "provenance": {"code": git_commit(paths.workspace_root()),
                       "data_sha256": (prices.attrs.get("provenance") or {}).get("sha256"),
                       "params": config.model_dump(mode="json")},
    }
    write_json(run_dir / VALIDATION_JSON, report)
    write_validation_page(report, run_dir / VALIDATION_HTML)
    return report


def _judged_returns(config: RunConfig, returns: pd.Series, main: str, llm_report: dict | None) -> tuple[pd.Series, str]:
    """The returns the gate judges: all of them, or only those after the model's knowledge
    cutoff when the strategy trades on Claude's views (before it, Claude may remember)."""
    claude = bool(llm_report) and "not Claude" not in llm_report.get("analyst", "not Claude")
    on_views = main == "llm_signal" or (main == "portfolio" and config.portfolio.uses_signals
                                        and config.portfolio.signal in ("llm", "blend"))
    if not (claude and on_views):
        return returns, "every session of the backtest"
    cutoff = llm_cutoff(config)
    return returns[returns.index > cutoff], f"sessions after {config.llm.model}'s knowledge cutoff {cutoff.date()}"


def _statistics(returns: pd.Series, trial_returns: pd.DataFrame, trial_stats: dict, thresholds, benchmark) -> dict:
    """Moments, PSR, DSR, MinTRL against the best unskilled trial, PBO, bootstrap and walk-forward
    selection; each is None when the history is too short for it (and its criterion then fails)."""
    from research_lib import validation

    def attempt(compute):
        try:
            return compute()
        except ValueError:
            return None

    n_trials = max(trial_stats["n_trials"], 1)
    best_unskilled = validation.expected_max_sharpe(n_trials, trial_stats["sharpe_variance"])
    moments = attempt(lambda: validation.sharpe_moments(returns))
    out = {"moments": moments, "expected_max_sharpe": best_unskilled, "psr": None, "dsr": None,
           "min_track_record": None}
    if moments:
        args = (moments["sharpe"], moments["n_obs"], moments["skew"], moments["kurtosis"])
        out["psr"] = attempt(lambda: validation.probabilistic_sharpe_ratio(*args))
        out["dsr"] = attempt(lambda: validation.deflated_sharpe_ratio(*args, n_trials, trial_stats["sharpe_variance"]))
        trl = attempt(lambda: validation.minimum_track_record_length(
            moments["sharpe"], moments["skew"], moments["kurtosis"], benchmark_sharpe=best_unskilled,
            confidence=thresholds.track_record_confidence))
        out["min_track_record"] = None if trl is None or trl == float("inf") else trl
    out["pbo"] = attempt(lambda: validation.probability_of_backtest_overfitting(trial_returns))
    out["bootstrap"] = attempt(lambda: validation.bootstrap_sharpe_interval(returns))
    # Three years to choose on, one to hold; halved for short histories (e.g. the smoke scenario).
    n = len(trial_returns)
    train, test = (756, 252) if n >= 1008 else (n // 2, max(n // 6, 1))
    out["walk"] = attempt(lambda: validation.walk_forward_selection(trial_returns, max(train, 2), test))
    return out


def _llm_validation(llm_report: dict | None, metrics: dict) -> dict | None:
    if not llm_report or "analyst" not in llm_report:
        return None
    return {"analyst": llm_report["analyst"], "cost_usd": llm_report.get("cost_usd"),
            "usd_per_signal": llm_report.get("usd_per_signal"), "views": llm_report.get("views"),
            "by_cutoff": metrics.get("llm_signal_by_cutoff"), "strategy_by_cutoff": metrics.get("strategy_by_cutoff")}
