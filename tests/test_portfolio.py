"""Specification of portfolio construction (issue 5): oracles, invariants, errors, no look-ahead."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pypfopt import expected_returns as pf_returns

from research_lib.portfolio import (BlackLittermanViews, InfeasibleConstraintsError, PortfolioConstraints,
                                    black_litterman_posterior, discrete_allocation, expected_returns,
                                    optimize_weights, rebalance_weights, risk_matrix, signal_expected_returns)
from research_lib.portfolio._bench import bench_construction, bench_max_sharpe, bench_rebalances, synthetic_prices

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
TOL = 1e-6
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """600 sessions of five random-walk stocks with different drifts and a shared factor."""
    rng = np.random.default_rng(7)
    market = rng.normal(0.0003, 0.01, size=(600, 1))
    returns = market + rng.normal([0.0008, 0.0004, 0.0002, 0.0006, 0.0001], 0.012, size=(600, 5))
    dates = pd.bdate_range("2020-01-01", periods=600)
    return pd.DataFrame(100 * np.cumprod(1 + returns, axis=0), index=dates, columns=SYMBOLS)


def frame(matrix, symbols=None) -> pd.DataFrame:
    symbols = symbols or SYMBOLS[: len(matrix)]
    return pd.DataFrame(matrix, index=symbols, columns=symbols)


@st.composite
def problems(draw, min_assets=2, max_assets=6):
    """A random positive-definite covariance and positive expected returns."""
    n = draw(st.integers(min_assets, max_assets))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.2, size=(n, n))
    cov = a @ a.T / n + np.diag(rng.uniform(0.01, 0.05, n))
    mu = pd.Series(rng.uniform(0.01, 0.2, n), index=[f"S{i}" for i in range(n)])
    return mu, pd.DataFrame(cov, index=mu.index, columns=mu.index)


# --- closed-form oracles ---------------------------------------------------------------------

def test_two_asset_minimum_variance_matches_closed_form():
    s1, s2, s12 = 0.2, 0.3, 0.01
    cov = frame([[s1**2, s12], [s12, s2**2]])
    w = optimize_weights(None, cov, "min_volatility")
    expected = (s2**2 - s12) / (s1**2 + s2**2 - 2 * s12)
    assert w["AAA"] == pytest.approx(expected, abs=1e-6)
    assert w["BBB"] == pytest.approx(1 - expected, abs=1e-6)


def test_unconstrained_max_sharpe_is_normalized_inverse_covariance_times_mu():
    cov = frame([[0.04, 0.006, 0.002], [0.006, 0.09, 0.01], [0.002, 0.01, 0.0625]])
    mu = pd.Series([0.08, 0.10, 0.07], index=cov.index)
    raw = np.linalg.solve(cov.to_numpy(), mu.to_numpy())
    assert (raw > 0).all()
    w = optimize_weights(mu, cov, "max_sharpe")
    np.testing.assert_allclose(w.to_numpy(), raw / raw.sum(), atol=1e-5)


# --- invariants --------------------------------------------------------------------------------

@FAST
@given(problems(), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from(["max_sharpe", "min_volatility"]),
       st.floats(0.0, 0.5))
def test_long_only_weights_sum_to_one_within_bounds(problem, cap_room, floor_room, method, l2_gamma):
    mu, cov = problem
    n = len(mu)
    max_weight = 1 / n + cap_room * (1 - 1 / n)
    min_weight = floor_room * 0.9 / n
    c = PortfolioConstraints(max_weight=max_weight, min_weight=min_weight, l2_gamma=l2_gamma)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pypfopt warns that L2 is approximate under max Sharpe
        w = optimize_weights(mu, cov, method, c)
    assert w.sum() == pytest.approx(1.0, abs=TOL)
    assert (w <= max_weight + TOL).all() and (w >= min_weight - TOL).all()


@FAST
@given(problems(3), st.floats(0.3, 1.0), st.one_of(st.just(0.0), st.floats(0.05, 1.0)), st.floats(0.2, 1.5),
       st.sampled_from(["max_sharpe", "min_volatility", "efficient_risk"]))
def test_long_short_meets_net_target_gross_cap_and_bounds(problem, max_weight, net, gross_room, method):
    mu, cov = problem
    n = len(mu)
    if net == 0 and method != "efficient_risk":
        net = 0.5
    assume(max_weight * n >= net)  # otherwise infeasible by construction (refused, tested below)
    c = PortfolioConstraints(side="long_short", max_weight=max_weight, net_exposure=net,
                             max_gross_exposure=net + gross_room)
    target = float(np.sqrt(np.diag(cov)).max()) * max(net, 1.0)
    w = optimize_weights(mu, cov, method, c, target_volatility=target)
    assert w.sum() == pytest.approx(net, abs=TOL)
    assert w.abs().sum() <= net + gross_room + TOL
    assert (w <= max_weight + TOL).all() and (w >= -max_weight - TOL).all()


@FAST
@given(problems(), st.floats(0.1, 1.0))
def test_hrp_is_long_only_and_meets_the_net_exposure(problem, net):
    mu, cov = problem
    w = optimize_weights(None, cov, "hrp", PortfolioConstraints(net_exposure=net))
    assert w.sum() == pytest.approx(net, abs=TOL) and (w >= 0).all()


# --- errors -------------------------------------------------------------------------------------

def test_max_weight_too_small_for_a_fully_invested_book_is_named_before_solving():
    mu, cov = pd.Series(0.1, index=SYMBOLS), frame(np.eye(5) * 0.04)
    with pytest.raises(InfeasibleConstraintsError, match=r"max_weight \* n_assets = 0.1 x 5 = 0.5 is below "
                                                          r"net_exposure=1.0; raise max_weight to at least 0.2"):
        optimize_weights(mu, cov, "max_sharpe", PortfolioConstraints(max_weight=0.1))
    with pytest.raises(InfeasibleConstraintsError, match=r"min_weight \* n_assets = 0.3 x 5 = 1.5 exceeds"):
        optimize_weights(mu, cov, "min_volatility", PortfolioConstraints(min_weight=0.3))


def test_max_sharpe_without_a_return_above_the_risk_free_rate_is_infeasible_not_a_crash():
    mu, cov = pd.Series([0.01, 0.02], index=SYMBOLS[:2]), frame([[0.04, 0.0], [0.0, 0.09]])
    with pytest.raises(InfeasibleConstraintsError, match=r"exceeds risk_free_rate=0.03; the best is 0.0200"):
        optimize_weights(mu, cov, "max_sharpe", risk_free_rate=0.03)
    assert optimize_weights(mu, cov, "max_sharpe", risk_free_rate=0.0).sum() == pytest.approx(1.0)


def test_solver_infeasibility_is_translated():
    cov = frame([[0.01, 0.0], [0.0, 0.25]])
    mu = pd.Series([0.05, 0.10], index=cov.index)
    # The unconstrained minimum volatility is about 0.098; max_weight=0.5 forces 50/50 (about 0.255).
    with pytest.raises(InfeasibleConstraintsError, match="no weights for method='efficient_risk'.*loosen"):
        optimize_weights(mu, cov, "efficient_risk", PortfolioConstraints(max_weight=0.5), target_volatility=0.12)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(side="long_only", min_weight=-0.1), "min_weight is -0.1 but side='long_only'"),
    (dict(side="sideways"), "long_only' or 'long_short"),
    (dict(max_gross_exposure=2.0), "max_gross_exposure only applies to side='long_short'"),
    (dict(net_exposure=0.0), "long-only book needs net_exposure > 0"),
    (dict(min_weight=0.5, max_weight=0.2), "min_weight 0.5 exceeds max_weight 0.2"),
    (dict(side="long_short", net_exposure=1.0, max_gross_exposure=0.5), "gross can never be below net"),
    (dict(max_wieght=0.2), "Extra inputs are not permitted"),
])
def test_inconsistent_constraints_are_refused(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        PortfolioConstraints(**kwargs)


def test_unsupported_combinations_are_refused_with_the_fix():
    mu, cov = pd.Series(0.1, index=SYMBOLS[:2]), frame(np.eye(2) * 0.04)
    neutral = PortfolioConstraints(side="long_short", net_exposure=0.0, max_gross_exposure=1.0)
    cases = [
        (dict(method="max_sharp"), "choose one of .*Did you mean 'max_sharpe'"),
        (dict(method="hrp", constraints=PortfolioConstraints(max_weight=0.6)), "hrp' takes no weight bounds"),
        (dict(method="max_sharpe", constraints=neutral), "net_exposure=0 .* efficient_risk or efficient_return"),
        (dict(method="black_litterman", mu=None), "views are required by method='black_litterman'"),
        (dict(method="min_volatility", constraints=PortfolioConstraints(turnover_penalty=0.01)),
         "turnover_penalty needs previous_weights"),
        (dict(method="max_sharpe", constraints=PortfolioConstraints(turnover_penalty=0.01), previous_weights=mu),
         "turnover_penalty cannot be used with max Sharpe"),
        (dict(method="max_sharpe", mu=None), "needs mu"),
        (dict(method="efficient_risk"), "needs target_volatility"),
        (dict(method="efficient_return"), "needs target_return"),
        (dict(mu=pd.Series(0.1, index=["AAA", "ZZZ"])), "mu covers .* but cov covers"),
        (dict(method="black_litterman", views=BlackLittermanViews(mu, mu * 0)), "pass mu=None"),
    ]
    for changes, message in cases:
        kwargs = {"mu": mu, "cov": cov, **changes}
        with pytest.raises(ValueError, match=message):
            optimize_weights(**kwargs)
    with pytest.raises(ValueError, match="net_exposure=0.001 is too close to 0"):
        optimize_weights(mu, cov, constraints=PortfolioConstraints(side="long_short", net_exposure=0.001))
    with pytest.raises(ValueError, match="cov contains NaN"):
        optimize_weights(mu, frame([[0.04, np.nan], [np.nan, 0.04]]))
    with pytest.raises(TypeError, match="square DataFrame"):
        optimize_weights(mu, cov.to_numpy())


# --- penalties ----------------------------------------------------------------------------------

def test_a_heavy_turnover_penalty_keeps_the_previous_weights():
    cov = frame([[0.04, 0.01, 0.0], [0.01, 0.09, 0.02], [0.0, 0.02, 0.16]])
    previous = pd.Series([0.2, 0.3, 0.5], index=cov.index)
    free = optimize_weights(None, cov, "min_volatility")
    held = optimize_weights(None, cov, "min_volatility", PortfolioConstraints(turnover_penalty=10.0),
                            previous_weights=previous)
    assert (free - previous).abs().max() > 0.1
    np.testing.assert_allclose(held.to_numpy(), previous.to_numpy(), atol=1e-5)


def test_l2_regularization_spreads_the_weights():
    cov = frame(np.diag([0.01, 0.04, 0.09, 0.16]))
    plain = optimize_weights(None, cov, "min_volatility")
    spread = optimize_weights(None, cov, "min_volatility", PortfolioConstraints(l2_gamma=1.0))
    assert spread.std() < plain.std()


# --- Black-Litterman ----------------------------------------------------------------------------

def test_a_fully_confident_view_moves_the_posterior_onto_the_view():
    cov = frame([[0.04, 0.01, 0.005], [0.01, 0.09, 0.02], [0.005, 0.02, 0.0625]])
    views = BlackLittermanViews(pd.Series({"BBB": 0.25}), pd.Series({"BBB": 1.0}))
    posterior, posterior_cov = black_litterman_posterior(cov, views, risk_free_rate=0.02)
    assert posterior["BBB"] == pytest.approx(0.27, abs=1e-9)
    unmoved, _ = black_litterman_posterior(cov, BlackLittermanViews(views.returns, pd.Series({"BBB": 0.0})))
    prior = cov.to_numpy() @ np.full(3, 1 / 3)
    np.testing.assert_allclose(unmoved.to_numpy(), prior, atol=1e-4)
    assert posterior_cov.shape == (3, 3)
    w = optimize_weights(None, cov, "black_litterman", PortfolioConstraints(max_weight=0.6), views=views)
    assert w.idxmax() == "BBB" and w.sum() == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(returns=pd.Series({"A": 0.1}), confidences=pd.Series({"B": 0.5})), "give one confidence per view"),
    (dict(returns=pd.Series({"A": 0.1}), confidences=pd.Series({"A": 1.5})), r"must lie in \[0, 1\]"),
    (dict(returns=pd.Series({"A": np.nan}), confidences=pd.Series({"A": 0.5})), "views returns contain NaN"),
    (dict(returns=pd.Series({"A": 0.1}), confidences=pd.Series({"A": 0.5}), tau=0), "must both be positive"),
])
def test_malformed_views_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlackLittermanViews(**kwargs)


def test_views_and_caps_must_cover_the_covariance():
    cov = frame(np.eye(2) * 0.04)
    with pytest.raises(ValueError, match=r"views on \['ZZZ'\] are not in"):
        black_litterman_posterior(cov, BlackLittermanViews(pd.Series({"ZZZ": 0.1}), pd.Series({"ZZZ": 0.5})))
    with pytest.raises(ValueError, match=r"market_caps lacks \['BBB'\]"):
        black_litterman_posterior(cov, BlackLittermanViews(pd.Series({"AAA": 0.1}), pd.Series({"AAA": 0.5}),
                                                           market_caps=pd.Series({"AAA": 1.0})))


# --- inputs -------------------------------------------------------------------------------------

def test_expected_returns_use_only_rows_up_to_as_of(prices):
    as_of = prices.index[300]
    for model in ("mean_historical", "ema_historical", "capm"):
        full = expected_returns(prices, model, as_of=as_of, benchmark=prices.mean(axis=1))
        cut = expected_returns(prices.iloc[:301], model, benchmark=prices.mean(axis=1).iloc[:301])
        pd.testing.assert_series_equal(full, cut)
    np.testing.assert_allclose(expected_returns(prices, as_of=as_of),
                               pf_returns.mean_historical_return(prices.iloc[:301]))


def test_signal_implied_returns_have_the_target_mean_and_spread(prices):
    scores = pd.DataFrame([[1.0, 2.0, 3.0, 4.0, 10.0], [5.0, 4.0, 3.0, 2.0, 1.0]], columns=SYMBOLS,
                          index=[prices.index[10], prices.index[400]])
    mu = expected_returns(prices, "signals", as_of=prices.index[300], scores=scores, target_spread=0.04,
                          base_return=0.06)
    assert mu.mean() == pytest.approx(0.06) and mu.std(ddof=0) == pytest.approx(0.04)
    assert list(mu.rank()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="scores are all equal"):
        signal_expected_returns(pd.Series([1.0, 1.0]))
    with pytest.raises(ValueError, match="drop symbols without a score"):
        signal_expected_returns(pd.Series([1.0, np.nan]))
    with pytest.raises(ValueError, match="target_spread is -0.1"):
        signal_expected_returns(pd.Series([1.0, 2.0]), target_spread=-0.1)
    with pytest.raises(ValueError, match="scores has no row at or before"):
        expected_returns(prices, "signals", as_of=prices.index[5], scores=scores)


@pytest.mark.parametrize("model", ["sample", "ledoit_wolf", "exp_cov"])
def test_risk_models_are_symmetric_psd_and_point_in_time(prices, model):
    cov = risk_matrix(prices, model, as_of=prices.index[200])
    pd.testing.assert_frame_equal(cov, risk_matrix(prices.iloc[:201], model))
    np.testing.assert_allclose(cov.to_numpy(), cov.to_numpy().T)
    assert np.linalg.eigvalsh(cov.to_numpy()).min() > -1e-10


def test_ledoit_wolf_is_pypfopts_to_the_bit(prices):
    """The estimate on arrays is PyPortfolioOpt's own, bit for bit (the rebalance loop calls it
    once per date)."""
    from pypfopt.risk_models import CovarianceShrinkage

    for window in (prices.iloc[100:353], prices.iloc[:3], prices[["CCC", "AAA"]]):
        pd.testing.assert_frame_equal(risk_matrix(window, "ledoit_wolf"), CovarianceShrinkage(window).ledoit_wolf(),
                                      check_exact=True)


def test_bad_inputs_are_refused_with_the_fix(prices):
    with pytest.raises(ValueError, match="choose one of \\['mean_historical'"):
        expected_returns(prices, "mean")
    with pytest.raises(ValueError, match="Did you mean 'ledoit_wolf'"):
        risk_matrix(prices, "ledoit-wolf")
    with pytest.raises(ValueError, match="needs benchmark"):
        expected_returns(prices, "capm")
    with pytest.raises(ValueError, match="needs scores"):
        expected_returns(prices, "signals")
    with pytest.raises(ValueError, match=r"NaN or non-positive values in \['AAA'\]"):
        expected_returns(prices.assign(AAA=np.nan))
    with pytest.raises(ValueError, match="unsorted dates"):
        risk_matrix(prices.iloc[::-1])
    with pytest.raises(ValueError, match="has 1 rows at or before"):
        expected_returns(prices, as_of=prices.index[0])
    with pytest.raises(TypeError, match="DatetimeIndex"):
        expected_returns(prices.reset_index(drop=True))


# --- rebalancing --------------------------------------------------------------------------------

@FAST
@given(st.integers(0, 3), st.floats(0.5, 2.0))
def test_prices_after_a_rebalance_date_never_change_its_weights(prices, cut, shock):
    dates = prices.index[[300, 400, 500, 599]]
    changed = prices.copy()
    changed.loc[changed.index > dates[cut]] *= np.linspace(1, shock, 5)
    kwargs = dict(lookback_days=200, method="min_volatility", risk_model="exp_cov",
                  constraints=PortfolioConstraints(max_weight=0.5, turnover_penalty=0.001))
    before = rebalance_weights(prices, dates, **kwargs)
    after = rebalance_weights(changed, dates, **kwargs)
    pd.testing.assert_frame_equal(before.iloc[: cut + 1], after.iloc[: cut + 1])


def test_rebalance_with_views_and_signals(prices):
    dates = prices.index[[300, 450]]
    views = pd.DataFrame({"AAA": [0.2, np.nan], "EEE": [np.nan, 0.3]}, index=prices.index[[0, 400]])
    weights = rebalance_weights(prices, dates, method="black_litterman", views=views,
                                view_confidences=views.notna() * 0.8, constraints=PortfolioConstraints(max_weight=0.5))
    assert weights.loc[dates[0]].idxmax() == "AAA" and weights.loc[dates[1]].idxmax() == "EEE"
    scores = pd.DataFrame([range(5)], index=prices.index[:1], columns=SYMBOLS[::-1], dtype=float)
    signal = rebalance_weights(prices, dates, returns_model="signals", scores=scores, risk_model="sample")
    np.testing.assert_allclose(signal.sum(axis=1), 1.0, atol=TOL)
    with pytest.raises(ValueError, match="views has no row at or before"):
        rebalance_weights(prices, dates, method="black_litterman", views=views.iloc[1:], view_confidences=views)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(rebalance_dates=["2019-01-01"]), r"\['2019-01-01'\] are not sessions of prices"),
    (dict(lookback_days=1), "lookback_days is 1; pass an integer of at least 2"),
    (dict(rebalance_dates=["2020-01-10"]), "has only 8 prices; lookback_days=252 needs 253"),
    (dict(method="black_litterman"), "needs views and view_confidences"),
    (dict(risk_model="shrunk"), "risk_model is 'shrunk'"),
])
def test_bad_rebalance_arguments_are_refused(prices, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rebalance_weights(prices, **{"rebalance_dates": prices.index[[400]], **kwargs})


# --- shares -------------------------------------------------------------------------------------

def test_whole_share_allocation_spends_at_most_the_capital():
    weights = pd.Series({"AAA": 0.5, "BBB": 0.3, "CCC": 0.2})
    latest = pd.Series({"AAA": 101.3, "BBB": 47.9, "CCC": 12.25, "DDD": 5.0})
    alloc = discrete_allocation(weights, latest, 10_000)
    assert (alloc.shares == alloc.shares.round()).all() and list(alloc.shares.index) == ["AAA", "BBB", "CCC"]
    spent = (alloc.shares * latest.reindex(weights.index)).sum()
    assert spent + alloc.leftover_cash == pytest.approx(10_000) and 0 <= alloc.leftover_cash < 101.3
    fractional = discrete_allocation(weights, latest, 10_000, fractional=True)
    assert fractional.shares["AAA"] == pytest.approx(5_000 / 101.3) and fractional.leftover_cash == pytest.approx(0)
    with pytest.raises(ValueError, match="capital is 0"):
        discrete_allocation(weights, latest, 0)
    with pytest.raises(ValueError, match="prices must be positive for every symbol"):
        discrete_allocation(weights, latest.drop("CCC"), 10_000)


# --- benchmarks (small sizes: the functions run, the figures come from `make bench`) -----------

def test_benchmarks_report_their_figures(prices):
    small = bench_max_sharpe(n_assets=20)
    assert small["clarabel_status"] == "optimal" and small["clarabel_s"] > 0
    result = bench_rebalances(prices, n_rebalances=3, method="min_volatility")
    assert result["n_rebalances"] == 3 and result["n_assets"] == 5
    with pytest.raises(ValueError, match="n_rebalances=100 needs more history"):
        bench_rebalances(prices, n_rebalances=100)
    chain = bench_construction(n_assets=4, n_rebalances=3, lookback_days=60)
    assert chain["n_rebalances"] == 3 and chain["n_assets"] == 4 and chain["seconds"] > 0
    close = synthetic_prices(3, 50)
    assert close.shape == (50, 3) and (close > 0).all().all() and close.index.is_monotonic_increasing
