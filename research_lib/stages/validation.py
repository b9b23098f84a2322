"""Stage 06, second half (``06_validate_strategy``): whether the headline strategy's numbers are
luck, and the promotion gate's verdict (``validation.json``, ``validation.html``).

The stage only gathers: the run's trials and cost-stressed backtests (`stages.backtests`), the
workspace's trial registry, the sweep the strategy was chosen from (``validation.sweep``, when
set) and the gate's thresholds; the statistics are made by `research_lib.validation.evidence`
from plain series and numbers. The sweep adds a section to the record and the page; the gate's
inputs stay those of the run's own trials.
"""

from __future__ import annotations

import pandas as pd

from research_lib import paths
from research_lib._io import git_commit, write_json
from research_lib.backtest import BacktestResult
from research_lib.config import RunConfig
from research_lib.hedging import MODELLED_LABEL, HedgeInputError, hedge_overlay
from research_lib.reports.validation_page import write_validation_page
from research_lib.stages.backtests import cost_stress, run_trials
from research_lib.stages.folder import RunFolder
from research_lib.stages.strategies import judged_after_cutoff
from research_lib.validation import evidence, registry
from research_lib.validation.metrics import hedge_summary
from research_lib.validation.promotion import evaluate_gate, load_thresholds, verdict

__all__ = ["VALIDATION_HTML", "VALIDATION_JSON", "check_sweep_recorded", "hedge_section", "sweep_section",
           "validate_strategy"]

VALIDATION_JSON = "validation.json"
VALIDATION_HTML = "validation.html"


def check_sweep_recorded(sweep_id: str) -> None:
    """Raise `registry.UnknownSweep` (a ConfigError) when no sweep ``sweep_id`` is recorded: what
    ``spartan run`` checks of ``validation.sweep`` before it starts."""
    db = paths.state_db()
    if not (db.is_file() and sweep_id in set(registry.list_sweeps(db)["id"])):
        raise registry.UnknownSweep(f"validation.sweep: no sweep {sweep_id!r} in the registry {db}; "
                                    "registry.list_sweeps(paths.state_db()) shows the recorded ones and their ids.")


def validate_strategy(folder: RunFolder, results: dict[str, BacktestResult], metrics: dict) -> dict:
    """The statistics that say whether the headline strategy's numbers are luck, and the gate's verdict.

    Records every trial of the run in the workspace's sweep registry first, so the deflated
    Sharpe counts them; writes ``validation.json`` and ``validation.html`` into the run folder.

    Raises
    ------
    registry.UnknownSweep
        ``validation.sweep`` names no recorded sweep (a ConfigError).
    registry.SweepFileError
        the sweep's returns matrix is missing or corrupted.
    """
    config, prices, run_dir = folder.config, folder.prices, folder.run_dir
    main = metrics["strategy_name"]
    llm_report = folder.report("llm")
    db = paths.state_db()
    # the sweep first: a mistyped id or a corrupted matrix stops the stage before it records anything
    chosen_from = registry.load_sweep(db, config.validation.sweep) if config.validation.sweep else None
    trials = run_trials(folder, results)
    registry.record_trials(db, run_dir.name, "research", trials)
    trial_stats = registry.trial_statistics(db)
    thresholds = load_thresholds()
    returns, judged_on = evidence.judged_returns(results[main].returns, cutoff=config.llm.cutoff, model=config.llm.model,
                                                 after_cutoff_only=judged_after_cutoff(config, main, llm_report))
    stress = cost_stress(folder, results, main, returns.index, thresholds.cost_stress_multiple)
    benchmark = prices["close"][config.data.benchmark].pct_change(fill_method=None)
    stats = evidence.run_statistics(returns, evidence.trial_matrix(trials, returns.index), trial_stats, thresholds,
                                    benchmark, config.sessions_per_year)
    sweep = sweep_section(chosen_from, stats["moments"], config.sessions_per_year) if chosen_from else None
    gate_stats = evidence.gate_inputs(returns, stats, trial_stats, stress, thresholds)
    report = evidence.validation_record(
        strategy=main, run_id=run_dir.name, judged_on=judged_on, gate_stats=gate_stats,
        verdict=verdict(evaluate_gate(gate_stats, thresholds)), thresholds=thresholds, stats=stats,
        trial_stats=trial_stats, trial_names=list(trials), stress=stress, llm=evidence.llm_summary(llm_report, metrics),
        provenance={"code": git_commit(paths.workspace_root()),
                    "data_sha256": (prices.attrs.get("provenance") or {}).get("sha256"),
                    "params": config.model_dump(mode="json")}, sweep=sweep)
    report["market"] = config.data.market_label()  # None: real prices
    report["hedge"] = hedge_section(returns, prices["close"], config)
    write_json(run_dir / VALIDATION_JSON, report)
    write_validation_page(report, run_dir / VALIDATION_HTML)
    return report


def sweep_section(loaded: registry.LoadedSweep, moments: dict | None, periods_per_year: int = 252) -> dict:
    """The record's "sweep" section: the sweep's identity, and PBO and DSR over it (``moments``: the
    headline strategy's `statistics.sharpe_moments`, None when too short to judge)."""
    return {"id": loaded.id, "family": loaded.family, "created_at": loaded.created_at, "params": list(loaded.params),
            **evidence.sweep_statistics(loaded.returns, len(loaded.table), moments, periods_per_year=periods_per_year)}


def hedge_section(returns: pd.Series, close: pd.DataFrame, config: RunConfig) -> dict | None:
    """The record's "hedge" section: ``returns`` with and without puts (or a collar) on
    ``data.benchmark``, what the options cost, the parameters and the modelled-prices label; None
    when ``hedge.kind`` is none.

    ``close`` is the run's closes (sessions x symbols), from before ``returns`` start so realized
    volatility has history. With ``hedge.volatility: vix`` the ``features.vix_symbol`` column
    prices the options where the run loaded it (`stages.prices.context_symbols`), realized
    volatility elsewhere. Data the overlay cannot price (`HedgeInputError`: the index lacks a
    judged session, too short a history) leave the reason in ``error``: the page says why, the
    rest of the validation stands.
    """
    hedge = config.hedge
    if hedge.kind == "none":
        return None
    vix_symbol = config.features.vix_symbol
    vix = close[vix_symbol] if hedge.volatility == "vix" and vix_symbol in close.columns else None
    section = {"index": config.data.benchmark, "vix_symbol": vix_symbol if vix is not None else None,
               "config": hedge.model_dump(mode="json"), "label": MODELLED_LABEL}
    try:
        result = hedge_overlay(returns, close[config.data.benchmark], hedge, vix, config.sessions_per_year)
    except HedgeInputError as err:
        return {**section, "error": str(err)}
    return {**section, **hedge_summary(result, config.sessions_per_year), "rolls": len(result.rolls),
            "volatility_source_days": result.volatility_source_days}
