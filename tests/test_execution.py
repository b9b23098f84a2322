"""Execution schedules and the intraday market (issue 18, first part): rules a trader relies on,
checked on generated orders, volumes and daily bars, hostile ones included. Each rule is stated
from its definition, not from how the code computes it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research_lib.broker import MAX_CLIENT_ORDER_ID
from research_lib.execution import (ALGORITHMS, BARS_PER_SESSION, ExecutionConfig, child_order_id, intraday_bars,
                                    plan_schedule, volume_profile)

volumes = st.lists(st.one_of(st.just(0.0), st.floats(0, 5e6), st.floats(1e3, 2e5)), min_size=BARS_PER_SESSION,
                   max_size=BARS_PER_SESSION)
configs = st.builds(lambda algorithm, start, length, cap, band, policy, shown, span: ExecutionConfig(
    algorithm=algorithm, window_start_bar=start, window_end_bar=min(start + length, BARS_PER_SESSION),
    participation_cap=cap, limit_band=band, end_policy=policy, display_fraction=shown, bars_per_slice=span),
    st.sampled_from(ALGORITHMS), st.integers(0, 70), st.integers(1, 78), st.floats(0.001, 1.0),
    st.floats(0.0001, 0.05), st.sampled_from(["cross", "leave"]), st.floats(0.01, 1.0), st.integers(1, 12))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, volume=volumes, quantity=st.one_of(st.just(0.0), st.floats(0, 1e7), st.integers(1, 500)),
       side=st.sampled_from(["buy", "sell"]), price=st.floats(0.01, 1e5), lot=st.sampled_from([1.0, 0.0001, 100.0]))
def test_a_schedule_adds_up_respects_the_cap_and_the_band_and_never_works_ahead(config, volume, quantity, side, price,
                                                                                lot):
    slices, left = plan_schedule("trend-20240102-AAPL-b", side, quantity, price, volume, config, lot_size=lot,
                                 fat_finger_band=0.05)
    planned = sum(s.lots for s in slices) + round(left / lot)
    assert planned * lot <= quantity * (1 + 1e-12), "never more than the parent (up to float error)"
    assert (planned + 1) * lot > quantity * (1 - 1e-12), "no whole lot of the parent left out"
    assert left >= 0 and all(s.lots > 0 for s in slices)
    if config.algorithm == "market":
        assert len(slices) <= 1 and left == 0 and all(s.bar == config.window_start_bar for s in slices), \
            "market: the whole parent at once, the baseline without a cap"
    for s in slices:
        span = volume[s.bar:s.bar + s.bars]
        assert len(span) == s.bars >= 1
        if config.algorithm != "market":
            assert s.quantity <= config.participation_cap * sum(span) + 1e-6 * lot, "over the participation cap"
        if config.algorithm in ("market", "iceberg") or config.bars_per_slice == 1:
            assert s.bars == 1
        else:
            assert s.bars <= config.bars_per_slice
            in_window = s.bar < config.window_end_bar
            assert (s.bar + s.bars <= config.window_end_bar) if in_window else s.bar + s.bars <= len(volume), \
                "a child works inside the window, or after it"
        move = s.limit_price / price - 1
        assert (0 < move <= config.limit_band + 1e-12) if side == "buy" else (-config.limit_band - 1e-12 <= move < 0)
        assert s.bar >= config.window_start_bar
        assert s.phase == ("window" if s.bar < config.window_end_bar else "after window")
    assert [s.bar for s in slices] == sorted(s.bar for s in slices) and len({s.bar for s in slices}) == len(slices)
    assert all(a.bar + a.bars <= b.bar for a, b in zip(slices, slices[1:])), "children never overlap in time"
    if config.end_policy == "leave":
        assert all(s.bar < config.window_end_bar for s in slices)
    ids = [s.client_order_id for s in slices]
    assert len(set(ids)) == len(ids) and all(len(i) <= MAX_CLIENT_ORDER_ID for i in ids)
    again, _ = plan_schedule("trend-20240102-AAPL-b", side, quantity, price, volume, config, lot_size=lot)
    assert [s.client_order_id for s in again] == ids and again == slices, "the same order gives the same slices"


def test_twap_is_even_and_vwap_follows_the_volume_when_nothing_binds():
    volume = np.r_[np.full(39, 2e6), np.full(39, 6e6)]
    window = ExecutionConfig(window_start_bar=0, window_end_bar=78, participation_cap=1.0, bars_per_slice=1)
    twap, _ = plan_schedule("p", "buy", 7800, 10.0, volume, window.model_copy(update={"algorithm": "twap"}))
    assert {s.lots for s in twap} == {100} and len(twap) == 78
    vwap, _ = plan_schedule("p", "buy", 8000, 10.0, volume, window.model_copy(update={"algorithm": "vwap"}))
    exact = 8000 * volume / volume.sum()
    assert sum(s.lots for s in vwap) == 8000 and all(abs(s.lots - exact[s.bar]) < 1 for s in vwap), \
        "each bar within one share of its volume-weighted share"


def test_what_the_cap_leaves_is_crossed_after_the_window_or_reported():
    volume = np.full(78, 1000.0)
    config = ExecutionConfig(algorithm="twap", window_start_bar=0, window_end_bar=10, participation_cap=0.1,
                             bars_per_slice=1)
    crossed, left = plan_schedule("p", "sell", 5000, 10.0, volume, config)
    assert left == 0 and sum(s.lots for s in crossed) == 5000 and crossed[-1].phase == "after window"
    kept, left = plan_schedule("p", "sell", 5000, 10.0, volume, config.model_copy(update={"end_policy": "leave"}))
    assert sum(s.lots for s in kept) == 1000 and left == 4000
    huge, left = plan_schedule("p", "sell", 1e6, 10.0, volume, config)
    assert sum(s.lots for s in huge) == 7800 and left == 1e6 - 7800, "the cap holds to the close"


@pytest.mark.parametrize("args, message", [
    (("buy", float("nan"), 10.0), "quantity"), (("buy", -5.0, 10.0), "quantity"), (("hold", 5.0, 10.0), "side"),
    (("buy", 5.0, 0.0), "arrival_price"), (("buy", 5.0, float("inf")), "arrival_price")])
def test_hostile_orders_are_refused_by_name(args, message):
    with pytest.raises(ValueError, match=message):
        plan_schedule("p", *args, np.full(78, 1e5), ExecutionConfig())


def test_a_band_wider_than_the_risk_layers_or_a_window_past_the_session_is_refused():
    with pytest.raises(ValueError, match="fat_finger_band"):
        plan_schedule("p", "buy", 5.0, 10.0, np.full(78, 1e5), ExecutionConfig(limit_band=0.02), fat_finger_band=0.01)
    with pytest.raises(ValueError, match="the session has 40 bars"):
        plan_schedule("p", "buy", 5.0, 10.0, np.full(40, 1e5), ExecutionConfig())
    with pytest.raises(ValueError, match="expected_volume"):
        plan_schedule("p", "buy", 5.0, 10.0, np.r_[np.full(77, 1e5), np.nan], ExecutionConfig())
    with pytest.raises(ValueError, match="window_end_bar"):
        ExecutionConfig(window_start_bar=10, window_end_bar=10)


@given(parent=st.text(alphabet="abcXYZ019._-~", min_size=1, max_size=48), k=st.integers(0, 999))
def test_child_ids_fit_the_brokers_limit_and_two_parents_never_share_one(parent, k):
    child = child_order_id(parent, k)
    other = child_order_id(parent + "x", k)
    assert len(child) <= MAX_CLIENT_ORDER_ID and child.endswith(f".{k:03d}") and child != other
    assert child == child_order_id(parent, k)


# ---------------------------------------------------------------- the intraday market

daily_bars = st.tuples(st.floats(1.0, 1000.0), st.floats(0.0, 0.1), st.floats(0.0, 0.1), st.floats(-1.0, 1.0),
                       st.floats(0, 1e9))


@settings(max_examples=100, deadline=None)
@given(bar=daily_bars, symbol=st.sampled_from(["AAPL", "KO", "X"]), seed=st.integers(0, 3))
def test_intraday_bars_are_consistent_with_the_daily_bar(bar, symbol, seed):
    open_, up, down, where, volume = bar
    high, low = open_ * (1 + up), open_ * (1 - down)
    close = low + (high - low) * (where + 1) / 2
    bars = intraday_bars(open_, high, low, close, volume, symbol=symbol, session="2024-01-02", seed=seed)
    assert len(bars) == BARS_PER_SESSION and bars.index.is_monotonic_increasing
    assert bars["open"].iloc[0] == open_ and bars["close"].iloc[-1] == close
    assert bars["high"].max() == pytest.approx(high, rel=1e-9) and bars["low"].min() == pytest.approx(low, rel=1e-9)
    assert (bars["high"] <= high * (1 + 1e-12)).all() and (bars["low"] >= low * (1 - 1e-12)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert int(bars["volume"].sum()) == round(volume) and (bars["volume"] >= 0).all()
    same = intraday_bars(open_, high, low, close, volume, symbol=symbol, session="2024-01-02", seed=seed)
    pd.testing.assert_frame_equal(bars, same)


@pytest.mark.parametrize("bar, message", [((100, 99, 98, 100.5, 1e6), "impossible"),
                                          ((100, 101, 99, 100, -1), "volume"),
                                          ((float("nan"), 101, 99, 100, 1e6), "finite and positive"),
                                          ((0.0, 101, 0.0, 100, 1e6), "finite and positive")])
def test_an_impossible_daily_bar_is_refused_naming_symbol_and_session(bar, message):
    with pytest.raises(ValueError, match=message) as err:
        intraday_bars(*bar, symbol="KO", session="2024-01-02")
    assert "KO on 2024-01-02" in str(err.value)


def test_the_vwap_profile_uses_only_past_sessions():
    sessions = pd.bdate_range("2024-01-01", periods=60)
    rng = np.random.default_rng(0)
    history = pd.DataFrame(rng.uniform(1e3, 1e5, (60, BARS_PER_SESSION)), index=sessions)
    asof = sessions[40]
    before = volume_profile(history, asof, lookback_sessions=20)
    changed = history.copy()
    future = changed.index >= asof
    changed.loc[future] = rng.uniform(0, 1e7, (int(future.sum()), BARS_PER_SESSION)) * np.arange(1, BARS_PER_SESSION + 1)
    after = volume_profile(changed, asof, lookback_sessions=20)
    pd.testing.assert_series_equal(before, after)
    expected = (history.iloc[20:40].div(history.iloc[20:40].sum(axis=1), axis=0)).mean()
    np.testing.assert_allclose(before.to_numpy(), (expected / expected.sum()).to_numpy(), rtol=1e-12)
    assert before.sum() == pytest.approx(1.0)


def test_a_profile_without_usable_past_falls_back_to_the_u_shape():
    sessions = pd.bdate_range("2024-01-01", periods=3)
    empty = pd.DataFrame(0.0, index=sessions, columns=range(BARS_PER_SESSION))
    profile = volume_profile(empty, sessions[-1])
    assert profile.sum() == pytest.approx(1.0) and profile.iloc[0] > profile.iloc[39] < profile.iloc[-1]


# ---------------------------------------------------------------- simulated fills and shortfall

from research_lib.backtest import impact_rate  # noqa: E402  (the oracle: the backtest's impact law)
from research_lib.execution import MarketModel, simulate_execution  # noqa: E402


def session_bars(volume=2_000_000.0, close=100.4):
    return intraday_bars(100.0, 101.5, 98.8, close, volume, symbol="AAPL", session="2020-03-02")


@settings(max_examples=60, deadline=None)
@given(algorithm=st.sampled_from(ALGORITHMS), share=st.floats(0.0001, 0.2), side=st.sampled_from(["buy", "sell"]),
       band=st.floats(0.0002, 0.05), spread=st.floats(0, 50), impact=st.floats(0, 2))
def test_fills_and_shortfall_follow_their_definitions(algorithm, share, side, band, spread, impact):
    bars = session_bars()
    quantity = round(share * bars["volume"].sum())
    config = ExecutionConfig(algorithm=algorithm, limit_band=band)
    slices, _ = plan_schedule("p", side, quantity, 100.0, bars["volume"].to_numpy(), config)
    model = MarketModel(spread_bps=spread, impact_coefficient=impact)
    result = simulate_execution(slices, bars, side=side, quantity=quantity, arrival_price=100.0, daily_volatility=0.02,
                                model=model)
    sign = 1 if side == "buy" else -1
    typical = bars[["open", "high", "low", "close"]].mean(axis=1).to_numpy()

    def price_of(s, shares):  # worked evenly over its bars: their mean typical price, half the spread, and the
        per_bar = shares / s.bars  # backtest's impact law on what it trades in each bar
        reference = typical[s.bar:s.bar + s.bars].mean()
        return reference * (1 + sign * (spread / 2e4 + impact_rate(impact, 0.02, per_bar, bars["volume"].sum())))

    by_id = {s.client_order_id: s for s in slices}
    for row in result.fills.itertuples():
        s = by_id[row.client_order_id]
        assert 0 <= row.filled <= s.quantity
        assert row.price == pytest.approx(price_of(s, row.filled), rel=1e-12)
        if row.filled:
            assert sign * (row.price - s.limit_price) <= 1e-9, "a fill inside its limit"
        if row.filled < s.quantity:  # one more lot would have passed the limit
            assert sign * (price_of(s, row.filled + s.lot_size) - s.limit_price) > -1e-9
    filled = result.fills["filled"].sum()
    paid = (result.fills["filled"] * result.fills["price"]).sum() + (quantity - filled) * result.close_price
    perold = 1e4 * sign * (paid - quantity * 100.0) / (quantity * 100.0) if quantity else 0.0
    assert result.shortfall_bps["total"] == pytest.approx(perold, abs=1e-6)
    parts = sum(v for k, v in result.shortfall_bps.items() if k != "total")
    assert parts == pytest.approx(result.shortfall_bps["total"], abs=1e-9)


def test_slicing_a_large_order_pays_less_impact_than_sending_it_at_once():
    bars = session_bars()
    volume = bars["volume"].to_numpy()
    quantity = 0.05 * volume.sum()
    impact = {}
    for algorithm in ALGORITHMS:
        config = ExecutionConfig(algorithm=algorithm, limit_band=0.05)
        slices, left = plan_schedule("p", "buy", quantity, 100.0, volume, config)
        result = simulate_execution(slices, bars, side="buy", quantity=quantity, arrival_price=100.0,
                                    daily_volatility=0.02, model=MarketModel())
        impact[algorithm] = result.shortfall_bps["impact"]
    reference = bars[["open", "high", "low", "close"]].mean(axis=1).iloc[config.window_start_bar] / 100.0
    assert impact["market"] == pytest.approx(1e4 * 0.5 * 0.02 * math.sqrt(0.05) * reference, rel=1e-9), \
        "sent at once, the parent pays the backtest's square-root impact"
    assert impact["twap"] < impact["market"] / 3 and impact["vwap"] < impact["market"] / 3


def test_a_schedule_that_cannot_fill_reports_the_rest_as_opportunity_cost():
    bars = session_bars(close=101.0)  # the day trades between 98.8 and 101.5
    slices, left = plan_schedule("p", "buy", 1000, 90.0, bars["volume"].to_numpy(), ExecutionConfig(
        algorithm="twap", limit_band=0.001))  # limits at 90.09: no bar comes down to them
    result = simulate_execution(slices, bars, side="buy", quantity=1000, arrival_price=90.0, daily_volatility=0.02,
                                model=MarketModel())
    assert result.filled == 0 and result.average_price is None
    assert result.shortfall_bps["opportunity"] == pytest.approx(1e4 * 11 / 90) == result.shortfall_bps["total"]


def test_modelled_daily_bars_are_possible_days_and_use_no_future_close():
    from research_lib.execution import modelled_daily_bars

    sessions = pd.bdate_range("2020-01-01", periods=120)
    rng = np.random.default_rng(4)
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.02, 120))), sessions)
    bars = modelled_daily_bars(close)
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all() and (bars["high"] >= bars[["open", "close"]].max(
        axis=1)).all() and (bars["open"].iloc[1:].to_numpy() == close.reindex(bars.index).shift(1).iloc[1:]).all()
    cut = sessions[80]
    changed = close.copy()
    changed[changed.index >= cut] *= np.exp(rng.normal(0, 0.3, int((changed.index >= cut).sum())))
    pd.testing.assert_frame_equal(modelled_daily_bars(changed).loc[:cut - pd.Timedelta(days=1)],
                                  bars.loc[:cut - pd.Timedelta(days=1)])


# ---------------------------------------------------------------- found by a hostile review

def test_rounding_never_plans_more_than_the_parent_and_lot_counts_stay_exact():
    volume = np.full(78, 1000.0)
    slices, _ = plan_schedule("p", "buy", 0.9999999995, 100.0, volume, ExecutionConfig(algorithm="twap"))
    assert slices == []
    slices, left = plan_schedule("p", "buy", 0.3, 100.0, volume, ExecutionConfig(algorithm="market"), lot_size=0.1)
    assert [s.lots for s in slices] == [3] and left == 0
    tiny, left = plan_schedule("p", "buy", 1.0, 100.0, np.full(78, 1e12), ExecutionConfig(
        algorithm="twap", end_policy="leave"), lot_size=1e-8)
    assert sum(s.lots for s in tiny) == 100_000_000 and left == 0
    with pytest.raises(ValueError, match="lots"):
        plan_schedule("p", "buy", 1e15, 100.0, volume, ExecutionConfig(), lot_size=1e-8)


def test_an_iceberg_never_shows_more_than_its_display_fraction():
    config = ExecutionConfig(algorithm="iceberg", display_fraction=0.01, window_start_bar=0, window_end_bar=10,
                             participation_cap=1.0, end_policy="leave")
    slices, left = plan_schedule("p", "sell", 1000, 100.0, np.full(78, 1e6), config)
    assert {s.lots for s in slices} == {10} and len(slices) == 10 and left == 900


def test_long_parents_get_distinct_child_ids():
    a = "rebalance-2026-12-04-portfolio-main-order-2990"
    b = "rebalance-2026-12-04-portfolio-main-order-3953"
    assert child_order_id(a, 0) != child_order_id(b, 0) and len(child_order_id(a, 0)) <= MAX_CLIENT_ORDER_ID


@pytest.mark.parametrize("seed", range(12))
def test_intraday_bars_at_large_prices_have_no_nan_and_exact_extremes(seed):
    bars = intraday_bars(1e9, 1.5e9, 5e8, 1e9, 1000, symbol="X", session="2024-01-02", seed=seed)
    assert bars.notna().all().all()
    assert bars["high"].max() == 1.5e9 and bars["low"].min() == 5e8


def test_a_volume_past_what_can_be_counted_is_refused():
    with pytest.raises(ValueError, match="volume"):
        intraday_bars(10, 11, 9, 10, 1e19, symbol="X", session="2024-01-02")


def test_the_profile_skips_negative_rows_and_reads_an_unsorted_history_by_date():
    sessions = pd.to_datetime(["2024-01-08", "2024-01-09", "2024-01-10"])
    history = pd.DataFrame([[0.0, 0.0, 5.0], [9.0, 0.0, 0.0], [10.0, -5.0, 10.0]], index=sessions)
    assert volume_profile(history, "2024-01-11", 3).tolist() == [0.5, 0.0, 0.5], "the negative row is left out"
    shuffled = history.iloc[[1, 0, 2]]
    pd.testing.assert_series_equal(volume_profile(shuffled, "2024-01-11", 2), volume_profile(history, "2024-01-11", 2))


def test_modelled_bars_of_an_unsorted_series_are_those_of_the_sorted_one():
    from research_lib.execution import modelled_daily_bars

    sessions = pd.bdate_range("2024-01-01", periods=40)
    close = pd.Series(np.linspace(100, 120, 40), sessions, name="X")
    pd.testing.assert_frame_equal(modelled_daily_bars(close.iloc[::-1]), modelled_daily_bars(close))
    with pytest.raises(ValueError, match="positive"):
        modelled_daily_bars(close.where(close.index != sessions[5], 0.0))


def test_a_slice_outside_the_session_is_refused_by_name():
    bars = session_bars()
    [s] = plan_schedule("p", "buy", 10, 100.0, bars["volume"].to_numpy(), ExecutionConfig())[0]
    late = type(s)(s.client_order_id, s.index, len(bars), s.lots, s.lot_size, s.limit_price, s.phase)
    with pytest.raises(ValueError, match=f"{s.client_order_id} works in bars 78 to 78"):
        simulate_execution([late], bars, side="buy", quantity=10, arrival_price=100.0, daily_volatility=0.02,
                           model=MarketModel())
