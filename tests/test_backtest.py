"""The baseline strategy and backtest: hand-checked cases, an independent reference, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from research_lib.backtest import COST_COLUMNS, run_backtest
from research_lib.features._price import momentum
from research_lib.portfolio import StrategyConfig, baseline_weights, rebalance_dates, top_n_equal_weights
from tests.conftest import make_prices


def reference_backtest(weights, prices, cost_bps, lag, spread_bps=0.0, impact_coefficient=0.0, capital=1.0,
                       borrow_bps_per_year=0.0, cash_rate_per_year=0.0):
    """Shares and cash in currency, one session at a time: the same conventions and cost
    model written the slow, obvious way. A frame by session of the returns, turnover,
    each cost (a fraction of NAV) and the end-of-day weights."""
    close = prices["close"][list(weights.columns)]
    price = close.to_numpy(dtype=float)
    valued = np.nan_to_num(price)  # a missing price values a (zero) holding at 0
    has_volume = "volume" in prices.columns.get_level_values(0)
    traded_value = price * (prices["volume"][list(weights.columns)].to_numpy(dtype=float) if has_volume else np.nan)
    sessions = close.index
    trades = {sessions.get_loc(d) + lag: w.to_numpy(dtype=float) for d, w in weights.iterrows()
              if sessions.get_loc(d) + lag < len(sessions)}
    first = min(t for t, target in trades.items() if target.any())
    rate = (cash_rate_per_year.reindex(sessions).to_numpy() if isinstance(cash_rate_per_year, pd.Series)
            else np.full(len(sessions), cash_rate_per_year)) / 252
    shares, cash, value_before = np.zeros(price.shape[1]), capital, capital
    rows = []
    for t in range(first, len(sessions)):
        short_value = np.maximum(-shares * valued[t - 1], 0.0).sum()
        borrow = borrow_bps_per_year / 1e4 / 252 * short_value
        cash = cash * (1 + rate[t]) - borrow
        gone = (shares != 0) & np.isnan(price[t])  # sold at the last close
        cash += (shares[gone] * price[t - 1][gone]).sum()
        shares[gone] = 0.0
        value = cash + (shares * valued[t]).sum()
        row = {"borrow": borrow / value_before, "turnover": 0.0, "commission": 0.0, "spread": 0.0, "impact": 0.0}
        if t in trades:
            traded = np.abs(trades[t] - shares * valued[t] / value)
            impact = 0.0
            for i in np.flatnonzero(traded) if impact_coefficient else []:
                lo = max(t - 20, 1)  # the 20 sessions before the trade's
                returns = price[lo:t, i] / price[lo - 1:t - 1, i] - 1
                values = traded_value[lo - 1:t, i][-20:]
                daily_vol, adv = np.nanstd(returns, ddof=1), np.nanmean(values)
                impact += impact_coefficient * daily_vol * np.sqrt(traded[i] * value / adv) * traded[i]
            row.update(turnover=traded.sum(), commission=cost_bps / 1e4 * traded.sum(),
                       spread=spread_bps / 1e4 * traded.sum(), impact=impact)
            value *= 1 - row["commission"] - row["spread"] - impact
            shares = np.where(trades[t] != 0, trades[t] * value / price[t], 0.0)
            cash = value - (shares * valued[t]).sum()
        rows.append({"returns": value / value_before - 1, **row,
                     **dict(zip(close.columns, shares * valued[t] / value))})
        value_before = value
    return pd.DataFrame(rows, index=sessions[first:])


def test_two_assets_by_hand():
    close = make_prices({"A": [100, 110, 121, 121], "B": [50, 50, 40, 40]})
    weights = pd.DataFrame({"A": [0.5], "B": [0.5]}, index=close.index[[0]])
    result = run_backtest(weights, close, cost_bps=100, execution_lag_sessions=1)
    # Decided at the close of day 0, traded at the close of day 1 (1% of NAV turnover cost),
    # then day 2 earns 0.5 * 10% + 0.5 * -20% = -5%.
    assert result.returns.index[0] == close.index[1]
    np.testing.assert_allclose(result.returns.to_numpy(), [-0.01, -0.05, 0.0])
    np.testing.assert_allclose(result.turnover.to_numpy(), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(result.holdings.iloc[-1].to_numpy(), [0.55 / 0.95, 0.40 / 0.95])


def test_commission_and_spread_are_charged_per_unit_of_turnover():
    close = make_prices({"A": [100, 110, 121, 121], "B": [50, 50, 40, 40]})
    weights = pd.DataFrame({"A": [0.5], "B": [0.5]}, index=close.index[[0]])
    result = run_backtest(weights, close, cost_bps=100, spread_bps=50)
    np.testing.assert_allclose(result.returns.to_numpy(), [-0.015, -0.05, 0.0])
    np.testing.assert_allclose(result.cost_breakdown.iloc[0].to_numpy(), [0.01, 0.005, 0.0, 0.0])
    np.testing.assert_allclose(result.costs.to_numpy(), [0.015, 0.0, 0.0])


def alternating_prices(up: float, down: float, n: int) -> pd.DataFrame:
    """Returns alternate +up, -down (so any 20-session volatility is (up + down) / 2 * sqrt(20/19));
    volume is 1e6 / close, so every session trades 1e6 in currency."""
    closes = 100 * np.cumprod(np.r_[1.0, np.where(np.arange(1, n) % 2, 1 + up, 1 - down)])
    return make_prices({"A": closes}, volume={"A": 1e6 / closes})


@pytest.mark.parametrize("weight, capital, sqrt_share", [(1.0, 4e6, 2.0), (0.25, 4e6, 1.0), (1.0, 1e6, 1.0)])
def test_square_root_impact_by_hand(weight, capital, sqrt_share):
    """impact = coefficient * daily_vol * sqrt(traded value / average traded value) * traded fraction."""
    prices = alternating_prices(0.01, 0.01, n=24)
    weights = pd.DataFrame({"A": [weight]}, index=prices.index[[20]])  # traded at the close of session 21
    result = run_backtest(weights, prices, cost_bps=0, impact_coefficient=0.5, capital=capital)
    impact = 0.5 * 0.01 * np.sqrt(20 / 19) * sqrt_share * weight
    assert result.returns.index[0] == prices.index[21]
    assert result.cost_breakdown["impact"].iloc[0] == pytest.approx(impact, rel=1e-12)
    assert result.returns.iloc[0] == pytest.approx(-impact, rel=1e-12)


def test_impact_grows_with_the_account():
    """A later trade's value in currency is its fraction of the account as the account is then."""
    prices = alternating_prices(0.03, 0.01, n=30)
    close = prices["close"]["A"].to_numpy()
    weights = pd.DataFrame({"A": [1.0, 0.5]}, index=prices.index[[20, 27]])  # bought at 21, half sold at 28
    result = run_backtest(weights, prices, cost_bps=0, impact_coefficient=0.5, capital=1e6)
    daily_vol = 0.02 * np.sqrt(20 / 19)
    first = 0.5 * daily_vol * 1.0
    account = (1 - first) * close[28] / close[21]  # in units of capital, just before the second trade
    second = 0.5 * daily_vol * np.sqrt(0.5 * account) * 0.5
    assert account > 1.03
    np.testing.assert_allclose(result.cost_breakdown["impact"].iloc[[0, 7]], [first, second], rtol=1e-12)


def test_borrow_is_charged_daily_on_the_short_exposure():
    close = make_prices({"A": [100.0] * 5})
    weights = pd.DataFrame({"A": [-1.0]}, index=close.index[[0]])
    result = run_backtest(weights, close, cost_bps=0, borrow_bps_per_year=252)  # 1 bp a session
    # Short from the close of session 1: the fee starts on session 2, on a short worth the NAV, then a bit more.
    np.testing.assert_allclose(result.returns.to_numpy(), [0.0, -1e-4, -1e-4 / (1 - 1e-4), -1e-4 / (1 - 2e-4)], rtol=1e-12)
    np.testing.assert_allclose(result.cost_breakdown["borrow"].to_numpy(), -result.returns.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(result.costs.to_numpy(), -result.returns.to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("weight", [0.5, -0.5])
def test_cash_earns_its_rate_short_proceeds_included(weight):
    close = make_prices({"A": [100.0] * 4})
    weights = pd.DataFrame({"A": [weight]}, index=close.index[[0]])
    result = run_backtest(weights, close, cost_bps=0, cash_rate_per_year=2.52)  # 1% a session
    cash = 1.01 * (1 - weight)  # cash after the trade at the close of session 1 (the account opened a session before)
    expected = [0.01, 0.01 * cash / 1.01, 0.01 * cash * 1.01 / (1.01 + 0.01 * cash)]
    np.testing.assert_allclose(result.returns.to_numpy(), expected, rtol=1e-12)


def test_a_cash_rate_series_applies_on_its_own_sessions():
    close = make_prices({"A": [100.0] * 5})
    rates = pd.Series([0.0, 0.0, 2.52, 0.0], index=close.index[1:])  # none needed before the first trade's session
    result = run_backtest(pd.DataFrame({"A": [0.5]}, index=close.index[[0]]), close, cost_bps=0, cash_rate_per_year=rates)
    np.testing.assert_allclose(result.returns.to_numpy(), [0.0, 0.0, 0.005, 0.0], atol=1e-15)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lag=st.integers(1, 3), listed=st.integers(0, 20), delisted=st.integers(40, 80),
       cost_bps=st.floats(0, 50), spread_bps=st.floats(0, 30), impact=st.sampled_from([0.0, 0.1, 1.0]),
       borrow_bps_per_year=st.floats(0, 500), cash=st.sampled_from(["none", "constant", "series"]))
def test_matches_the_shares_and_cash_reference_on_random_cases(seed, lag, listed, delisted, cost_bps, spread_bps, impact,
                                                               borrow_bps_per_year, cash):
    """Long-short books, a symbol listed late (C) and one whose prices end (D), trades from
    session 26 (so impact has the 5 sessions of history it needs), every cost at once."""
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(80, 4)), axis=0))
    closes[:listed, 2] = np.nan
    closes[delisted:, 3] = np.nan
    prices = make_prices({s: closes[:, i] for i, s in enumerate("ABCD")},
                         volume={s: rng.uniform(1e4, 1e6, size=80) for s in "ABCD"})
    rows = np.sort(rng.choice(np.arange(26 - lag, 79), size=8, replace=False))
    raw = rng.uniform(-0.6, 1.0, size=(8, 4)) * (rng.uniform(size=(8, 4)) > 0.3)
    raw[np.isnan(closes[np.minimum(rows + lag, 79)])] = 0.0  # no weight where the trade has no price
    assume(raw[rows + lag < 80].any())
    weights = pd.DataFrame(raw, index=prices.index[rows], columns=list("ABCD"))
    rate = {"none": 0.0, "constant": 0.05, "series": pd.Series(rng.uniform(-0.01, 0.1, 80), index=prices.index)}[cash]
    model = {"spread_bps": spread_bps, "impact_coefficient": impact, "capital": 1e7,
             "borrow_bps_per_year": borrow_bps_per_year, "cash_rate_per_year": rate}
    result = run_backtest(weights, prices, cost_bps=cost_bps, execution_lag_sessions=lag, **model)
    expected = reference_backtest(weights, prices, cost_bps, lag, **model)
    pd.testing.assert_index_equal(result.returns.index, expected.index)
    close = {"atol": 1e-12, "rtol": 0}
    np.testing.assert_allclose(result.returns, expected["returns"], **close)
    np.testing.assert_allclose(result.turnover, expected["turnover"], **close)
    np.testing.assert_allclose(result.cost_breakdown, expected[list(COST_COLUMNS)], **close)
    np.testing.assert_allclose(result.costs, expected[list(COST_COLUMNS)].sum(axis=1), **close)
    np.testing.assert_allclose(result.holdings, expected[list("ABCD")], **close)


def test_a_new_target_does_not_earn_the_session_it_is_decided_on_or_the_next():
    close = make_prices({"A": [100, 100, 200, 400, 400], "B": [100, 100, 100, 100, 100]})
    weights = pd.DataFrame({"A": [0.0, 1.0], "B": [1.0, 0.0]}, index=close.index[[0, 1]])
    returns = run_backtest(weights, close, cost_bps=0).returns
    # Switch to A decided at day 1, traded at the close of day 2: day 2's doubling is missed.
    assert returns.loc[close.index[2]] == 0.0
    assert returns.loc[close.index[3]] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"cost_bps": -1}, r"cost_bps must be a finite number >= 0 \(got -1\)"),
    ({"execution_lag_sessions": 0}, r"execution_lag_sessions must be a whole number >= 1 \(got 0\); trading at the decision close"),
    ({"spread_bps": float("nan")}, r"spread_bps must be a finite number >= 0 \(got nan\)"),
    ({"borrow_bps_per_year": -5}, r"borrow_bps_per_year must be a finite number >= 0 \(got -5\)"),
    ({"impact_coefficient": 0.1}, r"impact_coefficient=0.1 needs capital, the account value in currency \(got None\)"),
    ({"cash_rate_per_year": pd.Series([0.01], index=[pd.Timestamp("2020-01-01")])},
     r"cash_rate_per_year has no rate for 2020-01-02; give an annual rate for every session from the first trade"),
])
def test_bad_arguments(kwargs, match):
    close = make_prices({"A": [1, 2, 3]})
    with pytest.raises(ValueError, match=match):
        run_backtest(pd.DataFrame({"A": [1.0]}, index=close.index[:1]), close, **kwargs)


def test_impact_without_volume_names_the_symbol_and_the_fix():
    prices = make_prices({"A": [100.0 + i for i in range(30)], "B": [50.0] * 30}, volume={"A": [1e5] * 30})
    weights = pd.DataFrame({"A": [0.5], "B": [0.5]}, index=prices.index[[25]])
    with pytest.raises(ValueError, match=r"needs B's average traded value \(close x volume\) and volatility over the 20 "
                                         r"sessions before its trade on 2020-02-06 .* pass impact_coefficient=0, or "
                                         r"prices with a volume field for B\."):
        run_backtest(weights, prices, impact_coefficient=0.1, capital=1e6)
    with pytest.raises(ValueError, match=r"needs A's average"):
        run_backtest(weights[["A"]], prices.drop(columns="volume", level="field"), impact_coefficient=0.1, capital=1e6)
    assert run_backtest(weights[["A"]], prices, impact_coefficient=0.1, capital=1e6).cost_breakdown["impact"].iloc[0] > 0


def test_bad_weights_are_refused_with_the_fix():
    close = make_prices({"A": [np.nan, np.nan, 3, 4], "B": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match=r"weights name symbols \['C'\] that are not in the price frame"):
        run_backtest(pd.DataFrame({"C": [1.0]}, index=close.index[:1]), close)
    with pytest.raises(ValueError, match="weights contain NaN or infinite values; use 0"):
        run_backtest(pd.DataFrame({"A": [np.nan]}, index=close.index[:1]), close)
    with pytest.raises(ValueError, match=r"weights are dated 2019-12-31, which is not a session"):
        run_backtest(pd.DataFrame({"B": [1.0]}, index=[pd.Timestamp("2019-12-31")]), close)
    with pytest.raises(ValueError, match=r"weight on A traded on 2020-01-02, when it has no price, nor at its decision date \(not listed yet"):
        run_backtest(pd.DataFrame({"A": [1.0]}, index=close.index[:1]), close)
    with pytest.raises(ValueError, match="no trade falls inside the price history"):
        run_backtest(pd.DataFrame({"B": [1.0]}, index=close.index[-1:]), close)
    with pytest.raises(ValueError, match=r"weights have two rows dated 2020-01-01; keep one row per decision date"):
        run_backtest(pd.DataFrame({"B": [1.0, 0.5]}, index=close.index[[0, 0]]), close)
    with pytest.raises(ValueError, match="every target weight is zero"):
        run_backtest(pd.DataFrame({"B": [0.0]}, index=close.index[:1]), close)


def test_rebalance_dates_are_month_ends_and_never_the_last_data_day():
    sessions = pd.bdate_range("2021-01-01", "2021-03-15")
    dates = rebalance_dates(sessions, "monthly")
    assert list(dates.strftime("%Y-%m-%d")) == ["2021-01-29", "2021-02-26"]
    weekly = rebalance_dates(sessions, "weekly")
    assert (weekly.day_of_week == 4).all() and len(weekly) == 11, "every Friday from 2021-01-01 to 2021-03-12"
    with pytest.raises(ValueError, match=r"unknown rebalance frequency 'daily'; valid: \['monthly', 'weekly'\]"):
        rebalance_dates(sessions, "daily")


def test_momentum_skips_the_last_month_and_picks_the_top_n():
    close = pd.DataFrame({"A": np.arange(1.0, 31.0), "B": np.full(30, 5.0), "C": np.arange(30.0, 0.0, -1)},
                         index=pd.bdate_range("2020-01-01", periods=30))
    scores = momentum(close, lookback_days=10, skip_days=2)
    assert scores["A"].iloc[-1] == pytest.approx(close["A"].iloc[-3] / close["A"].iloc[-11] - 1)
    assert scores.iloc[:10].isna().all().all()
    weights = top_n_equal_weights(scores, 2)
    assert weights.iloc[-1].to_dict() == {"A": 0.5, "B": 0.5, "C": 0.0}
    assert (weights.iloc[:10] == 0).all().all(), "no history, no position"


def test_equal_weight_holds_every_listed_symbol(bundled_small):
    weights = baseline_weights(bundled_small["close"], StrategyConfig(name="equal_weight"))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert weights.iloc[0].nunique() == 1


@settings(max_examples=15, deadline=None)
@given(cut=st.integers(min_value=300, max_value=950), seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_no_look_ahead_changing_the_future_leaves_the_past_unchanged(bundled_small, cut, seed):
    """Scale each symbol's prices after session `cut` by its own random factor (so future
    rankings change); weights and returns up to `cut` must not move."""
    future = bundled_small.copy()
    after = slice(future.index[cut + 1], None)
    shocks = np.random.default_rng(seed).uniform(0.3, 3.0, size=future["close"].shape[1])
    future.loc[after, "close"] = future.loc[after, "close"].to_numpy() * shocks
    config = StrategyConfig(top_n=2)
    base_w = baseline_weights(bundled_small["close"], config)
    new_w = baseline_weights(future["close"], config)
    t = bundled_small.index[cut]
    pd.testing.assert_frame_equal(base_w.loc[:t], new_w.loc[:t])
    pd.testing.assert_series_equal(run_backtest(base_w, bundled_small).returns.loc[:t],
                                   run_backtest(new_w, future).returns.loc[:t])


def test_the_look_ahead_test_catches_a_peeking_strategy(bundled_small):
    """Guard for the test above: momentum computed from future closes is caught."""
    close = bundled_small["close"]
    future = close.copy()
    future.iloc[501:] *= np.random.default_rng(0).uniform(0.3, 3.0, size=close.shape[1])
    peeking = lambda c: top_n_equal_weights(c.shift(-21) / c - 1, 2)  # noqa: E731
    assert not peeking(close).iloc[:500].equals(peeking(future).iloc[:500])


def test_a_holding_whose_prices_end_is_sold_at_its_last_close():
    close = make_prices({"A": [100, 100, 110, np.nan, np.nan], "B": [50, 50, 50, 55, 60]})
    weights = pd.DataFrame({"A": [0.5], "B": [0.5]}, index=close.index[:1])
    result = run_backtest(weights, close, cost_bps=0)
    assert result.holdings["A"].iloc[-1] == 0.0
    # NAV: 1.00 -> 1.05 (A +10%) -> 1.10 (A sold at 110 into cash, B +10%) -> 1.15 (B 55 -> 60).
    np.testing.assert_allclose(result.returns.to_numpy(), [0.0, 0.05, 1.10 / 1.05 - 1, 1.15 / 1.10 - 1])
