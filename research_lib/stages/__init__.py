"""The notebook stages of a research run, each reading and writing a `RunFolder`.

One module per stage: ``prices`` (01), ``features`` (02), ``ml`` (03), ``llm`` (04),
``portfolio`` and ``book`` (05), ``backtests`` and ``validation`` (06); ``strategies`` is the
table of the strategies a run can trade; ``paper`` (07) trades a promoted run's decisions for
one session and writes its report (it loads the brokers, which a research run does not need).
A folder asked for a missing artifact imports the stage that owns it (named in
``folder.ARTIFACTS``), which registers itself as its producer: a downstream stage never imports
an upstream one for that. Names load on first use, so a notebook loads only the stages (and
their libraries) it uses.
"""

from research_lib._lazy import lazy_exports

_WHERE = {
    "backtest_strategies": "backtests", "candidate_weights": "backtests", "cost_stress": "backtests",
    "run_trials": "backtests", "tearsheet_title": "backtests", "validation_metrics": "backtests",
    "portfolio_snapshot": "book", "build_run_features": "features", "compute_features": "features",
    "feature_inputs": "features", "ARTIFACTS": "folder", "REPORTS": "folder", "Artifact": "folder",
    "RunFolder": "folder", "config_key": "folder", "produces": "folder", "analyst_scores": "llm",
    "fit_llm_signals": "llm", "ic_table": "llm", "llm_settings": "llm", "fit_ml_signals": "ml", "build_weights": "portfolio",
    "portfolio_signals": "portfolio", "risk_layer_summary": "portfolio", "risk_event_tables": "portfolio",
    "context_symbols": "prices", "load_run_prices": "prices", "STRATEGIES": "strategies", "Strategy": "strategies",
    "rule_weights": "strategies", "validate_strategy": "validation",
}
_MODULES = ("backtests", "book", "features", "folder", "llm", "ml", "paper", "portfolio", "prices", "strategies",
            "validation")

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, _MODULES)
