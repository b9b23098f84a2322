"""One optimizer problem per run, re-solved on every rebalance date.

PyPortfolioOpt builds and compiles a new cvxpy problem on every call, and compiling costs
far more than solving a 20-asset problem. `ReusedOptimizer` states each method's problem
once with cvxpy Parameters (the expected returns, a factor ``F`` of the covariance with
``F'F = cov``, the previous weights of a turnover penalty, the target) and re-solves it with
each date's values; cvxpy compiles a parametrized problem once and then only refills it.
The problems are PyPortfolioOpt's, term for term, so the optimum is the same within the
solver's tolerance (the covariance enters as ``|F w|^2`` rather than ``w' cov w``, a
different but equivalent form for the solver). Black-Litterman's posterior and HRP stay
PyPortfolioOpt's. Conventions as in `research_lib.portfolio._optimize`.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pandas as pd

from research_lib.portfolio._black_litterman import BlackLittermanViews, black_litterman_posterior
from research_lib.portfolio._constraints import InfeasibleConstraintsError, PortfolioConstraints
from research_lib.portfolio._inputs import check_choice
from research_lib.portfolio._optimize import _NEEDS_MU, _prepared, check_finite_mu, optimize_weights
from research_lib.portfolio._types import Method

__all__ = ["FreshOptimizer", "ReusedOptimizer", "covariance_factor"]

_SOLVED = ("optimal", "optimal_inaccurate")  # what PyPortfolioOpt accepts
FACTOR_PARAMETER_MAX_ASSETS = 60  # larger books state the variance anew each date (see _Problem)
COVARIANCE_TOLERANCE = 1e-8  # relative to the largest |eigenvalue| (or |entry|): rounding, not a real error


def covariance_factor(cov: np.ndarray) -> np.ndarray:
    """A matrix ``F`` with ``F.T @ F == cov`` (to rounding), also for a singular covariance:
    ``diag(sqrt(eigenvalues)) @ eigenvectors.T``.

    Negative eigenvalues no larger in magnitude than ``COVARIANCE_TOLERANCE`` times the largest
    eigenvalue's are rounding (a singular covariance computes a few at -1e-17) and are taken as 0.

    Raises
    ------
    InfeasibleConstraintsError
        ``cov`` is not symmetric, or has a materially negative eigenvalue (it is no covariance:
        no portfolio variance can be computed from it), beyond that tolerance.
    """
    cov = np.asarray(cov, dtype=float)
    scale = float(np.abs(cov).max()) if cov.size else 0.0
    asymmetry = float(np.abs(cov - cov.T).max()) if cov.size else 0.0
    if asymmetry > COVARIANCE_TOLERANCE * scale:
        raise InfeasibleConstraintsError(
            f"cov is not symmetric (cov - cov.T reaches {asymmetry:.3g}, its largest entry is {scale:.3g}); "
            "estimate the covariance with risk_matrix, or symmetrize it: (cov + cov.T) / 2")
    values, vectors = np.linalg.eigh(cov)
    largest = float(np.abs(values).max()) if values.size else 0.0
    if values.size and values.min() < -COVARIANCE_TOLERANCE * largest:
        raise InfeasibleConstraintsError(
            f"cov is not positive semidefinite (its lowest eigenvalue is {values.min():.3g}, its largest "
            f"{largest:.3g}): it is no covariance; estimate it with risk_matrix (e.g. 'ledoit_wolf'), or fix it "
            "with pypfopt.risk_models.fix_nonpositive_semidefinite")
    return np.sqrt(np.clip(values, 0.0, None))[:, None] * vectors.T


class _Problem:
    """One method's cvxpy problem for ``n`` assets; ``solve`` sets its Parameters and solves.

    Up to `FACTOR_PARAMETER_MAX_ASSETS` assets the covariance is a Parameter (its factor ``F``) and
    the problem is compiled once. Beyond, the solver's time on a dense ``n x n`` factor grows far
    past the compile time saved (500 assets: about 2 s a solve against 0.25 s), so each solve states
    the variance as ``w' cov w`` with that date's covariance (a quadratic objective the solver takes
    directly) and compiles anew; both forms give the same optimum within the solver's tolerance.
    """

    def __init__(self, method: str, n: int, c: PortfolioConstraints, scale: float, solver: str | None):
        self.method, self.solver, self.c, self.scale = method, solver, c, scale
        self.mu = cp.Parameter(n, name="mu")  # the excess return over the risk-free rate for max Sharpe
        self.previous = cp.Parameter(n, name="previous_weights")
        self.target = cp.Parameter(name="target", nonneg=method == "efficient_risk")
        self.w, self.k = cp.Variable(n), cp.Variable()
        self.factor = cp.Parameter((n, n), name="cov_factor") if n <= FACTOR_PARAMETER_MAX_ASSETS else None
        self.problem = self._stated(cp.sum_squares(self.factor @ self.w)) if self.factor is not None else None

    def _stated(self, variance) -> cp.Problem:
        """PyPortfolioOpt's problem for this method, with ``variance`` the portfolio variance of ``w``."""
        method, c, scale = self.method, self.c, self.scale
        lower, upper = c.lower_bound / scale, c.max_weight / scale
        neutral = c.net_exposure == 0
        if neutral and lower >= 0:  # PyPortfolioOpt widens the bounds when market neutral needs shorts
            lower, upper = -1.0, 1.0
        extra = 0
        if c.l2_gamma:
            extra = extra + c.l2_gamma * scale**2 * cp.sum_squares(self.w)
        if c.turnover_penalty:
            extra = extra + c.turnover_penalty * scale * cp.norm1(self.w - self.previous)
        gross = None if c.max_gross_exposure is None else c.max_gross_exposure / scale
        if method == "max_sharpe":  # PyPortfolioOpt's variable change: w = k * weights, excess return 1
            w, k = self.w, self.k
            constraints = [self.mu @ w == 1, cp.sum(w) == k, k >= 0, w >= lower * k, w <= upper * k]
            if gross is not None:
                constraints.append(cp.norm1(w) <= gross * k)
            objective = variance + extra
        else:
            constraints = [self.w >= lower, self.w <= upper, cp.sum(self.w) == (0.0 if neutral else 1.0)]
            if gross is not None:
                constraints.append(cp.norm1(self.w) <= gross)
            if method in ("efficient_risk", "max_return"):
                objective = -(self.mu @ self.w) + extra
                if method == "efficient_risk":
                    constraints.append(variance <= self.target)
            else:
                objective = variance + extra
                if method == "efficient_return":
                    constraints.append(self.mu @ self.w >= self.target)
        return cp.Problem(cp.Minimize(objective), constraints)

    def solve(self, mu: np.ndarray | None, factor: np.ndarray, previous: np.ndarray | None,
              target: float | None) -> np.ndarray | None:
        """The weights (``sum == 1`` or 0, before rescaling), or None when the solver finds none."""
        self.mu.value = np.zeros(self.mu.shape) if mu is None else mu
        if self.factor is not None:
            self.factor.value = factor
        else:  # F'F is the covariance, positive semidefinite to rounding (covariance_factor clipped it)
            self.problem = self._stated(cp.quad_form(self.w, cp.psd_wrap(factor.T @ factor)))
        self.previous.value = np.zeros(self.previous.shape) if previous is None else previous
        self.target.value = 0.0 if target is None else target  # every Parameter needs a value, used or not
        # No warm start: cvxpy would otherwise update the last date's solver in place (Clarabel) or
        # start from its solution (OSQP), and a date's weights would depend on the date before.
        self.problem.solve(solver=self.solver, warm_start=False)
        if self.problem.status not in _SOLVED:
            return None
        if self.method == "max_sharpe":
            return (self.w.value / self.k.value).round(16) + 0.0  # +0.0: no signed zeros, as PyPortfolioOpt
        return self.w.value.round(16) + 0.0


class ReusedOptimizer:
    """`optimize_weights` with one method and one set of constraints, over many dates.

    Each problem is built on first use for its number of assets and kept; a later date
    with as many assets re-solves it with that date's values only, so nothing of one date
    (expected returns, covariance, previous weights, target) reaches another.

    Parameters
    ----------
    method : {"max_sharpe", "min_volatility", "efficient_risk", "efficient_return", "hrp", "black_litterman"}
    constraints : PortfolioConstraints, optional
    target_volatility, target_return, risk_free_rate, solver
        As in `optimize_weights`.
    """

    def __init__(self, method: Method = "max_sharpe", constraints: PortfolioConstraints | None = None, *,
                 target_volatility: float | None = None, target_return: float | None = None,
                 risk_free_rate: float = 0.0, solver: str | None = "CLARABEL"):
        check_choice("method", method, Method)
        self.method, self.constraints = method, constraints or PortfolioConstraints()
        self.target_volatility, self.target_return = target_volatility, target_return
        self.risk_free_rate, self.solver = risk_free_rate, solver
        self._problems: dict[tuple[str, int], _Problem] = {}

    def _problem(self, method: str, n: int) -> _Problem:
        key = (method, n)
        if key not in self._problems:
            c = self.constraints
            self._problems[key] = _Problem(method, n, c, c.net_exposure or 1.0, self.solver)
        return self._problems[key]

    def weights(self, mu: pd.Series | None, cov: pd.DataFrame, *, previous_weights: pd.Series | None = None,
                views: BlackLittermanViews | None = None) -> pd.Series:
        """The weights `optimize_weights` gives for these inputs (within the solver's tolerance).

        Raises `InfeasibleConstraintsError` in the same cases, and the same input errors.
        """
        method, c = self.method, self.constraints
        if method == "hrp":  # no cvxpy problem to keep
            return optimize_weights(mu, cov, method, c, previous_weights=previous_weights)
        mu, cov, scale, previous = _prepared(mu, cov, method, c, views, previous_weights)
        if method == "black_litterman":
            mu, cov = black_litterman_posterior(cov, views, self.risk_free_rate)
            method = "max_sharpe"
        covariance = cov.to_numpy(dtype=float)
        check_finite_mu(mu, method)
        returns = mu.to_numpy(dtype=float) if method in _NEEDS_MU else None  # other methods read no mu
        factor = covariance_factor(covariance)
        target = self._target(method, returns, covariance, scale)
        if method == "max_sharpe":
            returns = returns - self.risk_free_rate
        raw = self._solved(self._problem(method, len(cov)), returns, factor,
                           None if previous is None else previous / scale, target)
        return pd.Series(raw * scale, index=cov.columns, name="weight")

    def _solved(self, problem: _Problem, *values) -> np.ndarray:
        """The problem's weights for these values; a solver that fails or finds none is
        `InfeasibleConstraintsError`, with the reasons PyPortfolioOpt's path gives (the status)."""
        c = self.constraints
        try:
            raw = problem.solve(*values)
        except cp.error.SolverError as exc:
            raise InfeasibleConstraintsError(
                f"solver {self.solver!r} failed for method={self.method!r} under {c!r}; "
                "loosen the constraints or pass another solver, e.g. solver='SCS'") from exc
        if raw is None:
            raise InfeasibleConstraintsError(
                f"the solver found no weights for method={self.method!r} under {c!r}: Solver status: "
                f"{problem.problem.status}; loosen the bounds, exposures or targets")
        return raw

    def _target(self, method: str, mu: np.ndarray | None, cov: np.ndarray, scale: float) -> float | None:
        """The problem's target (variance or return, rescaled), refused as PyPortfolioOpt refuses it."""
        if method == "max_sharpe":
            if not (mu > self.risk_free_rate).any():
                raise InfeasibleConstraintsError(
                    f"max Sharpe needs an asset whose expected return exceeds risk_free_rate={self.risk_free_rate}; "
                    f"the best is {mu.max() * scale:.4f}; use min_volatility, or other expected returns")
            return None
        if method == "efficient_risk":
            if self.target_volatility is None:
                raise ValueError("method='efficient_risk' needs target_volatility (annualized, e.g. 0.15)")
            volatility = float(self.target_volatility) / scale
            lowest = np.sqrt(1 / np.sum(np.linalg.pinv(cov)))  # PyPortfolioOpt's check, bounds ignored
            if volatility < 0 or volatility < lowest:
                raise InfeasibleConstraintsError(  # PyPortfolioOpt's words inside the parentheses
                    f"target_volatility={volatility * scale:g} cannot be reached by these assets (The minimum "
                    f"volatility is {lowest * scale:.3f}. Please use a higher target_volatility); choose a "
                    "target_volatility inside the frontier")
            return volatility**2
        if method == "efficient_return":
            if self.target_return is None:
                raise ValueError("method='efficient_return' needs target_return (annualized, e.g. 0.08)")
            wanted = float(self.target_return) / scale
            best = self._max_return(mu)
            if wanted > best:
                raise InfeasibleConstraintsError(
                    f"target_return={wanted * scale:g} cannot be reached by these assets (target_return must be "
                    f"lower than the maximum possible return, {best * scale:.4f}); choose a target_return inside "
                    "the frontier")
            return wanted
        return None

    def _max_return(self, mu: np.ndarray) -> float:
        """The highest return of a fully invested book within the bounds (PyPortfolioOpt's check)."""
        c = self.constraints
        fully_invested = c.model_copy(update={"net_exposure": 1.0, "l2_gamma": 0.0, "turnover_penalty": 0.0})
        key = ("max_return", len(mu))
        if key not in self._problems:
            self._problems[key] = _Problem("max_return", len(mu), fully_invested, c.net_exposure or 1.0, self.solver)
        raw = self._solved(self._problems[key], mu, np.zeros((len(mu), len(mu))), None, None)
        return float(mu @ raw)


class FreshOptimizer(ReusedOptimizer):
    """The same interface over `optimize_weights`: PyPortfolioOpt builds a new problem per call."""

    def weights(self, mu: pd.Series | None, cov: pd.DataFrame, *, previous_weights: pd.Series | None = None,
                views: BlackLittermanViews | None = None) -> pd.Series:
        """`optimize_weights` with this optimizer's method, constraints and targets."""
        return optimize_weights(mu, cov, self.method, self.constraints, previous_weights=previous_weights,
                                target_volatility=self.target_volatility, target_return=self.target_return,
                                views=views, risk_free_rate=self.risk_free_rate, solver=self.solver)
