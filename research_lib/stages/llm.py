"""Stage 04 (``04_ask_claude``): the analyst's views for every rebalance date, costed and evaluated."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

import pandas as pd

from research_lib import paths
from research_lib._io import write_parquet
from research_lib.config import RunConfig
from research_lib.errors import ConfigError
from research_lib.portfolio import rebalance_dates
from research_lib.signals.evaluation import ic_summary, information_coefficient
from research_lib.signals.labels import forward_returns
from research_lib.stages.folder import RunFolder, produces

if TYPE_CHECKING:  # heavy (anthropic): imported where used, so light stages start fast
    from research_lib.llm import AnalystSettings, ClaudeAnalyst, LLMResult, ResponseCache

__all__ = ["analyst_scores", "fit_llm_signals", "ic_table", "llm_settings", "make_llm_views"]


def llm_settings(config: RunConfig) -> AnalystSettings:
    from research_lib.llm import AnalystSettings, Price

    llm = config.llm
    price = llm.prices.get(llm.model)
    return AnalystSettings(
        provider=llm.provider, model=llm.model, horizon_days=config.ml.horizon_days,
        price=Price(**price.model_dump()) if price else Price(0.0, 0.0, 0.0, 0.0),
        knowledge_cutoff=llm.cutoff, budget_usd=llm.budget_usd, mask=llm.mask,
        reasoning=llm.reasoning, max_tokens=llm.max_tokens, temperature=llm.temperature, batch=llm.batch,
        chunk_symbols=llm.chunk_symbols)


def _live_analyst(config: RunConfig) -> ClaudeAnalyst | None:
    """The Claude client when the provider may call it and a key is set; else None."""
    from research_lib.llm import API_KEY_ENV

    llm = config.llm
    if llm.provider not in ("auto", "anthropic") or not os.environ.get(API_KEY_ENV):
        return None
    from research_lib.llm import ClaudeAnalyst, make_client  # the SDK, only when it will be called

    return ClaudeAnalyst(make_client(llm.timeout_s), llm_settings(config), llm.max_retries)


def fit_llm_signals(folder: RunFolder) -> dict:
    """The analyst's views for every rebalance date, saved with their costs and evaluation.

    With ``llm.max_symbols``, each date asks about its most liquid symbols only (the others get no
    view). The estimate of requests, tokens and dollars is printed before anything is sent: it is
    the whole report of a dry run, and part of the report of a run that asks Claude.

    Returns ``{"result", "report"}`` (``result`` is None on a dry run, whose estimate is the report).
    """
    from research_lib.llm import ResponseCache, analyst_source, generate_views, prompt_tables

    config = folder.config
    close = folder.prices["close"]
    missing = [name for name in config.llm.inputs if name not in folder.features.columns]
    if missing:
        raise ConfigError(f"llm.inputs {missing} are not among the run's features (features.names), so the prompts "
                          "would have no column for them; add them to features.names or remove them from llm.inputs")
    tables, universe = _asked_symbols(prompt_tables(folder.features, rebalance_dates(close.index, config.llm.rebalance),
                                                    config.llm.inputs), folder)
    cache = ResponseCache(paths.state_db())
    settings = llm_settings(config)
    if config.llm.dry_run:  # no headlines: fetching them is a call too (their tokens are not counted)
        report = folder.write_report("llm", {"dry_run": _announce_estimate(tables, settings, cache), **universe})
        return {"result": None, "report": report}
    claude = _live_analyst(config)
    headlines = _headlines(config, tables)
    sends = analyst_source(settings, has_key=claude is not None) == "anthropic"
    estimate = _announce_estimate(tables, settings, cache, headlines) if sends else None
    result = generate_views(tables, settings, cache, claude, headlines=headlines)
    report = {**result.summary, **universe, "estimate": estimate, **_evaluate_llm(result, close, folder)}
    if config.llm.ablation:
        report["ablation"] = _masking_ablation(result, tables, settings, cache, claude, close, config)
    write_parquet(result.abstentions, folder.path("llm_abstentions.parquet"))
    write_parquet(result.requests, folder.path("llm_requests.parquet"))
    folder.write_report("llm", report)
    folder.save("views", result.views)
    return {"result": result, "report": report}


@produces("views")
def make_llm_views(folder: RunFolder) -> pd.DataFrame:
    result = fit_llm_signals(folder)["result"]
    if result is None:
        raise ConfigError("llm.dry_run is true, so the run has no analyst views to trade on; set llm.dry_run: false, "
                          "or use a strategy and portfolio.signal that do not need them (e.g. portfolio.signal: ml)")
    return result.views


def analyst_scores(folder: RunFolder) -> pd.DataFrame:
    """The analyst's expected excess returns (view dates x symbols)."""
    return folder.views.pivot(index="date", columns="symbol", values="expected_excess_return")


def _asked_symbols(tables: dict, folder: RunFolder) -> tuple[dict, dict]:
    """``tables`` cut to the ``llm.max_symbols`` most liquid symbols of each date (past dollar volume),
    and ``{"universe": what was done}`` for the report (``{}`` when every symbol is asked)."""
    max_symbols = folder.config.llm.max_symbols
    if max_symbols is None:
        return tables, {}
    from research_lib.llm import liquid_subset

    prices = folder.prices
    volume = prices["volume"] if "volume" in prices.columns.get_level_values(0) else None
    kept, universe = liquid_subset(tables, prices["close"], volume, max_symbols)
    if universe["dates_ranked_without_volume"]:
        print(f"llm.max_symbols: volume is missing on {universe['dates_ranked_without_volume']} of "
              f"{universe['dates_cut']} dates cut to the most liquid; {universe['fallback']}", flush=True)
    return kept, {"universe": universe}


def _announce_estimate(tables: dict, settings: AnalystSettings, cache: ResponseCache, headlines: dict | None = None) -> dict:
    """The estimate of requests, tokens and dollars of the whole run, printed before anything is sent."""
    from research_lib.llm import describe_estimate, estimate_backfill

    estimate = estimate_backfill(tables, settings, cache, headlines)
    print(describe_estimate(estimate), flush=True)
    return estimate


def _headlines(config: RunConfig, tables: dict) -> dict | None:
    """Headlines per analysis date from the configured news source (None: no headlines)."""
    if config.llm.headlines == "none" or not tables:
        return None
    from research_lib.llm import fetch_alpaca_headlines, headlines_by_date

    dates = sorted(tables)
    symbols = sorted({s for table in tables.values() for s in table.index})
    lookback = pd.Timedelta(days=config.llm.headline_lookback_days)
    found = fetch_alpaca_headlines(symbols, (dates[0] - lookback).to_pydatetime(),
                                   (dates[-1] + pd.Timedelta(days=1)).to_pydatetime())
    return headlines_by_date(found, dates, config.llm.headline_lookback_days, config.llm.max_headlines)


def ic_table(report: dict) -> pd.DataFrame:
    """The views' IC statistics before and after the knowledge cutoff, one column each. A part with no
    IC (no views dated there, or views that never differ across symbols on a date) has no column."""
    parts = {name: report[name] for name in ("ic_before_cutoff", "ic_after_cutoff") if report.get(name)}
    return pd.DataFrame(parts, dtype=float).round(4)


def _view_ic(result: LLMResult, close: pd.DataFrame, config: RunConfig) -> pd.Series:
    """Rank IC of the views' expected excess returns against the returns they could earn."""
    scores = result.scores()
    if scores.empty:  # no views: no IC, on a date index still (the cutoff split compares dates)
        return pd.Series(dtype=float, index=pd.DatetimeIndex([], name="date"))
    labels = forward_returns(close[scores.columns], config.ml.horizon_days,
                             config.backtest.execution_lag_sessions).reindex(scores.index)
    return information_coefficient(scores, labels, method="spearman", min_symbols=3)


def _view_ic_summary(ic: pd.Series, config: RunConfig) -> dict | None:
    """Views are formed every month (or week); their labels overlap by horizon / spacing."""
    spacing = {"monthly": 21, "weekly": 5}[config.llm.rebalance]
    return ic_summary(ic, horizon=max(1, -(-config.ml.horizon_days // spacing))) if len(ic) else None


def _evaluate_llm(result: LLMResult, close: pd.DataFrame, folder: RunFolder) -> dict:
    """IC of the views before and after the model's knowledge cutoff, and agreement with the ML signal."""
    config = folder.config
    ic = _view_ic(result, close, config)
    cutoff = pd.Timestamp(config.llm.cutoff)
    out = {"ic_before_cutoff": _view_ic_summary(ic[ic.index <= cutoff], config),
           "ic_after_cutoff": _view_ic_summary(ic[ic.index > cutoff], config)}
    agreement = None
    scores = result.scores()
    if not scores.empty and folder.is_fresh("signals"):  # agreement only with signals already fitted
        ml = folder.signals.reindex(index=scores.index, columns=scores.columns)
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
