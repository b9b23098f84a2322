"""Specification of the pre-trade risk layer (TRADING_SAFETY.md checks 1, 4-7, 9, 11)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import time
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from research_lib.risk import (KillSwitch, Order, ReferencePrice, RiskInputError, RiskLimits, Side, check_orders,
                               clamp_weights, drawdown_circuit_breaker, next_state, resume, volatility_target)

DUST = (r"shares, not a finite number >= MIN_ORDER_QUANTITY 1e-09 \(the smallest tradable quantity\); "
        r"give a larger order")

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
    (buy(quantity=float("nan")), "AAA quantity is nan; give a finite, positive float"),
    (buy(quantity=-5), "AAA quantity is -5; give a finite, positive float"),
    (buy(quantity=True), "AAA quantity is True (a bool); give a finite, positive float"),
    (buy(quantity=Decimal("1")), "AAA quantity is Decimal('1') (a decimal.Decimal); give a finite, positive float"),
    (Order("AAA", Side.BUY, notional=float("inf")), "AAA notional is inf; give a finite, positive float"),
    (buy(quantity=1, limit_price=float("nan")), "AAA limit_price is nan; give a finite, positive float"),
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
        "max_weight: BBB weight after the order would be 0.5005 > limit 0.2000 (0.5000 now: beyond the limit, it may "
        "only move towards it); nothing fits")


def test_a_flip_through_zero_is_clamped_at_the_limit_on_the_other_side():
    lim = limits(max_weight=0.07, max_order_notional=1e6)
    book = {"BBB": -1000}  # weight -0.5, far beyond max_weight 0.07
    assert check([buy("BBB", 500)], book, lim=lim).accepted, "reducing the short stays allowed"
    clamp = only_clamp(check([buy("BBB", 2000)], book, lim=lim))  # to +0.5
    assert clamp.order.quantity == pytest.approx(1140)  # cover 1000, then open 140 = 0.07
    assert clamp.reason == ("max_weight: BBB weight after the order would be 0.5000 > limit 0.0700; "
                            "quantity reduced from 2000 to 1140")
    assert only_rejection(check([sell("BBB", 1)], book, lim=lim.model_copy(update={"allow_short": True}))).startswith(
        "max_weight: BBB weight after the order would be -0.5005 < limit -0.0700 (-0.5000 now: beyond the limit")


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


@pytest.mark.parametrize("target, action", [(0.1, []), (0.6, ["clamped"])])
def test_clamp_weights_costs_the_same_however_many_orders_a_trade_would_take(target, action):
    lim = limits(max_weight=0.5, max_order_notional=1.0)  # a trade of 1e8 at capital 1e9: 1e8 orders of 1
    start = time.perf_counter()
    final, events = clamp_weights(pd.Series({"AAA": 0.0}), pd.Series({"AAA": target}), pd.Series({"AAA": 1.0}), lim,
                                  1e9, NOW)
    assert time.perf_counter() - start < 2.0
    assert final["AAA"] == pytest.approx(min(target, 0.5)) and events["action"].tolist() == action


def test_open_order_count_and_daily_cap():
    decision = check([buy("AAA", 1), buy("BBB", 1)], lim=limits(max_open_orders=2), open_orders=1)
    assert decision.rejected[0].reason == "max_open_orders: open orders would be 3 > limit 2"
    decision = check([buy("AAA", 1), buy("BBB", 1)], lim=limits(max_daily_orders=5), orders_sent_today=4)
    assert decision.rejected[0].reason == "max_daily_orders: orders today would be 6 > limit 5"
    assert [o.symbol for o in decision.accepted] == ["AAA"]


# ---------------------------------------------------------------- reducing orders are exempt from exposure limits

HEDGE = dict(max_weight=1.0, max_gross_exposure=2.0, max_net_exposure=0.1, allow_short=True, max_order_notional=1e6)
EVEN = {"AAA": fresh(100.0), "BBB": fresh(100.0)}
REDUCES = "and no exposure limit refuses a reducing order"


@pytest.mark.parametrize("state", [KillSwitch.ACTIVE, KillSwitch.REDUCING])
@pytest.mark.parametrize("short, long_, note", [
    ("AAA", "BBB", f"max_net_exposure: net after the order is 1.0000 > limit 0.1000 (it was 0.5000); sent: it "
                   f"reduces the AAA position -500, {REDUCES}"),
    ("BBB", "AAA", f"max_net_exposure: net after the order is -0.5000 < limit -0.1000 (it was 0.5000); sent: it "
                   f"reduces the AAA position 1000, {REDUCES}")])
def test_a_book_beyond_its_net_limit_is_flattened_whatever_its_symbols_are_named(state, short, long_, note):
    book = {short: -500, long_: 1000}  # weights -0.5 and +1.0: net +0.5, beyond 0.1
    decision = check([buy(short, 500), sell(long_, 1000)], book, lim=limits(**HEDGE), state=state, prices=EVEN)
    assert len(decision.accepted) == 2 and decision.positions_after == {short: 0, long_: 0}
    assert [n.reason for n in decision.notes] == [note], "the leg checked first leaves net beyond its limit"


@pytest.mark.parametrize("state", [KillSwitch.ACTIVE, KillSwitch.REDUCING])
@pytest.mark.parametrize("net_limit", [0.0, 0.01])
def test_each_leg_of_a_dollar_neutral_book_can_be_closed_alone(state, net_limit):
    lim = limits(max_weight=0.1, max_gross_exposure=0.2, max_net_exposure=net_limit, allow_short=True)
    book = {"AAA": -100, "BBB": 100}  # weights -0.1 and +0.1: net 0, every limit met
    for order, net in [(buy("AAA", 100), f"0.1000 > limit {net_limit:.4f}"),
                       (sell("BBB", 100), f"-0.1000 < limit {-net_limit:.4f}")]:
        decision = check([order], book, lim=lim, state=state, prices=EVEN)
        assert decision.accepted == (order,) and decision.positions_after[order.symbol] == 0
        assert [n.reason.split(" (it was")[0] for n in decision.notes] == [
            f"max_net_exposure: net after the order is {net}"]
    assert check([buy("AAA", 100), sell("BBB", 100)], book, lim=lim, state=state, prices=EVEN).positions_after == {
        "AAA": 0, "BBB": 0}


def test_a_flip_closes_the_old_position_freely_and_opens_the_new_one_under_the_strict_rule():
    book = {"AAA": -500, "BBB": 500}  # weights -0.5 and +0.5: net 0
    clamp = only_clamp(decision := check([buy("AAA", 1000)], book, lim=limits(**HEDGE), prices=EVEN))
    assert clamp.order.quantity == 500, "covering is exempt; opening a long is not, with net +0.5 once covered"
    assert clamp.reason == ("max_net_exposure: net after the order would be 1.0000 > limit 0.1000 (0.5000 once the "
                            "AAA position is closed: beyond the limit, it may only move towards it); quantity reduced "
                            "from 1000 to 500")
    assert [n.reason.split(" (it was")[0] for n in decision.notes] == [
        "max_net_exposure: net after the order is 0.5000 > limit 0.1000"]


@pytest.mark.parametrize("changes, kwargs, reason", [
    (dict(max_order_notional=10_000), {}, "max_order_notional: AAA order notional 100,000.00 > limit 10,000.00"),
    (dict(max_order_quantity=10), {}, "max_order_quantity: AAA order quantity 1000 > limit 10"),
    (dict(max_open_orders=0), {}, "max_open_orders: open orders would be 1 > limit 0"),
    (dict(max_daily_orders=3), dict(orders_sent_today=3), "max_daily_orders: orders today would be 4 > limit 3"),
    ({}, dict(adv={"AAA": 5000}), "max_adv_fraction: AAA order of 1000 is 0.2000 of ADV 5000 > limit 0.0100; "
                                  "quantity reduced from 1000 to 50"),
    ({}, dict(open_sell_quantity={"AAA": 400}), "no_short: AAA sell of 1000 exceeds position 1000 less open sells "
                                                "400 = 600; quantity reduced from 1000 to 600"),
    ({}, dict(state=KillSwitch.HALTED), "kill_switch: state HALTED allows only cancels"),
])
def test_a_reducing_order_still_meets_the_order_caps_the_adv_share_open_sells_and_the_kill_switch(changes, kwargs,
                                                                                                   reason):
    decision = check([sell("AAA", 1000)], {"AAA": 1000}, lim=limits(**{"max_order_notional": 1e6, **changes}), **kwargs)
    assert [*(c.reason for c in decision.clamped), *(r.reason for r in decision.rejected)] == [reason]


def test_clamp_weights_flattens_a_dollar_neutral_book_under_a_zero_net_limit():
    lim = limits(max_weight=0.1, max_gross_exposure=0.2, max_net_exposure=0.0, allow_short=True)
    for capital in (1e4, 1e6):
        final, events = clamp_weights(pd.Series({"AAA": -0.1, "BBB": 0.1}), pd.Series({"AAA": 0.0, "BBB": 0.0}),
                                      pd.Series({"AAA": 100.0, "BBB": 100.0}), lim, capital, NOW)
        assert final.tolist() == [0.0, 0.0], capital
        assert events[["symbol", "action"]].values.tolist() == [["AAA", "accepted"]]
        assert events["reason"][0].startswith("max_net_exposure: net after the order is 0.1000 > limit 0.0000 (it was "
                                              "0.0000); sent: it reduces the AAA position -")


# ---------------------------------------------------------------- the smallest tradable quantity

def test_the_smallest_tradable_quantity_is_alpacas_fractional_precision():
    from research_lib.risk import MIN_ORDER_QUANTITY

    assert MIN_ORDER_QUANTITY == 1e-9


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.floats(0.0, 1e-9, exclude_min=True, exclude_max=True) | st.sampled_from([5e-324, 1e-320, 1e-13]),
       st.booleans())
def test_an_order_of_fewer_shares_than_the_smallest_tradable_quantity_is_rejected(shares, in_notional):
    order = Order("AAA", Side.BUY, notional=shares * 100.0) if in_notional else buy(quantity=shares)
    assert re.fullmatch(rf"input: AAA .* is [^ ]+ {DUST}", only_rejection(check([order], {"AAA": 10})))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.floats(1e-9, 1.0), st.sampled_from(list(Side)))
def test_an_order_of_the_smallest_tradable_quantity_or_more_is_sent(shares, side):
    assert check([Order("AAA", side, quantity=shares)], {"AAA": 10}).accepted


@pytest.mark.parametrize("short_of_limit, sent", [(5e-10, False), (1e-8, True)])
@pytest.mark.parametrize("order", [buy(quantity=5), Order("AAA", Side.BUY, notional=500.0)])
def test_a_clamp_to_fewer_shares_than_the_smallest_tradable_quantity_drops_the_order(short_of_limit, sent, order):
    decision = check([order], {"AAA": 200 - short_of_limit})  # max_weight 0.2 is 200 shares
    if sent:
        assert only_clamp(decision).order == replace(order, **{"quantity": pytest.approx(1e-8, rel=1e-4)}
                                                     if order.quantity else {"notional": pytest.approx(1e-6, rel=1e-4)})
    else:
        assert re.fullmatch(r"max_weight: .* reduced from \S+ to \S+, \S+ shares: fewer than MIN_ORDER_QUANTITY "
                            r"1e-09, order dropped", only_rejection(decision))
        assert decision.positions_after == {"AAA": 200 - short_of_limit}


# ---------------------------------------------------------------- notional orders are counted conservatively

@pytest.mark.parametrize("order, held, notional", [
    (Order("AAA", Side.BUY, notional=30_000, limit_price=104.99), 0, 20_000),  # at the reference 100: 200 shares
    (Order("AAA", Side.BUY, notional=30_000, limit_price=99.0), 0, 19_800),  # at the limit 99: 200 shares
    (Order("AAA", Side.SELL, notional=10_000, limit_price=98.0), 50, 4_900),  # no short: 50 shares at 98
    (Order("AAA", Side.SELL, notional=10_000, limit_price=102.0), 50, 5_100),  # 50 shares at 102
])
def test_a_notional_order_counts_the_most_shares_it_can_fill(order, held, notional):
    """A buy fills at its limit or lower (at most the reference is assumed), a sell at its limit or higher."""
    assert only_clamp(check([order], {"AAA": held})).order.notional == pytest.approx(notional)


# ---------------------------------------------------------------- reasons and refused types

@pytest.mark.parametrize("book, order, changes, reason", [
    ({"AAA": 500}, buy("AAA", 1), dict(max_weight=0.07), "max_weight: AAA weight after the order would be 0.5010 > "
     "limit 0.0700 (0.5000 now: beyond the limit, it may only move towards it); nothing fits"),
    ({"AAA": 70, "BBB": -1400}, buy("CCC", 10), dict(max_weight=0.07, max_gross_exposure=0.3, max_net_exposure=0.3,
                                                     allow_short=True),
     "max_gross_exposure: gross after the order would be 0.7710 > limit 0.3000 (0.7700 now: beyond the limit, it may "
     "only move towards it); nothing fits"),
    ({"AAA": 100, "BBB": 200}, buy("CCC", 10), dict(max_net_exposure=0.05), "max_net_exposure: net after the order "
     "would be 0.2010 > limit 0.0500 (0.2000 now: beyond the limit, it may only move towards it); nothing fits"),
    ({"AAA": -500}, buy("AAA", 1000), dict(max_weight=0.07, max_order_notional=1e6), "max_weight: AAA weight after "
     "the order would be 0.5000 > limit 0.0700; quantity reduced from 1000 to 570"),
])
def test_a_reason_names_the_configured_limit_and_the_level_it_was_at(book, order, changes, reason):
    prices = {**PRICES, "CCC": fresh(10.0)}
    decision = check([order], book, lim=limits(**changes), prices=prices, adv={**ADV, "CCC": 1e7})
    assert [*(c.reason for c in decision.clamped), *(r.reason for r in decision.rejected)] == [reason]


@pytest.mark.parametrize("changes, message", [
    (dict(equity=Decimal("1e5")), r"equity is Decimal\('1E\+5'\) \(a decimal.Decimal\); pass"),
    (dict(positions={"AAA": Decimal("5")}), r"positions\['AAA'\] is Decimal\('5'\) \(a decimal.Decimal\); pass"),
    (dict(positions={"AAA": np.bool_(True)}), r"positions\['AAA'\] is np.True_ \(a numpy.bool_?\); pass"),
    (dict(open_sell_quantity={"AAA": Decimal("1")}), r"open_sell_quantity\['AAA'\] is Decimal\('1'\) \(a decimal"),
    (dict(prices={"AAA": ReferencePrice(Decimal("100"), NOW)}), r"positions hold \['AAA'\] without a finite positive "
     r"reference price \('AAA': Decimal\('100'\) \(a decimal.Decimal\)\); pass a float price"),
    (dict(open_orders=np.float64(1.0)), r"open_orders is np.float64\(1.0\) \(a numpy.float64\); pass a non-negative "
     "integer"),
])
def test_a_value_of_an_unexpected_type_is_refused_naming_its_type(changes, message):
    args = dict(positions={"AAA": 5}, prices=PRICES, equity=EQUITY)
    args.update(changes)
    with pytest.raises(RiskInputError, match=message):
        check_orders([sell(quantity=1)], args.pop("positions"), args.pop("prices"), limits(), KillSwitch.ACTIVE,
                     args.pop("equity"), NOW, adv=ADV, **args)


def test_an_order_value_of_an_unexpected_type_is_rejected_naming_its_type():
    assert only_rejection(check([buy(quantity=1)], adv={"AAA": Decimal("1e9")})) == (
        "max_adv_fraction: AAA has no finite positive average daily volume (Decimal('1E+9') (a decimal.Decimal)); "
        "fail closed")


@pytest.mark.parametrize("count", [np.int64(2), np.int32(2), np.uint8(2)])
def test_numpy_integers_are_order_counts(count):
    assert check([buy(quantity=1)], open_orders=count, orders_sent_today=count).accepted


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
     "ACTIVE -> REDUCING: daily_loss_limit: daily loss 3.00% >= limit 2.00%"),
    (KillSwitch.ACTIVE, 0.01, 0.10, KillSwitch.HALTED, "ACTIVE -> HALTED: drawdown_stop: drawdown -10.0% reached the stop at -10.0%"),
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
