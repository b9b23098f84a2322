"""Target weights from expected returns and a covariance, through PyPortfolioOpt.

Weights are fractions of equity per symbol. A net exposure ``N > 0`` other than 1 is solved
as the fully invested problem in ``u = w / N`` (bounds, gross cap, targets and penalties
rescaled to match), since PyPortfolioOpt's objectives fix ``sum(w) == 1``; ``N == 0`` uses
its market-neutral mode (efficient_risk / efficient_return only).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pandas as pd
from pypfopt import EfficientFrontier, HRPOpt, objective_functions
from pypfopt.exceptions import OptimizationError

from research_lib.portfolio._black_litterman import BlackLittermanViews, black_litterman_posterior
from research_lib.portfolio._constraints import InfeasibleConstraintsError, PortfolioConstraints
from research_lib.portfolio._inputs import check_choice
from research_lib.portfolio._types import Method

_NEEDS_MU = ("max_sharpe", "efficient_risk", "efficient_return")


def _prepared(mu, cov, method: str, c: PortfolioConstraints, views, previous_weights):
    """The checked inputs of one optimization: ``mu`` and ``cov`` aligned, the gross scale of the
    weights (the net exposure) and the previous weights as an array over ``cov``'s symbols."""
    mu, cov = _aligned(mu, cov, method)
    _check_supported(method, c, views, previous_weights)
    c.check_feasible(len(cov))
    previous = None if previous_weights is None else previous_weights.reindex(cov.columns).fillna(0.0).to_numpy()
    return mu, cov, c.net_exposure or 1.0, previous


def _aligned(mu: pd.Series | None, cov: pd.DataFrame, method: str) -> tuple[pd.Series | None, pd.DataFrame]:
    if not isinstance(cov, pd.DataFrame) or list(cov.index) != list(cov.columns):
        raise TypeError("cov must be a square DataFrame with the same symbols as index and columns")
    if not np.isfinite(cov.to_numpy()).all():
        raise ValueError("cov contains NaN or inf; estimate it from prices without gaps")
    if mu is None:
        if method in _NEEDS_MU:
            raise ValueError(f"method={method!r} needs mu (expected returns); pass mu=expected_returns(...)")
        return None, cov
    if method == "black_litterman":
        raise ValueError("method='black_litterman' takes its prior from cov and views.market_caps; pass mu=None")
    if set(mu.index) != set(cov.columns) or mu.isna().any():
        raise ValueError(f"mu covers {sorted(mu.index)} but cov covers {sorted(cov.columns)} (or mu has NaN); "
                         "estimate both from the same prices")
    return mu.reindex(cov.columns).astype(float), cov


def check_finite_mu(mu: pd.Series | None, method: str) -> None:
    """Refuse infinite expected returns for a method that reads them (the solver cannot take them).

    Raised as `InfeasibleConstraintsError`, as PyPortfolioOpt's path reported them for
    efficient_risk / efficient_return, so a portfolio construction keeps the previous targets
    for that date (and says why) rather than stopping.
    """
    if mu is None or method not in (*_NEEDS_MU, "black_litterman"):
        return
    infinite = mu[~np.isfinite(mu.to_numpy(dtype=float))]
    if len(infinite):
        raise InfeasibleConstraintsError(
            f"mu (expected returns) is not finite for {infinite.to_dict()} with method={method!r}; no weights can "
            "be optimized on it: check the returns model's inputs (e.g. a price of 0 in the window)")


def _check_supported(method: str, c: PortfolioConstraints, views, previous_weights) -> None:
    if method == "hrp" and (c.side != "long_only" or c.max_weight < 1 or c.lower_bound > 0
                            or c.turnover_penalty or c.l2_gamma):
        raise ValueError("method='hrp' takes no weight bounds, shorts or penalties (only net_exposure); "
                         "use PortfolioConstraints(net_exposure=...) or another method")
    if c.net_exposure == 0 and method not in ("efficient_risk", "efficient_return"):
        raise ValueError(f"net_exposure=0 (market neutral) works with efficient_risk or efficient_return only, "
                         f"not method={method!r}")
    if 0 < c.net_exposure < 0.01:
        raise ValueError(f"net_exposure={c.net_exposure} is too close to 0 to rescale the problem by; "
                         "use 0 (market neutral) or at least 0.01")
    if (views is None) != (method != "black_litterman"):
        raise ValueError("views are required by method='black_litterman' and only by it")
    if c.turnover_penalty and previous_weights is None:
        raise ValueError("turnover_penalty needs previous_weights (a Series per symbol); pass them or set 0")
    if c.turnover_penalty and method in ("max_sharpe", "black_litterman"):
        raise ValueError("turnover_penalty cannot be used with max Sharpe (PyPortfolioOpt's variable change "
                         "breaks it); use method='efficient_risk' or l2_gamma instead")


def _frontier(mu, cov, c: PortfolioConstraints, scale: float, previous: np.ndarray | None,
              solver: str | None) -> EfficientFrontier:
    ef = EfficientFrontier(mu, cov, weight_bounds=(c.lower_bound / scale, c.max_weight / scale), solver=solver)
    if c.max_gross_exposure is not None:
        gross = c.max_gross_exposure / scale
        ef.add_constraint(lambda w: cp.norm1(w) <= gross)
    if c.l2_gamma:
        ef.add_objective(objective_functions.L2_reg, gamma=c.l2_gamma * scale**2)
    if c.turnover_penalty:
        ef.add_objective(objective_functions.transaction_cost, w_prev=previous / scale, k=c.turnover_penalty * scale)
    return ef


def _unreachable(solve, target: float, neutral: bool, name: str, scale: float) -> None:
    """Call an efficient_* method; its plain ValueError for an unreachable target becomes infeasibility."""
    try:
        solve(target, market_neutral=neutral)
    except ValueError as exc:
        raise InfeasibleConstraintsError(f"{name}={target * scale:g} cannot be reached by these assets ({exc}); "
                                         f"choose a {name} inside the frontier") from exc


def optimize_weights(mu: pd.Series | None, cov: pd.DataFrame, method: Method = "max_sharpe",
                     constraints: PortfolioConstraints | None = None, *, previous_weights: pd.Series | None = None,
                     target_volatility: float | None = None, target_return: float | None = None,
                     views: BlackLittermanViews | None = None, risk_free_rate: float = 0.0,
                     solver: str | None = "CLARABEL") -> pd.Series:
    """Optimal weights under ``constraints``.

    Parameters
    ----------
    mu : Series (symbols,) or None
        Annualized expected returns; needed by max_sharpe and efficient_*; must be None for
        black_litterman (its prior is market-implied).
    cov : DataFrame (symbols x symbols)
        Annualized covariance.
    method : {"max_sharpe", "min_volatility", "efficient_risk", "efficient_return", "hrp", "black_litterman"}
        ``efficient_risk`` maximizes return with volatility <= ``target_volatility``;
        ``efficient_return`` minimizes volatility with return >= ``target_return``;
        ``black_litterman`` maximizes the Sharpe ratio of the posterior of ``views``.
    constraints : PortfolioConstraints, optional
        Default: long-only, fully invested, no bounds beyond [0, 1].
    previous_weights : Series (symbols,), optional
        Current weights, for ``turnover_penalty``; missing symbols count as 0.
    risk_free_rate : float
        Annualized, for the Sharpe ratio.
    solver : str or None
        cvxpy solver; None is PyPortfolioOpt's default.

    Returns
    -------
    Series (symbols,)
        Weights; ``sum == net_exposure`` and every weight within its bounds (1e-6).

    Raises
    ------
    InfeasibleConstraintsError
        The constraints admit no weights (checked before solving when possible).
    """
    check_choice("method", method, Method)
    c = constraints or PortfolioConstraints()
    mu, cov, scale, previous = _prepared(mu, cov, method, c, views, previous_weights)
    if method == "hrp":
        raw = HRPOpt(cov_matrix=cov).optimize()
        return pd.Series(raw, name="weight").reindex(cov.columns) * scale
    if method == "black_litterman":
        mu, cov = black_litterman_posterior(cov, views, risk_free_rate)
    check_finite_mu(mu, method)
    ef = _frontier(mu, cov, c, scale, previous, solver)
    neutral = c.net_exposure == 0
    try:
        if method in ("max_sharpe", "black_litterman"):
            if not (ef.expected_returns > risk_free_rate).any():
                raise InfeasibleConstraintsError(
                    f"max Sharpe needs an asset whose expected return exceeds risk_free_rate={risk_free_rate}; "
                    f"the best is {ef.expected_returns.max() * scale:.4f}; use min_volatility, or other expected returns")
            ef.max_sharpe(risk_free_rate=risk_free_rate)
        elif method == "min_volatility":
            ef.min_volatility()
        elif method == "efficient_risk":
            if target_volatility is None:
                raise ValueError("method='efficient_risk' needs target_volatility (annualized, e.g. 0.15)")
            _unreachable(ef.efficient_risk, float(target_volatility) / scale, neutral, "target_volatility", scale)
        else:
            if target_return is None:
                raise ValueError("method='efficient_return' needs target_return (annualized, e.g. 0.08)")
            _unreachable(ef.efficient_return, float(target_return) / scale, neutral, "target_return", scale)
    except OptimizationError as exc:
        raise InfeasibleConstraintsError(f"the solver found no weights for method={method!r} under {c!r}: {exc}; "
                                         "loosen the bounds, exposures or targets") from exc
    except cp.error.SolverError as exc:
        raise InfeasibleConstraintsError(f"solver {solver!r} failed for method={method!r} under {c!r}; "
                                         "loosen the constraints or pass another solver, e.g. solver='SCS'") from exc
    return pd.Series(ef.weights * scale, index=cov.columns, name="weight")
