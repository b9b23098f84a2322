"""Delistings in the backtest, against a plain loop over sessions written from the rules a user reads:

- a holding whose prices end is closed at its last close; its value, times 1 + delisting_return,
  is cash on the next session (a short's value takes the same return);
- a target on a symbol priced at its decision date but not at its trade session (it delisted in
  between) is dropped: its weight stays in cash;
- each is an event: ``delisted`` dated at the last close, ``target_dropped`` at the trade session.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from research_lib.backtest import NoPosition, run_backtest
from tests.conftest import make_prices


def reference(weights: pd.DataFrame, close: pd.DataFrame, lag: int, cost_bps: float, delisting_return):
    """Daily returns from the first trade that takes a position, and the events, by a loop over sessions
    holding shares and cash."""
    price = close.to_numpy(dtype=float)
    sessions = close.index
    decisions = {sessions.get_loc(d) + lag: row.to_numpy(dtype=float) for d, row in weights.iterrows()
                 if sessions.get_loc(d) + lag < len(sessions)}
    shares, cash, started = np.zeros(price.shape[1]), 1.0, False
    navs, dates, events = [], [], []
    for t in range(len(sessions)):
        nav_before = cash + np.nansum(shares * price[t - 1]) if t else cash  # at the previous close
        for j in np.flatnonzero(shares):
            if np.isnan(price[t, j]):  # prices ended at t - 1: closed at the last close
                value = shares[j] * price[t - 1, j]
                events.append((sessions[t - 1], close.columns[j], "delisted", value / nav_before))
                cash += value * (1.0 + (delisting_return or 0.0))
                shares[j] = 0.0
        nav = cash + np.nansum(shares * price[t])
        if t in decisions:
            target = decisions[t].copy()
            for j in np.flatnonzero((target != 0) & np.isnan(price[t])):
                events.append((sessions[t], close.columns[j], "target_dropped", target[j]))
                target[j] = 0.0
            if started or target.any():
                if not started:
                    navs.append(nav)  # the NAV before the first trade: its day's return is the cost alone
                    events = [e for e in events if e[0] >= sessions[t]]
                started = True
                current = np.where(shares != 0, shares * np.nan_to_num(price[t]), 0.0) / nav
                nav *= 1.0 - cost_bps / 1e4 * np.abs(target - current).sum()
                shares = np.where(target != 0, target * nav / np.where(np.isnan(price[t]), 1.0, price[t]), 0.0)
                cash = nav * (1.0 - target.sum())
        if started:
            navs.append(nav)
            dates.append(sessions[t])
    returns = pd.Series(np.array(navs[1:]) / np.array(navs[:-1]) - 1.0, index=pd.DatetimeIndex(dates))
    return returns, events, min(navs, default=1.0)


@st.composite
def delisting_cases(draw):
    n_sessions, n_symbols = draw(st.integers(25, 70)), draw(st.integers(2, 4))
    rng = np.random.default_rng(draw(st.integers(0, 10**6)))
    closes = {}
    for j in range(n_symbols):
        first = draw(st.integers(0, n_sessions // 3))
        last = draw(st.one_of(st.just(n_sessions - 1), st.integers(first + 3, n_sessions - 2)))
        path = 50.0 * np.cumprod(1.0 + rng.normal(0.0, 0.03, n_sessions))
        path[:first], path[last + 1:] = np.nan, np.nan
        closes[f"S{j}"] = path
    prices = make_prices(closes)
    close = prices["close"]
    rows = sorted(draw(st.sets(st.integers(0, n_sessions - 1), min_size=1, max_size=8)))
    targets = rng.choice([0.0, 0.3, -0.2, 0.5, 0.25], size=(len(rows), n_symbols))
    targets[np.isnan(close.to_numpy()[rows])] = 0.0  # a decision sees only symbols priced at its date
    weights = pd.DataFrame(targets, index=close.index[rows], columns=close.columns)
    return prices, weights, draw(st.integers(1, 3)), draw(st.sampled_from([0.0, 10.0, 50.0])), \
        draw(st.sampled_from([None, -1.0, -0.3, 0.0, 0.2]))


@settings(max_examples=150, deadline=None)
@given(delisting_cases())
def test_the_backtest_matches_a_loop_over_sessions_through_listings_and_delistings(case):
    prices, weights, lag, cost_bps, delisting_return = case
    expected, expected_events, lowest_nav = reference(weights, prices["close"], lag, cost_bps, delisting_return)
    assume(lowest_nav > 1e-9)  # a book wiped out (a leveraged holding delisted at -100 %) has no returns to compare
    try:
        result = run_backtest(weights, prices, cost_bps, lag, delisting_return=delisting_return)
    except NoPosition:
        assert expected.empty
        return
    assert list(result.returns.index) == list(expected.index)
    np.testing.assert_allclose(result.returns.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-10)
    got = sorted((e.date, e.symbol, e.event) for e in result.events.itertuples())
    assert got == sorted((d, s, e) for d, s, e, _ in expected_events)
    by_key = {(d, s, e): w for d, s, e, w in expected_events}
    for e in result.events.itertuples():
        assert e.weight == pytest.approx(by_key[(e.date, e.symbol, e.event)], abs=1e-10)
        assert e.event == "target_dropped" or e._5 == (delisting_return or 0.0)


def test_a_holding_delisted_for_cause_loses_the_delisting_return_on_the_next_session():
    prices = make_prices({"A": [10.0, 11.0, 12.0, np.nan, np.nan], "B": [5.0] * 5})
    weights = pd.DataFrame({"A": [0.5], "B": [0.5]}, index=prices.index[:1])
    kept = run_backtest(weights, prices, 0.0)
    cut = run_backtest(weights, prices, 0.0, delisting_return=-0.3)
    value_at_last_close = 0.5 * 12.0 / 11.0  # bought at 11 (the close after the decision), last close 12
    nav_at_last_close = value_at_last_close + 0.5
    assert kept.returns.iloc[2] == pytest.approx(0.0)  # closed at its last close: no return on the next day
    assert cut.returns.iloc[2] == pytest.approx(-0.3 * value_at_last_close / nav_at_last_close)
    assert cut.holdings["A"].iloc[2:].eq(0).all()
    (event,) = cut.events.itertuples()
    assert (event.date, event.symbol, event.event) == (prices.index[2], "A", "delisted")
    assert event.weight == pytest.approx(value_at_last_close / nav_at_last_close) and event._5 == -0.3


def test_a_target_on_a_stock_delisted_before_its_trade_is_dropped_not_an_error():
    prices = make_prices({"A": [10.0, 11.0, np.nan, np.nan], "B": [5.0, 5.0, 5.5, 6.0]})
    weights = pd.DataFrame({"A": [0.4], "B": [0.6]}, index=prices.index[1:2])  # decided at A's last close
    result = run_backtest(weights, prices, 0.0)
    assert result.holdings.loc[prices.index[2]].to_dict() == {"A": 0.0, "B": 0.6}
    (event,) = result.events.itertuples()
    assert (event.date, event.symbol, event.event, event.weight) == (prices.index[2], "A", "target_dropped", 0.4)


def test_a_target_on_a_stock_not_listed_at_its_decision_nor_its_trade_is_refused():
    prices = make_prices({"A": [np.nan, np.nan, 10.0, 11.0], "B": [5.0] * 4})
    with pytest.raises(ValueError, match=r"weight on A traded on 2020-01-02, when it has no price, nor at its "
                                         r"decision date \(not listed yet, or delisted\)"):
        run_backtest(pd.DataFrame({"A": [1.0]}, index=prices.index[:1]), prices)


@pytest.mark.parametrize("bad", [-1.5, float("nan"), float("inf"), "0.1", True])
def test_a_delisting_return_that_is_no_return_is_refused(bad):
    prices = make_prices({"A": [10.0, 11.0, 12.0]})
    with pytest.raises(ValueError, match="delisting_return must be a finite number >= -1"):
        run_backtest(pd.DataFrame({"A": [1.0]}, index=prices.index[:1]), prices, delisting_return=bad)


def test_the_run_passes_its_delisting_return_to_the_backtest_and_a_sweep_refuses_one():
    from research_lib.config import load_config
    from research_lib.sweeps import families, run_sweep
    from tests.conftest import REPO

    model = load_config(REPO / "params" / "smoke.yaml", ["backtest.delisting_return=-0.3"]).backtest_model()
    assert model["delisting_return"] == -0.3
    assert "delisting_return" not in load_config(REPO / "params" / "smoke.yaml").backtest_model()
    prices = make_prices({"A": list(10.0 + np.arange(40.0)), "B": list(20.0 + np.arange(40.0))})
    with pytest.raises(ValueError, match="the sweep engine closes a delisted holding at its last close"):
        run_sweep(families.rsi_thresholds, {"window": [5], "lower": [30], "upper": [70]}, prices, **model)
