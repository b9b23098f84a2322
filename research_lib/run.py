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
from research_lib._io import read_json, write_json, write_parquet
from research_lib.backtest import BacktestResult, run_backtest
from research_lib.config import RunConfig, load_config
from research_lib.data import DEFAULT_UNIVERSE, load_prices, read_snapshot, write_snapshot
from research_lib.env import load_env_file
from research_lib.features import VIX_FEATURES
from research_lib.labels import forward_returns
from research_lib.metrics import backtest_metrics, headline_metrics
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

STATE_DB = "spartan.sqlite"  # the workspace's SQLite state under data/ (LLM response cache, later the ledger)

# The parameter sections each artifact depends on.
_DEPENDS = {PRICES_FILE: ("data", "features"), FEATURES_FILE: ("data", "features"),
            SIGNALS_FILE: ("data", "features", "ml"), LLM_VIEWS_FILE: ("data", "features", "ml", "llm")}


def open_run(config_path: str | Path, run_dir: str | Path) -> tuple[RunConfig, Path]:
    """Load the run's parameters (and keys from ``.env``) and make sure its folder exists."""
    load_env_file()
    config = load_config(config_path)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return config, run_dir


def config_key(config: RunConfig, sections: tuple[str, ...]) -> str:
    """A short hash of the named parameter sections."""
    dumped = config.model_dump(mode="json")
    payload = json.dumps({s: dumped[s] for s in sections}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _is_fresh(path: Path, config: RunConfig) -> bool:
    record = read_json(path.with_suffix(".json"))
    return path.is_file() and record is not None and record.get("config_key") == config_key(config, _DEPENDS[path.name])


def _save_frame(frame: pd.DataFrame, path: Path, config: RunConfig) -> pd.DataFrame:
    path.with_suffix(".json").unlink(missing_ok=True)  # never a new frame beside an old record
    write_parquet(frame, path)
    write_json(path.with_suffix(".json"), {"config_key": config_key(config, _DEPENDS[path.name]), "rows": len(frame)})
    return frame


def _cached_frame(path: Path, config: RunConfig, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    return pd.read_parquet(path) if _is_fresh(path, config) else _save_frame(compute(), path, config)


def universe_and_benchmark(config: RunConfig, prices: pd.DataFrame) -> tuple[list[str], str]:
    """The tradable symbols (all loaded but the benchmark and context series) and the benchmark."""
    return config.tradable(prices["close"].columns), config.data.benchmark


def symbols_to_load(config: RunConfig) -> list[str] | None:
    """The universe plus the benchmark and, when VIX features are wanted, the VIX."""
    data = config.data
    symbols = data.symbols
    if symbols is None and data.source != "file":  # a file's default universe is all its symbols
        symbols = list(DEFAULT_UNIVERSE)
    if symbols is None:
        return None
    wants_vix = config.features.vix_symbol is not None and any(n in VIX_FEATURES for n in config.features.names)
    extra = [data.benchmark, config.features.vix_symbol] if wants_vix else [data.benchmark]
    return [*symbols, *[s for s in extra if s not in symbols]]


def run_prices(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The run's validated prices: ``prices.parquet`` if fresh, else loaded (via the snapshot cache) and saved."""
    path = Path(run_dir) / PRICES_FILE
    limits = {"max_stale_sessions": config.data.max_stale_sessions, "max_daily_price_ratio": config.data.max_daily_price_ratio}
    if _is_fresh(path, config):
        return read_snapshot(path, **limits)
    data = config.data
    prices = load_prices(data.source, symbols_to_load(config), data.start, data.end, path=data.path,
                         refresh=data.refresh, **limits)
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
    """Target weights of the configured strategy (or of ``name``), reading ML or LLM scores when needed."""
    strategy = config.strategy if name is None else config.strategy.model_copy(update={"name": name})
    close = prices["close"][config.tradable(prices["close"].columns)]
    scores = None
    if strategy.name == "ml_signal":
        scores = run_ml_signals(config, run_dir)
    elif strategy.name == "llm_signal":
        scores = run_llm_scores(config, run_dir).reindex(close.index).ffill(limit=21)  # a view lasts its horizon
    return baseline_weights(close, strategy, scores=scores)


def run_llm_scores(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The analyst's expected excess returns (view dates x symbols): read if fresh, else asked for."""
    path = Path(run_dir) / LLM_VIEWS_FILE
    views = pd.read_parquet(path) if _is_fresh(path, config) else fit_llm_signals(config, run_dir)["result"].views
    return views.pivot(index="date", columns="symbol", values="expected_excess_return")


def backtest_strategies(config: RunConfig, prices: pd.DataFrame, run_dir: str | Path) -> dict[str, BacktestResult]:
    """Backtest the configured strategy and, when the run has fresh ML signals, ``ml_signal`` too."""
    names = [config.strategy.name]
    for name, artifact in (("ml_signal", SIGNALS_FILE), ("llm_signal", LLM_VIEWS_FILE)):
        if name not in names and _is_fresh(Path(run_dir) / artifact, config):
            names.append(name)
    return {name: run_backtest(strategy_weights(config, prices, run_dir, name), prices, cost_bps=config.backtest.cost_bps,
                               execution_lag_sessions=config.backtest.execution_lag_sessions) for name in names}


def validation_metrics(config: RunConfig, prices: pd.DataFrame, results: dict[str, BacktestResult]) -> dict:
    """metrics.json: the configured strategy's numbers and its benchmark's, plus any alternative."""
    benchmark = prices["close"][config.data.benchmark].pct_change(fill_method=None)
    main, *others = results
    metrics = {"strategy_name": main, **backtest_metrics(**_parts(results[main]), benchmark=benchmark)}
    metrics["alternatives"] = {name: backtest_metrics(**_parts(results[name]), benchmark=benchmark)["strategy"]
                               for name in others}
    if "llm_signal" in results:
        metrics["llm_signal_by_cutoff"] = _split_at_cutoff(results["llm_signal"].returns, config)
    return metrics


def _split_at_cutoff(returns: pd.Series, config: RunConfig) -> dict:
    """The LLM strategy's numbers before and after the model's knowledge cutoff: only the
    part after it can show skill rather than memory."""
    cutoff = pd.Timestamp(config.llm.knowledge_cutoff.get(config.llm.model, dt.date.max))
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
    from research_lib.evaluation import information_coefficient

    scores = result.scores()
    if scores.empty:
        return pd.Series(dtype=float)
    labels = forward_returns(close[scores.columns], config.ml.horizon_days,
                             config.backtest.execution_lag_sessions).reindex(scores.index)
    return information_coefficient(scores, labels, method="spearman", min_symbols=3)


def _view_ic_summary(ic: pd.Series, config: RunConfig) -> dict | None:
    """Views are formed every month (or week); their labels overlap by horizon / spacing."""
    from research_lib.evaluation import ic_summary

    spacing = {"monthly": 21, "weekly": 5}[config.llm.rebalance]
    return ic_summary(ic, horizon=max(1, -(-config.ml.horizon_days // spacing))) if len(ic) else None


def _evaluate_llm(result: LLMResult, close: pd.DataFrame, config: RunConfig, run_dir: Path) -> dict:
    """IC of the views before and after the model's knowledge cutoff, and agreement with the ML signal."""
    from research_lib.evaluation import information_coefficient

    ic = _view_ic(result, close, config)
    cutoff = pd.Timestamp(config.llm.knowledge_cutoff.get(config.llm.model, dt.date.max))
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
    r = llm_report
    return (f"{config.report.title} | LLM views: {r['analyst']}; tokens {r['input_tokens']:,} in, {r['output_tokens']:,} out, "
            f"{r['cache_read_tokens']:,} cache read, {r['cache_write_tokens']:,} cache write; ${r['cost_usd']:.2f} "
            f"(${r['usd_per_signal']:.4f} per signal)")
