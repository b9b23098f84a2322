"""Portfolio construction: expected returns, risk models, optimizers, rebalancing, shares.

Conventions: prices are dates x symbols adjusted closes; returns and covariances are
annualized (252 sessions a year); weights are fractions of equity (``sum(w)`` is the net
exposure, 1 when fully invested); every estimate for a decision date uses only prices dated
at or before it. Optimizers are PyPortfolioOpt's, solved with CLARABEL by default;
`ReusedOptimizer` states the same problems once with cvxpy Parameters and re-solves them per date.

Also here: the portfolio's parameters (`PortfolioConfig` and its sections) and the baseline
strategies' rules and parameters (`StrategyConfig`, `baseline_weights`, `rebalance_dates`).

The names below are imported on first use: PyPortfolioOpt and cvxpy take over a second to
import, and `research_lib.config` needs only the light settings, types and constraints.
"""

from research_lib._lazy import lazy_exports

_WHERE = {
    "Allocation": "_allocation", "discrete_allocation": "_allocation", "rebalance_weights": "_allocation",
    "BlackLittermanViews": "_black_litterman", "black_litterman_posterior": "_black_litterman",
    "InfeasibleConstraintsError": "_constraints", "PortfolioConstraints": "_constraints",
    "expected_returns": "_inputs", "risk_matrix": "_inputs", "signal_expected_returns": "_inputs",
    "Method": "_types", "ReturnsModel": "_types", "RiskModel": "_types", "SignalSource": "_types",
    "RebalanceFrequency": "_types", "StrategyName": "_types",
    "PortfolioConfig": "_settings", "VolTargetConfig": "_settings", "CircuitBreakerConfig": "_settings",
    "DEFAULT_RISK_LIMITS": "_settings",
    "StrategyConfig": "_baselines", "baseline_weights": "_baselines", "rebalance_dates": "_baselines",
    "top_n_equal_weights": "_baselines",
    "optimize_weights": "_optimize", "ReusedOptimizer": "_problem", "FreshOptimizer": "_problem",
    "Construction": "_construct", "blend_scores": "_construct", "construct_portfolio": "_construct",
    "risk_contributions": "_construct", "efficient_frontier": "_construct", "book_exposures": "_construct",
    "estimates_at": "_construct", "Estimates": "_construct",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
