"""The optimizer's problem built once and re-solved per date gives what a freshly built one gives.

Oracle: `optimize_weights` (PyPortfolioOpt, a new cvxpy problem per call). The rule a user relies
on: on any inputs, `ReusedOptimizer` reaches the same optimum (its objective within the solver's
tolerance; weights too, up to flat optima), refuses the same inputs, and no value of one date
reaches the next.
"""

from __future__ import annotations

from unittest.mock import patch

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research_lib.portfolio import (DEFAULT_RISK_LIMITS, InfeasibleConstraintsError, PortfolioConfig,
                                    PortfolioConstraints, construct_portfolio, optimize_weights, rebalance_dates)
from research_lib.portfolio import _problem as problem_module
from research_lib.portfolio._problem import ReusedOptimizer, covariance_factor

LONG = PortfolioConstraints(max_weight=0.4)
CASES = {  # method -> (constraints, targets): every constraint of PortfolioConstraints is used by one
    "max_sharpe": (PortfolioConstraints(max_weight=0.5, l2_gamma=0.05), {}),
    "max_sharpe_long_short": (PortfolioConstraints(side="long_short", max_weight=0.6, max_gross_exposure=1.5), {}),
    "min_volatility": (PortfolioConstraints(max_weight=0.5, net_exposure=0.9, turnover_penalty=0.002), {}),
    "efficient_risk": (PortfolioConstraints(side="long_short", max_weight=0.5, net_exposure=0.0,
                                            max_gross_exposure=1.5), {"target_volatility": 0.12}),
    "efficient_return": (PortfolioConstraints(max_weight=0.6, l2_gamma=0.02), {"target_return": 0.06}),
}


def _problem(n: int, seed: int, rank: int | None = None) -> tuple[pd.Series, pd.DataFrame]:
    """Annualized (mu, cov) of ``n`` assets; ``rank`` < n makes the covariance singular."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0.0, 0.15, size=(n, rank or 3))
    cov = loadings @ loadings.T + (0.0 if rank else np.diag(rng.uniform(0.01, 0.06, n)))
    symbols = [f"S{i}" for i in range(n)]
    return pd.Series(rng.normal(0.06, 0.06, n), index=symbols), pd.DataFrame(cov, index=symbols, columns=symbols)


def _objective(method: str, w: pd.Series, mu: pd.Series, cov: pd.DataFrame, c: PortfolioConstraints,
               previous: pd.Series) -> float:
    """The quantity each method optimizes (lower is better), penalties included."""
    variance = float(w @ cov @ w)
    scale = c.net_exposure or 1.0
    penalty = c.l2_gamma * float((w**2).sum()) + c.turnover_penalty * float((w - previous).abs().sum()) / scale
    if method.startswith("max_sharpe"):
        return -float(mu @ w) / np.sqrt(variance)
    if method == "efficient_risk":
        return -float(mu @ w) / scale + penalty
    return variance / scale**2 + penalty


def _both(case: str, mu, cov, previous):
    """(fresh result, reused result); an InfeasibleConstraintsError is returned as its type."""
    constraints, targets = CASES[case]
    method = case.removesuffix("_long_short")
    out = []
    for solve in (lambda: optimize_weights(mu, cov, method, constraints, previous_weights=previous, **targets),
                  lambda: ReusedOptimizer(method, constraints, **targets).weights(mu, cov, previous_weights=previous)):
        try:
            out.append(solve())
        except InfeasibleConstraintsError:
            out.append(InfeasibleConstraintsError)
    return out


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(sorted(CASES)), n=st.integers(3, 8), seed=st.integers(0, 10_000),
       singular=st.booleans(), stated_anew=st.booleans())
def test_reused_problem_reaches_the_fresh_problems_optimum(case, n, seed, singular, stated_anew):
    """Both forms of the variance: a covariance Parameter, and (``stated_anew``, what books of more
    than FACTOR_PARAMETER_MAX_ASSETS assets use) ``w' cov w`` stated with each date's covariance."""
    mu, cov = _problem(n, seed, rank=2 if singular else None)
    previous = pd.Series(np.random.default_rng(seed).dirichlet(np.ones(n)), index=mu.index)
    limit = 0 if stated_anew else problem_module.FACTOR_PARAMETER_MAX_ASSETS
    with patch.object(problem_module, "FACTOR_PARAMETER_MAX_ASSETS", limit):
        fresh, reused = _both(case, mu, cov, previous)
    _assert_same_optimum(case, fresh, reused, mu, cov, previous, singular)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_large_book_reaches_the_fresh_problems_optimum(case):
    n = problem_module.FACTOR_PARAMETER_MAX_ASSETS + 20
    mu, cov = _problem(n, 11)
    previous = pd.Series(1.0 / n, index=mu.index)
    fresh, reused = _both(case, mu, cov, previous)
    _assert_same_optimum(case, fresh, reused, mu, cov, previous, singular=False)


def _assert_same_optimum(case, fresh, reused, mu, cov, previous, singular):
    if fresh is InfeasibleConstraintsError or reused is InfeasibleConstraintsError:
        assert fresh is reused, f"one problem found weights, the other none: {fresh!r} vs {reused!r}"
        return
    c = CASES[case][0]
    assert list(reused.index) == list(cov.columns)
    assert reused.sum() == pytest.approx(c.net_exposure, abs=1e-6)
    assert (reused <= c.max_weight + 1e-6).all() and (reused >= c.lower_bound - 1e-6).all()
    if c.max_gross_exposure is not None:
        assert reused.abs().sum() <= c.max_gross_exposure + 1e-6
    if case.startswith("max_sharpe") and float(fresh @ cov @ fresh) < 1e-8:
        # A singular covariance may hold a riskless book with a positive return: the Sharpe ratio
        # is unbounded and any riskless book is optimal; both must find one.
        assert float(reused @ cov @ reused) < 1e-8
        return
    f, r = (_objective(case, w, mu, cov, c, previous) for w in (fresh, reused))
    assert r == pytest.approx(f, rel=1e-5, abs=1e-7), "the reused problem stops at another optimum"
    if not singular:  # a singular covariance may leave a flat optimum: many weights, one objective
        np.testing.assert_allclose(reused, fresh, atol=2e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_value_of_one_date_leaks_into_the_next(case):
    constraints, targets = CASES[case]
    optimizer = ReusedOptimizer(case.removesuffix("_long_short"), constraints, **targets)
    (mu_a, cov_a), (mu_b, cov_b) = _problem(6, 1), _problem(6, 2)
    prev_a, prev_b = pd.Series(1 / 6, index=mu_a.index), pd.Series([0.5, 0.5, 0, 0, 0, 0], index=mu_a.index)
    first = optimizer.weights(mu_a, cov_a, previous_weights=prev_a)
    other = optimizer.weights(mu_b, cov_b, previous_weights=prev_b)
    again = optimizer.weights(mu_a, cov_a, previous_weights=prev_a)
    assert {method for method, _ in optimizer._problems} <= {case.removesuffix("_long_short"), "max_return"}, \
        "the same number of assets re-solves the one problem (and efficient_return's highest-return check)"
    assert (first - other).abs().max() > 1e-3, "the second date's inputs were not used"
    np.testing.assert_allclose(again, first, atol=1e-12, rtol=0)


def test_another_universe_size_gets_its_own_problem_and_the_old_one_is_kept():
    optimizer = ReusedOptimizer("min_volatility", LONG)
    small, large = _problem(4, 3), _problem(7, 4)
    first = optimizer.weights(*small)
    optimizer.weights(*large)
    np.testing.assert_allclose(optimizer.weights(*small), first, atol=1e-12, rtol=0)
    assert sorted(n for _, n in optimizer._problems) == [4, 7]


def test_hostile_inputs_are_refused_as_the_fresh_optimizer_refuses_them():
    mu, cov = _problem(5, 7)
    with pytest.raises(InfeasibleConstraintsError, match="exceeds risk_free_rate"):
        ReusedOptimizer("max_sharpe", LONG).weights(-mu.abs() - 0.01, cov)  # every expected return negative
    with pytest.raises(InfeasibleConstraintsError, match="target_return=5 cannot be reached"):
        ReusedOptimizer("efficient_return", LONG, target_return=5.0).weights(mu, cov)
    with pytest.raises(InfeasibleConstraintsError, match="target_volatility=0.001 cannot be reached"):
        ReusedOptimizer("efficient_risk", LONG, target_volatility=0.001).weights(mu, cov)
    with pytest.raises(InfeasibleConstraintsError, match="max_weight"):
        ReusedOptimizer("min_volatility", PortfolioConstraints(max_weight=0.1)).weights(mu, cov)  # 5 x 0.1 < 1
    nan_cov = cov.copy()
    nan_cov.iloc[0, 1] = np.nan
    with pytest.raises(ValueError, match="cov contains NaN"):
        ReusedOptimizer("min_volatility", LONG).weights(mu, nan_cov)
    with pytest.raises(ValueError, match="mu has NaN"):
        ReusedOptimizer("max_sharpe", LONG).weights(mu.where(mu.index != "S2"), cov)
    with pytest.raises(ValueError, match="method is 'max_sharp'; choose one of"):
        ReusedOptimizer("max_sharp", LONG)


def test_a_singular_covariance_has_an_exact_factor():
    _, cov = _problem(6, 5, rank=2)
    factor = covariance_factor(cov.to_numpy())
    np.testing.assert_allclose(factor.T @ factor, cov.to_numpy(), atol=1e-14)


def _small_market(n_assets: int = 4, sessions: int = 320) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    returns = rng.normal(0.0004, 0.012, size=(sessions, n_assets))
    index = pd.bdate_range("2020-01-01", periods=sessions)
    close = pd.DataFrame(100 * np.exp(np.cumsum(returns, axis=0)), index=index, columns=list("ABCD"))
    close.iloc[:150, 3] = np.nan  # D lists later: the universe grows, so a second problem size is built
    return close


def test_construction_with_the_reused_problem_matches_and_shows_progress(monkeypatch, capsys):
    close = _small_market()
    dates = rebalance_dates(close.index, "monthly")[3:]
    settings = PortfolioConfig(signal="momentum", method="max_sharpe", returns_model="mean_historical",
                               lookback_days=60, constraints=PortfolioConstraints(max_weight=0.6))
    fresh = construct_portfolio(close, dates, settings, DEFAULT_RISK_LIMITS, reuse_problem=False)
    monkeypatch.setenv("SPARTAN_PROGRESS", "1")
    reused = construct_portfolio(close, dates, settings, DEFAULT_RISK_LIMITS, reuse_problem=True)
    assert "month-end optimizations" in capsys.readouterr().err
    assert fresh.notes.equals(reused.notes)
    np.testing.assert_allclose(reused.optimizer_weights, fresh.optimizer_weights, atol=1e-6)
    np.testing.assert_allclose(reused.weights, fresh.weights, atol=1e-6)


# --- hostile inputs after the review of issue 15: refused as the fresh path refused them ----------------

def _refusal(solve) -> str:
    """The reason an optimizer refuses, as construct_portfolio notes it (any other error fails the test)."""
    with pytest.raises(InfeasibleConstraintsError) as raised:
        solve()
    return str(raised.value)


@pytest.mark.parametrize("value", [np.inf, -np.inf, 1e300])
@pytest.mark.parametrize("method, targets", [("max_sharpe", {}), ("efficient_risk", {"target_volatility": 0.2}),
                                             ("efficient_return", {"target_return": 0.06})])
def test_infinite_or_huge_expected_returns_are_infeasible_not_a_crash(method, targets, value):
    mu, cov = _problem(4, 11)
    mu.iloc[0] = value
    optimizer = ReusedOptimizer(method, PortfolioConstraints(max_weight=1.0), **targets)
    reason = _refusal(lambda: optimizer.weights(mu, cov))
    if not np.isfinite(value):
        assert "mu (expected returns) is not finite for {'S0':" in reason
    _refusal(lambda: optimize_weights(mu, cov, method, PortfolioConstraints(max_weight=1.0), **targets))
    # the optimizer is still usable on the next date
    assert optimizer.weights(_problem(4, 11)[0], cov).sum() == pytest.approx(1.0, abs=1e-6)


def test_a_covariance_that_is_not_one_is_refused_and_rounding_is_not():
    mu, cov = _problem(5, 12)
    values, vectors = np.linalg.eigh(cov.to_numpy())
    indefinite = values.copy()
    indefinite[0] = -0.05 * values.max()  # materially negative: no variance can be computed from it
    indefinite = pd.DataFrame(vectors @ np.diag(indefinite) @ vectors.T, cov.index, cov.columns)
    bent = cov.copy()
    bent.iloc[0, 1] += 0.05  # not symmetric
    for method in ("max_sharpe", "min_volatility", "efficient_return"):
        optimizer = ReusedOptimizer(method, LONG, target_return=0.05)
        reason = _refusal(lambda: optimizer.weights(mu, indefinite))
        assert "cov is not positive semidefinite (its lowest eigenvalue is -" in reason
        assert "cov is not symmetric" in _refusal(lambda: optimizer.weights(mu, bent))
    # rounding: an eigenvalue of -1e-12 times the largest is clipped to 0, the factor is still exact
    rounded = values.copy()
    rounded[0] = -1e-12 * values.max()
    almost = vectors @ np.diag(rounded) @ vectors.T
    factor = covariance_factor(almost)
    np.testing.assert_allclose(factor.T @ factor, almost, atol=1e-12)
    ReusedOptimizer("min_volatility", LONG).weights(mu, pd.DataFrame(almost, cov.index, cov.columns))


def test_notes_keep_the_reasons_the_fresh_optimizer_gave():
    symbols = list("ABCD")
    cov = pd.DataFrame(np.diag([0.05**2, 0.3**2, 0.3**2, 0.3**2]), symbols, symbols)
    mu = pd.Series([0.02, 0.08, 0.09, 0.1], symbols)
    capped = PortfolioConstraints(max_weight=0.3)  # the low-volatility asset cannot carry the book
    cases = [("efficient_risk", {"target_volatility": 0.08}, "Solver status: infeasible"),
             ("efficient_return", {"target_return": 0.5},
              "target_return must be lower than the maximum possible return"),
             ("efficient_risk", {"target_volatility": 0.01}, "The minimum volatility is 0.048. Please use a higher "
                                                             "target_volatility")]
    for method, targets, reason in cases:
        fresh = _refusal(lambda: optimize_weights(mu, cov, method, capped, **targets))
        reused = _refusal(lambda: ReusedOptimizer(method, capped, **targets).weights(mu, cov))
        assert reason in fresh and reason in reused, (fresh, reused)
