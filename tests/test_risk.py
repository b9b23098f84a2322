"""Specification of the pre-trade risk layer (TRADING_SAFETY.md checks 1, 4-7, 9, 11)."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from research_lib.risk import (KillSwitch, Order, ReferencePrice, RiskInputError, RiskLimits, Side, check_orders,
                               clamp_weights, drawdown_circuit_breaker, next_state, resume, volatility_target)

NOW = dt.datetime(2026, 1, 5, 15, 0, 0)
EQUITY = 100_000.0
BASE = dict(max_weight=0.2, max_gross_exposure=1.0, max_net_exposure=1.0, max_order_notional=50_000,
            max_adv_fraction=0.01, fat_finger_band=0.05, max_price_age_seconds=60, max_open_orders=10,
            max_daily_orders=100, daily_loss_limit=0.02, drawdown_stop=0.1)


def limits(**changes) -> RiskLimits:
    return RiskLimits(**{**BASE, **changes})


def fresh(price: float, age_seconds: float = 1.0) -> ReferencePrice:
    return ReferencePrice(price, NOW - dt.timedelta(seconds=age_seconds))


PRICES = {"AAA": fresh(100.0), "BBB": fresh(50.0)}
ADV = {"AAA": 1e7, "BBB": 1e7}


def check(orders, positions=None, *, lim=None, state=KillSwitch.ACTIVE, prices=PRICES, adv=ADV, **kw):
    return check_orders(orders, positions or {}, prices, lim or limits(), state, EQUITY, NOW, adv=adv, **kw)


def buy(symbol="AAA", quantity=None, **kw) -> Order:
    return Order(symbol, Side.BUY, quantity=quantity, **kw)


def sell(symbol="AAA", quantity=None, **kw) -> Order:
    return Order(symbol, Side.SELL, quantity=quantity, **kw)


def only_rejection(decision) -> str:
    assert not decision.to_send and len(decision.rejected) == 1
    return decision.rejected[0].reason


def only_clamp(decision):
    assert not decision.accepted and not decision.rejected and len(decision.clamped) == 1
    return decision.clamped[0]


# ---------------------------------------------------------------- limits and orders

def test_limits_refuse_unknown_keys_and_are_frozen():
    with pytest.raises(ValidationError, match="max_wieght"):
        RiskLimits(**BASE, max_wieght=0.1)
    with pytest.raises(ValidationError, match="frozen"):
        limits().max_weight = 0.5


@pytest.mark.parametrize("changes, message", [
    (dict(max_weight=1.5), "max_weight 1.5 exceeds max_gross_exposure 1.0; lower max_weight"),
    (dict(max_net_exposure=2.0), "max_net_exposure 2.0 exceeds max_gross_exposure 1.0; net can never exceed gross"),
    (dict(fat_finger_band=0.0), "fat_finger_band"),
])
def test_inconsistent_limits_are_refused(changes, message):
    with pytest.raises(ValidationError, match=message):
        limits(**changes)


def test_order_side_accepts_its_value_and_refuses_others():
    assert Order("AAA", "sell", quantity=1).side is Side.SELL
    with pytest.raises(RiskInputError, match=r"side is 'hold'; use one of \['buy', 'sell'\]"):
        Order("AAA", "hold", quantity=1)


# ---------------------------------------------------------------- accepted

def test_an_order_within_every_limit_is_accepted_and_updates_the_book():
    order = buy(quantity=100)
    decision = check([order], {"AAA": 10})
    assert decision.accepted == (order,) and decision.to_send == (order,)
    assert decision.positions_after == {"AAA": 110}


# ---------------------------------------------------------------- kill switch (check 1)

def test_halted_sends_nothing():
    decision = check([buy(quantity=1), sell(quantity=1)], {"AAA": 10}, state=KillSwitch.HALTED)
    assert not decision.to_send
    assert [r.reason for r in decision.rejected] == ["kill_switch: state HALTED allows only cancels"] * 2


def test_reducing_allows_only_position_reducing_orders():
    decision = check([buy("AAA", 1), sell("BBB", 5)], {"AAA": 10, "BBB": 10}, state=KillSwitch.REDUCING)
    assert [o.symbol for o in decision.accepted] == ["BBB"]
    assert decision.rejected[0].reason == ("kill_switch: state REDUCING allows only orders that reduce a position; "
                                           "AAA position is 10 and this is a buy")


def test_reducing_never_lets_a_cover_flip_the_position():
    clamp = only_clamp(check([buy(quantity=150)], {"AAA": -100}, state=KillSwitch.REDUCING))
    assert clamp.order.quantity == 100
    assert clamp.reason == ("kill_switch: state REDUCING: AAA buy of 150 would flip position -100; "
                            "quantity reduced from 150 to 100")


# ---------------------------------------------------------------- input sanity (check 4)

@pytest.mark.parametrize("order, message", [
    (Order("AAA", Side.BUY, quantity=1, notional=100), "quantity=1 and notional=100; give exactly one"),
    (Order("AAA", Side.BUY), "quantity=None and notional=None; give exactly one"),
    (buy(quantity=float("nan")), "AAA quantity is nan; it must be finite and positive"),
    (buy(quantity=-5), "AAA quantity is -5; it must be finite and positive"),
    (buy(quantity=True), "AAA quantity is True"),
    (Order("AAA", Side.BUY, notional=float("inf")), "AAA notional is inf; it must be finite"),
    (buy(quantity=1, limit_price=float("nan")), "AAA limit_price is nan; it must be finite and positive"),
    (buy("", quantity=1), "input: symbol is ''; give a non-empty symbol"),
])
def test_malformed_orders_are_rejected(order, message):
    assert message in only_rejection(check([order]))


# ---------------------------------------------------------------- reference price and fat finger (check 5)

def test_reference_price_reasons():
    cases = [({}, "reference_price: AAA has no finite positive reference price (None); fail closed"),
             ({"AAA": fresh(100.0, age_seconds=61)},
              "max_price_age_seconds: AAA reference price is 61.0 s old > limit 60.0 s; fail closed"),
             ({"AAA": fresh(100.0, age_seconds=-5)},
              "max_price_age_seconds: AAA reference price is dated 5.0 s after now; fail closed")]
    for prices, message in cases:
        assert only_rejection(check([buy(quantity=1)], prices=prices)) == message
    assert only_rejection(check([buy(quantity=1)], prices={"AAA": fresh(float("nan"))})).startswith(
        "reference_price: AAA has no finite positive reference price")


def test_mixing_naive_and_aware_times_is_an_input_error():
    aware = {"AAA": ReferencePrice(100.0, dt.datetime(2026, 1, 5, 15, tzinfo=dt.timezone.utc))}
    with pytest.raises(RiskInputError, match="mix naive and tz-aware datetimes"):
        check([buy(quantity=1)], prices=aware)


def test_fat_finger_band_around_the_reference():
    assert only_rejection(check([buy(quantity=1, limit_price=106)])) == (
        "fat_finger_band: AAA limit price 106 is 6.00% from reference 100 > limit 5.00%")
    assert only_rejection(check([sell(quantity=1, limit_price=94)], {"AAA": 5})).startswith("fat_finger_band")
    assert len(check([buy(quantity=1, limit_price=104.9)]).accepted) == 1


# ---------------------------------------------------------------- order size and ADV (check 6)

def test_max_order_notional_rejects_and_values_at_the_limit_price():
    assert only_rejection(check([buy(quantity=600)], lim=limits(max_weight=1.0))) == (
        "max_order_notional: AAA order notional 60,000.00 > limit 50,000.00")
    assert check([buy(quantity=490, limit_price=102)], lim=limits(max_weight=1.0)).accepted
    assert only_rejection(check([buy(quantity=495, limit_price=102)], lim=limits(max_weight=1.0))).startswith(
        "max_order_notional: AAA order notional 50,490.00")


def test_max_order_quantity_is_optional():
    assert only_rejection(check([buy(quantity=11)], lim=limits(max_order_quantity=10))) == (
        "max_order_quantity: AAA order quantity 11 > limit 10")
    assert check([buy(quantity=11)]).accepted


def test_adv_share_clamps_and_a_missing_adv_fails_closed():
    clamp = only_clamp(check([buy(quantity=15)], adv={"AAA": 1000}))
    assert clamp.order.quantity == 10 and clamp.original.quantity == 15
    assert clamp.reason == ("max_adv_fraction: AAA order of 15 is 0.0150 of ADV 1000 > limit 0.0100; "
                            "quantity reduced from 15 to 10")
    assert only_rejection(check([buy(quantity=1)], adv={})) == (
        "max_adv_fraction: AAA has no finite positive average daily volume (None); fail closed")


# ---------------------------------------------------------------- exposure and no short (check 7)

def test_a_sell_never_exceeds_the_position_less_open_sells():
    clamp = only_clamp(check([sell(quantity=100)], {"AAA": 100}, open_sell_quantity={"AAA": 30}))
    assert clamp.order.quantity == 70
    assert clamp.reason == ("no_short: AAA sell of 100 exceeds position 100 less open sells 30 = 70; "
                            "quantity reduced from 100 to 70")
    assert only_rejection(check([sell(quantity=1)])) == (
        "no_short: AAA sell of 1 exceeds position 0 less open sells 0 = 0; nothing fits")


def test_allow_short_lets_a_long_short_book_sell_short_within_the_other_limits():
    shorts = limits(allow_short=True)
    decision = check([sell(quantity=150)], {"AAA": 100}, lim=shorts)
    assert decision.accepted and decision.positions_after["AAA"] == -50, "a deliberate short is sent"
    clamp = only_clamp(check([sell(quantity=400)], lim=shorts))
    assert clamp.order.quantity == pytest.approx(200), "max_weight binds on the short side too"
    assert clamp.reason.startswith("max_weight: AAA weight after the order would be -0.4000")
    assert "no_short" in only_rejection(check([sell(quantity=1)])), "shorting stays off by default"


def test_max_weight_clamps_the_buy():
    clamp = only_clamp(check([buy(quantity=300)]))
    assert clamp.order.quantity == pytest.approx(200)
    assert clamp.reason.startswith("max_weight: AAA weight after the order would be 0.3000 > limit 0.2000; "
                                   "quantity reduced from 300 to 200")


def test_an_order_exactly_at_a_limit_is_accepted_and_one_share_more_is_clamped():
    assert check([buy(quantity=200)]).accepted  # weight 0.2000 = max_weight
    assert only_clamp(check([buy(quantity=201)])).order.quantity == pytest.approx(200)


def test_a_notional_order_is_clamped_in_notional():
    clamp = only_clamp(check([Order("AAA", Side.BUY, notional=30_000)]))
    assert clamp.order.notional == pytest.approx(20_000) and clamp.order.quantity is None
    assert clamp.reason.endswith("notional reduced from 30000 to 20000")


def test_gross_exposure_clamps_the_buy():
    lim = limits(max_weight=0.5, max_gross_exposure=0.6, max_net_exposure=0.6)
    clamp = only_clamp(check([buy(quantity=200)], {"BBB": 1000}, lim=lim))
    assert clamp.order.quantity == pytest.approx(100)
    assert clamp.reason.startswith("max_gross_exposure: gross after the order would be 0.7000 > limit 0.6000")


def test_net_exposure_clamps_the_buy():
    clamp = only_clamp(check([buy(quantity=200)], lim=limits(max_net_exposure=0.1)))
    assert clamp.order.quantity == pytest.approx(100)
    assert clamp.reason.startswith("max_net_exposure: net after the order would be 0.2000 > limit 0.1000")


def test_a_book_beyond_a_limit_may_shrink_but_not_grow():
    book = {"BBB": 1000}  # weight 0.5 > max_weight 0.2
    assert check([sell("BBB", 100)], book).accepted
    assert only_rejection(check([buy("BBB", 1)], book)) == (
        "max_weight: BBB weight after the order would be 0.5005 > limit 0.5000; nothing fits")


def test_a_flip_through_zero_is_clamped_at_the_limit_on_the_other_side():
    lim = limits(max_weight=0.07, max_order_notional=1e6)
    book = {"BBB": -1000}  # weight -0.5, far beyond max_weight 0.07
    assert check([buy("BBB", 500)], book, lim=lim).accepted, "reducing the short stays allowed"
    clamp = only_clamp(check([buy("BBB", 2000)], book, lim=lim))  # to +0.5
    assert clamp.order.quantity == pytest.approx(1140)  # cover 1000, then open 140 = 0.07
    assert clamp.reason == ("max_weight: BBB weight after the order would be 0.5000 > limit 0.0700; "
                            "quantity reduced from 2000 to 1140")
    assert only_rejection(check([sell("BBB", 1)], book, lim=lim.model_copy(update={"allow_short": True}))).startswith(
        "max_weight: BBB weight after the order would be -0.5005 < limit -0.5000")


def test_net_exposure_beyond_its_limit_may_shrink_but_not_flip():
    lim = limits(max_weight=1.0, max_net_exposure=0.1, allow_short=True, max_order_notional=1e6)
    book = {"AAA": -500}  # net -0.5
    clamp = only_clamp(check([buy(quantity=1000)], book, lim=lim))  # to net +0.5
    assert clamp.order.quantity == pytest.approx(600)
    assert clamp.reason.startswith("max_net_exposure: net after the order would be 0.5000 > limit 0.1000")


def test_a_flip_opens_its_new_side_against_the_gross_left_once_the_old_one_is_closed():
    lim = limits(max_weight=0.3, max_gross_exposure=0.5, max_net_exposure=0.5, allow_short=True)
    book = {"AAA": 200, "BBB": 1000}  # weights 0.2 and 0.5: gross 0.7 > 0.5
    assert check([sell("AAA", 200)], book, lim=lim).accepted, "closing is allowed"
    # Closed, gross is 0.5 = its limit: nothing of a new short fits, although gross would not grow.
    assert only_clamp(check([sell("AAA", 400)], book, lim=lim)).order.quantity == pytest.approx(200)


def test_a_book_at_a_limit_rejects_a_buy_rather_than_clamping_it_to_round_off():
    lim = limits(max_weight=0.3, max_gross_exposure=0.56, max_net_exposure=0.56, max_order_notional=math.inf)
    for equity, (pa, pb, pc) in itertools.product([3_540_868.363319587, 826_043.9821282628, 1e5, 7.5],
                                                  itertools.permutations([0.0998, 1.37, 53.1, 21_219.1], 3)):
        book = {"AAA": 0.26 * equity / pa, "BBB": 0.30 * equity / pb}  # gross 0.56 = its limit, up to round-off
        prices = {"AAA": fresh(pa), "BBB": fresh(pb), "CCC": fresh(pc)}
        decision = check_orders([buy("CCC", 0.01 * equity / pc)], book, prices, lim, KillSwitch.ACTIVE, equity, NOW,
                                adv={"CCC": 1e300})
        assert only_rejection(decision).endswith("; nothing fits"), (equity, pa, pb, pc)


def test_a_clamp_that_leaves_nothing_to_send_drops_the_order():
    tiny = Order("AAA", Side.BUY, notional=1e-315)  # 1e-305 shares at 1e-10, clamped to 1e-315 shares by the ADV
    decision = check([tiny], prices={"AAA": fresh(1e-10)}, adv={"AAA": 1e-313})
    reason = only_rejection(decision)
    assert reason.startswith("max_adv_fraction: AAA order of 1e-305 is ")
    assert reason.endswith("; notional reduced from 1e-315 to 0: nothing to send, order dropped")
    assert decision.positions_after == {}
    assert only_rejection(check([Order("AAA", Side.BUY, notional=1e-323)])) == (
        "input: AAA notional 9.88131e-324 at price 100 is 0 shares; give a notional worth a finite, positive "
        "number of shares")


def test_the_adv_share_bounds_all_the_orders_of_a_symbol_in_the_batch():
    decision = check([buy(quantity=6), buy(quantity=6)], adv={"AAA": 1000})
    assert decision.accepted[0].quantity == 6 and decision.clamped[0].order.quantity == pytest.approx(4)
    assert decision.clamped[0].reason.startswith(
        "max_adv_fraction: AAA order of 6 (with 6 sent before it) is 0.0120 of ADV 1000 > limit 0.0100")


def test_clamp_weights_clamps_a_flip_the_same_way_whatever_the_capital():
    lim = limits(max_weight=0.07)  # max_order_notional 50,000: one order at 10,000 of capital, 200 at 10 million
    for capital in (1e4, 1e5, 1e7):
        final, events = clamp_weights(pd.Series({"AAA": -0.5}), pd.Series({"AAA": 0.5}), pd.Series({"AAA": 100.0}), lim,
                                      capital, NOW)
        assert final["AAA"] == pytest.approx(0.07), capital
        assert events["action"].tolist() == ["clamped"] and events["reason"][0].startswith("max_weight: AAA")


def test_clamp_weights_splits_a_trade_larger_than_max_order_quantity_rather_than_rejecting_it():
    final, events = clamp_weights(pd.Series(dtype=float), pd.Series({"AAA": 0.1}), pd.Series({"AAA": 100.0}),
                                  limits(max_order_quantity=10), EQUITY, NOW)  # 100 shares: 10 orders of 10
    assert final["AAA"] == pytest.approx(0.1) and events.empty


def test_open_order_count_and_daily_cap():
    decision = check([buy("AAA", 1), buy("BBB", 1)], lim=limits(max_open_orders=2), open_orders=1)
    assert decision.rejected[0].reason == "max_open_orders: open orders would be 3 > limit 2"
    decision = check([buy("AAA", 1), buy("BBB", 1)], lim=limits(max_daily_orders=5), orders_sent_today=4)
    assert decision.rejected[0].reason == "max_daily_orders: orders today would be 6 > limit 5"
    assert [o.symbol for o in decision.accepted] == ["AAA"]


# ---------------------------------------------------------------- ordering and the hypothetical book

def test_each_order_is_checked_against_the_book_left_by_the_previous_ones():
    decision = check([buy(quantity=150), buy(quantity=150)])
    assert decision.accepted[0].quantity == 150 and decision.clamped[0].order.quantity == pytest.approx(50)
    decision = check([sell(quantity=60), sell(quantity=60)], {"AAA": 100})
    assert decision.clamped[0].order.quantity == pytest.approx(40)


def test_processing_is_deterministic_reducing_orders_first():
    orders = [buy("BBB", 300), buy("AAA", 100), sell("BBB", 200)]
    lim = limits(max_weight=0.5, max_gross_exposure=0.6, max_net_exposure=0.6)
    decision = check(orders, {"BBB": 1000}, lim=lim)
    assert [(o.symbol, o.side) for o in decision.to_send] == [("BBB", Side.SELL), ("AAA", Side.BUY), ("BBB", Side.BUY)]
    assert check(orders[::-1], {"BBB": 1000}, lim=lim) == decision


@pytest.mark.parametrize("kwargs, message", [
    (dict(positions={"CCC": 5}), r"positions hold \['CCC'\] without a finite positive reference price"),
    (dict(positions={"AAA": float("nan")}), r"positions\['AAA'\] is nan; pass a finite number of shares"),
    (dict(open_orders=-1), "open_orders is -1; pass a non-negative integer"),
    (dict(equity=0.0), "equity is 0.0; pass the account's finite, positive net liquidation value"),
    (dict(state="ACTIVE"), "state is 'ACTIVE'; pass one of"),
])
def test_malformed_books_are_input_errors(kwargs, message):
    args = dict(positions={}, state=KillSwitch.ACTIVE, equity=EQUITY, open_orders=0)
    args.update(kwargs)
    with pytest.raises(RiskInputError, match=message):
        check_orders([buy(quantity=1)], args["positions"], PRICES, limits(), args["state"], args["equity"], NOW,
                     adv=ADV, open_orders=args["open_orders"])


# ---------------------------------------------------------------- kill-switch transitions (check 11)

@pytest.mark.parametrize("state, pnl, drawdown, expected, reason", [
    (KillSwitch.ACTIVE, -0.03, 0.05, KillSwitch.REDUCING,
     "ACTIVE -> REDUCING: daily_loss_limit: daily loss 0.0300 >= limit 0.0200"),
    (KillSwitch.ACTIVE, 0.01, 0.10, KillSwitch.HALTED, "ACTIVE -> HALTED: drawdown_stop: drawdown 0.1000 >= limit 0.1000"),
    (KillSwitch.REDUCING, -0.05, 0.12, KillSwitch.HALTED, "REDUCING -> HALTED: drawdown_stop"),
    (KillSwitch.ACTIVE, -0.019, 0.09, KillSwitch.ACTIVE, None),
    (KillSwitch.REDUCING, 0.05, 0.0, KillSwitch.REDUCING, None),
    (KillSwitch.HALTED, 0.05, 0.0, KillSwitch.HALTED, None),
    (KillSwitch.HALTED, -0.05, 0.0, KillSwitch.HALTED, None),
    (KillSwitch.ACTIVE, float("nan"), 0.0, KillSwitch.HALTED, "ACTIVE -> HALTED: daily_pnl_frac nan"),
])
def test_next_state(state, pnl, drawdown, expected, reason):
    new, why = next_state(state, pnl, drawdown, limits())
    assert new is expected
    assert why is None if reason is None else why.startswith(reason)


def test_next_state_refuses_a_negative_drawdown():
    with pytest.raises(RiskInputError, match="drawdown_frac is -0.1; pass the drawdown as a positive fraction"):
        next_state(KillSwitch.ACTIVE, 0.0, -0.1, limits())


@given(st.sampled_from(list(KillSwitch)), st.floats(-1, 1), st.floats(0, 1))
def test_next_state_never_loosens(state, pnl, drawdown):
    new, why = next_state(state, pnl, drawdown, limits())
    assert new.rank >= state.rank
    assert (why is None) == (new is state)


def test_resume_is_explicit_and_only_loosens():
    assert resume(KillSwitch.HALTED, KillSwitch.ACTIVE, " checked the book ") == (
        KillSwitch.ACTIVE, "HALTED -> ACTIVE (manual resume): checked the book")
    with pytest.raises(RiskInputError, match="reason is '  '; say why trading may resume"):
        resume(KillSwitch.HALTED, KillSwitch.ACTIVE, "  ")
    with pytest.raises(RiskInputError, match="to is HALTED but state is REDUCING; resume only loosens"):
        resume(KillSwitch.REDUCING, KillSwitch.HALTED, "why")
    with pytest.raises(RiskInputError, match="to is 'active'; pass one of"):
        resume(KillSwitch.HALTED, "active", "why")


# ---------------------------------------------------------------- portfolio controls

def _frame(seed: int, n: int = 80) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2020-01-01", periods=n, name="date")
    returns = pd.DataFrame(rng.normal(0, 0.01, (n, 3)), index=index, columns=list("XYZ"))
    weights = pd.DataFrame(rng.dirichlet(np.ones(3), n), index=index, columns=list("XYZ"))
    return weights, returns


def test_volatility_target_oracle_warm_up_and_cap():
    index = pd.bdate_range("2021-01-01", periods=6)
    returns = pd.DataFrame({"X": [0.01, -0.01, 0.01, -0.01, 0.01, -0.01]}, index=index)
    weights = pd.DataFrame({"X": [1.0] * 6}, index=index)
    vol = 0.01 * math.sqrt(4 / 3) * math.sqrt(252)  # std (ddof=1) of four alternating +-1 %
    scaled = volatility_target(weights, returns, target_vol=0.10, lookback=4, max_leverage=5.0)
    assert scaled["X"].iloc[:4].tolist() == [0.0] * 4
    assert scaled["X"].iloc[4] == pytest.approx(0.10 / vol)
    capped = volatility_target(weights, returns, target_vol=10.0, lookback=4, max_leverage=1.5)
    assert capped["X"].iloc[4] == 1.5
    flat = volatility_target(weights, returns * 0, target_vol=0.1, lookback=4, max_leverage=2.0)
    assert flat["X"].iloc[5] == 2.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(target_vol=0.0), "target_vol is 0.0; pass a number strictly between 0.0 and inf"),
    (dict(lookback=1), "lookback is 1; pass an integer strictly between 1 and inf"),
    (dict(lookback=2.5), "lookback is 2.5; pass an integer"),
])
def test_volatility_target_refuses_bad_parameters(kwargs, message):
    weights, returns = _frame(0)
    with pytest.raises(RiskInputError, match=message):
        volatility_target(weights, returns, **{"target_vol": 0.1, "lookback": 20, **kwargs})


def test_volatility_target_refuses_misaligned_inputs():
    weights, returns = _frame(0)
    with pytest.raises(RiskInputError, match=r"different dates; align them first"):
        volatility_target(weights.iloc[1:], returns, 0.1, 20)
    with pytest.raises(RiskInputError, match=r"returns has no column for \['X'\]"):
        volatility_target(weights, returns.drop(columns="X"), 0.1, 20)
    with pytest.raises(RiskInputError, match="weights contains NaN"):
        volatility_target(weights.where(weights > 0.5), returns, 0.1, 20)


def test_drawdown_circuit_breaker_oracle():
    returns = pd.Series([0.0, -0.1, -0.15, 0.05, 0.05, 0.05, -0.05])
    multiplier = drawdown_circuit_breaker(returns, max_drawdown=0.2, cooldown_days=2)
    assert multiplier.tolist() == [1, 1, 1, 0, 0, 1, 1]  # 0.9 * 0.85 = 0.765: 23.5 % down at the close of t=2


def test_drawdown_circuit_breaker_refuses_bad_inputs():
    with pytest.raises(RiskInputError, match="max_drawdown is 1.5; pass a number strictly between 0.0 and 1.0"):
        drawdown_circuit_breaker(pd.Series([0.0]), 1.5, 5)
    with pytest.raises(RiskInputError, match="cooldown_days is 0; pass an integer"):
        drawdown_circuit_breaker(pd.Series([0.0]), 0.2, 0)
    with pytest.raises(RiskInputError, match=r"returns has NaN or infinite values \(first at 1\)"):
        drawdown_circuit_breaker(pd.Series([0.0, np.nan]), 0.2, 5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), t=st.integers(0, 79), shock=st.floats(-0.5, 0.5))
def test_portfolio_controls_do_not_look_ahead(seed, t, shock):
    weights, returns = _frame(seed)
    changed = returns.copy()
    changed.iloc[t:] = changed.iloc[t:] * 3 + shock  # every return dated t or later
    before = volatility_target(weights, returns, 0.1, 20, max_leverage=3.0)
    after = volatility_target(weights, changed, 0.1, 20, max_leverage=3.0)
    pd.testing.assert_frame_equal(before.iloc[: t + 1], after.iloc[: t + 1])
    strategy = returns.sum(axis=1) * 5  # volatile enough to trip the breaker
    m_before = drawdown_circuit_breaker(strategy, 0.1, 5)
    m_after = drawdown_circuit_breaker(changed.sum(axis=1) * 5, 0.1, 5)
    pd.testing.assert_series_equal(m_before.iloc[: t + 1], m_after.iloc[: t + 1])
