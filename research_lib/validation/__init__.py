"""Validation: whether a backtest's headline numbers survive the skeptic.

- ``metrics``: headline performance of a returns series (CAGR, Sharpe, drawdown, win rate).
- ``statistics``: PSR, DSR, PBO, bootstrap intervals, walk-forward selection, breakdowns.
- ``sweep``: many configurations of a strategy, each a trial.
- ``registry``: every trial the workspace ran, so DSR counts them all.
- ``promotion``: the gate's thresholds, its verdict and the promoted record it writes.

The statistics are importable from the package itself (``validation.probabilistic_sharpe_ratio``).
"""

from research_lib._lazy import lazy_exports

_STATISTICS = ("bootstrap_sharpe_interval", "breakdown_by_regime", "breakdown_by_year", "deflated_sharpe_ratio",
               "expected_max_sharpe", "is_flat", "minimum_track_record_length", "probabilistic_sharpe_ratio",
               "probability_of_backtest_overfitting", "sharpe_moments", "walk_forward_selection")
_WHERE = dict.fromkeys(_STATISTICS, "statistics")

_MODULES = ("evidence", "metrics", "promotion", "registry", "statistics", "sweep")

__all__ = sorted([*_STATISTICS, *_MODULES])

# Names load on first use: paper trading reads the promoted record without loading scipy.
__getattr__, __dir__ = lazy_exports(__name__, _WHERE, _MODULES)
