"""The baseline strategy and backtest: hand-checked cases, an independent reference, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.backtest import run_backtest
from research_lib.config import StrategyConfig
from research_lib.features._price import momentum
from research_lib.strategies import baseline_weights, rebalance_dates, top_n_equal_weights
from tests.conftest import make_prices


def reference_backtest(weights, close, cost_bps, lag):
    """Shares-and-cash simulation: the same conventions written the slow, obvious way."""
    sessions = close.index
    trades = {sessions.get_loc(d) + lag: w for d, w in weights.iterrows() if sessions.get_loc(d) + lag < len(sessions)}
    shares = pd.Series(0.0, index=close.columns)
    cash, value_before = 1.0, 1.0
    out = []
    for t, day in enumerate(sessions):
        price = close.loc[day].fillna(0.0)
        value = cash + (shares * price).sum()
        if t in trades:
            held = shares * price / value
            value *= 1 - cost_bps / 1e4 * (trades[t] - held).abs().sum()
            shares = (trades[t] * value / close.loc[day]).fillna(0.0)
            cash = value - (shares * price).sum()
        out.append(value / value_before - 1)
        value_before = value
    return pd.Series(out, index=sessions)


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


def test_matches_the_shares_and_cash_reference_on_random_cases():
    rng = np.random.default_rng(7)
    for _ in range(5):
        closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(120, 4)), axis=0))
        prices = make_prices({s: closes[:, i] for i, s in enumerate("ABCD")})
        dates = prices.index[rng.choice(110, size=8, replace=False)].sort_values()
        raw = rng.uniform(0, 1, size=(8, 4)) * (rng.uniform(size=(8, 4)) > 0.3)
        weights = pd.DataFrame(raw / raw.sum(axis=1, keepdims=True).clip(1e-9) * rng.uniform(0.5, 1.0), index=dates, columns=list("ABCD"))
        lag = int(rng.integers(1, 3))
        result = run_backtest(weights, prices, cost_bps=25, execution_lag_sessions=lag)
        expected = reference_backtest(weights, prices["close"], 25, lag).loc[result.returns.index]
        np.testing.assert_allclose(result.returns.to_numpy(), expected.to_numpy(), atol=1e-12)


def test_a_new_target_does_not_earn_the_session_it_is_decided_on_or_the_next():
    close = make_prices({"A": [100, 100, 200, 400, 400], "B": [100, 100, 100, 100, 100]})
    weights = pd.DataFrame({"A": [0.0, 1.0], "B": [1.0, 0.0]}, index=close.index[[0, 1]])
    returns = run_backtest(weights, close, cost_bps=0).returns
    # Switch to A decided at day 1, traded at the close of day 2: day 2's doubling is missed.
    assert returns.loc[close.index[2]] == 0.0
    assert returns.loc[close.index[3]] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"cost_bps": -1}, r"cost_bps must be >= 0 \(got -1\)"),
    ({"execution_lag_sessions": 0}, r"execution_lag_sessions must be >= 1 \(got 0\); trading at the decision close"),
])
def test_bad_arguments(kwargs, match):
    close = make_prices({"A": [1, 2, 3]})
    with pytest.raises(ValueError, match=match):
        run_backtest(pd.DataFrame({"A": [1.0]}, index=close.index[:1]), close, **kwargs)


def test_bad_weights_are_refused_with_the_fix():
    close = make_prices({"A": [np.nan, np.nan, 3, 4], "B": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match=r"weights name symbols \['C'\] that are not in the price frame"):
        run_backtest(pd.DataFrame({"C": [1.0]}, index=close.index[:1]), close)
    with pytest.raises(ValueError, match="weights contain NaN or infinite values; use 0"):
        run_backtest(pd.DataFrame({"A": [np.nan]}, index=close.index[:1]), close)
    with pytest.raises(ValueError, match=r"weights are dated 2019-12-31, which is not a session"):
        run_backtest(pd.DataFrame({"B": [1.0]}, index=[pd.Timestamp("2019-12-31")]), close)
    with pytest.raises(ValueError, match=r"weight on A traded on 2020-01-02, when it has no price"):
        run_backtest(pd.DataFrame({"A": [1.0]}, index=close.index[:1]), close)
    with pytest.raises(ValueError, match="no trade falls inside the price history"):
        run_backtest(pd.DataFrame({"B": [1.0]}, index=close.index[-1:]), close)
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
