"""Portfolio construction: expected returns, risk models, optimizers, rebalancing, shares.

Conventions: prices are dates x symbols adjusted closes; returns and covariances are
annualized (252 sessions a year); weights are fractions of equity (``sum(w)`` is the net
exposure, 1 when fully invested); every estimate for a decision date uses only prices dated
at or before it. Optimizers are PyPortfolioOpt's, solved with CLARABEL by default.
"""

from research_lib.portfolio._allocation import Allocation, discrete_allocation, rebalance_weights
from research_lib.portfolio._black_litterman import BlackLittermanViews, black_litterman_posterior
from research_lib.portfolio._constraints import InfeasibleConstraintsError, PortfolioConstraints
from research_lib.portfolio._inputs import (ReturnsModel, RiskModel, expected_returns, risk_matrix,
                                            signal_expected_returns)
from research_lib.portfolio._optimize import Method, optimize_weights

__all__ = ["Allocation", "BlackLittermanViews", "InfeasibleConstraintsError", "Method", "PortfolioConstraints",
           "ReturnsModel", "RiskModel", "black_litterman_posterior", "discrete_allocation", "expected_returns",
           "optimize_weights", "rebalance_weights", "risk_matrix", "signal_expected_returns"]
