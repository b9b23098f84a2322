"""The notebook stages of a research run, each reading and writing a `RunFolder`.

One module per stage: ``prices`` (01), ``features`` (02), ``ml`` (03), ``llm`` (04),
``portfolio`` and ``book`` (05), ``backtests`` and ``validation`` (06); ``strategies`` is the
table of the strategies a run can trade; ``paper`` (07) trades a promoted run's decisions for
one session and writes its report (import it as ``research_lib.stages.paper``: it loads the
brokers, which a research run does not need). Importing this package registers every stage as
the producer of its artifacts, so that a folder asked for a missing artifact makes it
through the stage that owns it (a downstream stage never imports an upstream one for that).
"""

from research_lib.stages.backtests import (backtest_strategies, candidate_weights, cost_stress, run_trials, tearsheet_title,
                                          validation_metrics)
from research_lib.stages.book import portfolio_snapshot
from research_lib.stages.features import build_run_features, compute_features, feature_inputs
from research_lib.stages.folder import ARTIFACTS, REPORTS, Artifact, RunFolder, config_key, produces
from research_lib.stages.llm import analyst_scores, fit_llm_signals, llm_settings
from research_lib.stages.ml import fit_ml_signals
from research_lib.stages.portfolio import build_weights, portfolio_signals, progress_printer, risk_layer_summary
from research_lib.stages.prices import context_symbols, load_run_prices
from research_lib.stages.strategies import STRATEGIES, Strategy, rule_weights
from research_lib.stages.validation import validate_strategy

__all__ = ["ARTIFACTS", "paper", "Artifact", "REPORTS", "RunFolder", "STRATEGIES", "Strategy", "analyst_scores",
           "backtest_strategies", "build_run_features", "build_weights", "candidate_weights", "compute_features",
           "config_key", "context_symbols", "cost_stress", "feature_inputs", "fit_llm_signals", "fit_ml_signals", "llm_settings",
           "load_run_prices", "portfolio_signals", "portfolio_snapshot", "produces", "progress_printer",
           "risk_layer_summary", "rule_weights", "run_trials", "tearsheet_title", "validate_strategy",
           "validation_metrics"]
