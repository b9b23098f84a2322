"""Properties of the pre-trade risk layer over hostile books (issue 13, section 1).

The rule a user relies on, checked by replaying what was sent in exact arithmetic (fractions,
so the oracle adds no round-off of its own), never by asking the code how it sized an order:

- an order that reduces its symbol's position towards zero without flipping it is exempt
  from the weight, gross and net exposure limits, and is sent with a note when it takes net
  exposure beyond its limit (grown, or through zero); so a whole book can always be
  flattened, in ACTIVE and REDUCING, whatever its symbols are named;
- after every other order, the symbol's weight, the gross and the net exposure are each
  within their limit or, when one already was beyond it, it moved towards the limit without
  changing sign and without growing (strict rule; for a flip, "already" is the book once the
  old position is closed: the part beyond zero is a new position);
- and always: the position less open sells never goes below zero without allow_short, nor a
  position through zero in REDUCING, exactly; per-order caps, the batch's share of ADV, the
  counts, a fresh reference price, and at least SMALLEST_TRADABLE shares.

Round-off: a limit may be exceeded by 1e-9 of the traded symbol's own sizes (its position, the
order, its open sells, its earlier orders), never of the book's, and "within" a limit allows
1e-13 of the limit itself (the round-off of measuring a book near it).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from fractions import Fraction

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from research_lib.risk import (KillSwitch, Order, ReferencePrice, RiskInputError, RiskLimits, Side, check_orders,
                               clamp_weights)

NOW = dt.datetime(2026, 1, 5, 15, 0, 0)
PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(PROPERTY, max_examples=150)
ERRORS = settings(max_examples=60, deadline=None, derandomize=True)
SYMBOLS = ["A", "B", "C"]
SMALLEST_TRADABLE = 1e-9  # shares: Alpaca's fractional precision, the rule's constant
BAD_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, None, "5", True]) | st.floats(max_value=-1e-300)
SYMBOL_SLACK = Fraction(1, 10**9)  # of the traded symbol's own sizes
LIMIT_SLACK = Fraction(1, 10**13)  # of the limit


def obeys(before: Fraction, after: Fraction, limit: float, tol: Fraction) -> bool:
    """Within ``limit``, or beyond it as before but not grown and on the same side of zero."""
    within = abs(after) <= Fraction(limit) * (1 + LIMIT_SLACK) + tol
    return within or (after * before >= 0 and abs(after) <= abs(before) + tol)


def reduces(before: Fraction, after: Fraction) -> bool:
    """Towards zero without flipping: the same sign (or zero) and no larger."""
    return abs(after) <= abs(before) and after * before >= 0


def replay(weights: dict[str, Fraction], symbol: str, move: Fraction, lim: RiskLimits, tol: Fraction) -> bool:
    """Apply an order moving ``symbol``'s weight by ``move`` to ``weights`` (in place), assert the
    strict rule on what it increases, and say whether it only reduced the position."""
    held = weights.get(symbol, Fraction(0))
    new = held + move
    if not reduces(held, new):
        closed = {**weights, symbol: Fraction(0) if held * move < 0 else held}  # the old position closed
        after = {**weights, symbol: new}
        for name, measure, limit in [("weight", lambda w: w[symbol], lim.max_weight),
                                     ("gross", lambda w: sum(map(abs, w.values())), lim.max_gross_exposure),
                                     ("net", lambda w: sum(w.values()), lim.max_net_exposure)]:
            assert obeys(measure(closed), measure(after), limit, tol), (
                name, symbol, float(measure(closed)), float(measure(after)), limit)
    weights[symbol] = new
    return reduces(held, new)


def limits_from(grid: int, weight: int, gross: int, net: int, **other) -> RiskLimits:
    """Limits on a grid of 1/``grid`` of equity, so that no book lies a round-off away from one."""
    base = dict(max_order_notional=math.inf, max_adv_fraction=1.0, fat_finger_band=0.05, max_price_age_seconds=60,
                max_open_orders=10_000, max_daily_orders=10_000, daily_loss_limit=0.02, drawdown_stop=0.1)
    return RiskLimits(max_weight=weight / grid, max_gross_exposure=gross / grid, max_net_exposure=net / grid,
                      **{**base, **other})


def loose(**changes) -> RiskLimits:
    return RiskLimits(**{**dict(max_weight=0.07, max_gross_exposure=2.0, max_net_exposure=1.0, max_order_notional=1e12,
                                max_adv_fraction=1.0, fat_finger_band=0.05, max_price_age_seconds=60,
                                max_open_orders=10_000, max_daily_orders=10_000, daily_loss_limit=0.02,
                                drawdown_stop=0.1), **changes})


prices_ = st.sampled_from([1e-4, 0.37, 1.0, 99.99, 4.2e5]) | st.floats(1e-4, 1e6)
equities = st.sampled_from([1e2, 1e5, 3.3e7]) | st.floats(1.0, 1e12)
sizes = st.sampled_from([1e-320, 1e-9]) | st.floats(-16.0, 0.8).map(lambda e: 10.0 ** e)  # of max_weight * equity
ages = st.sampled_from([0.0] * 5 + [90.0]) | st.floats(-5.0, 70.0)  # seconds; negative: dated after now


# ---------------------------------------------------------------- check_orders: the rule after each order sent

@st.composite
def books(draw):
    """A book with positions beyond the limits on either side, flips, tiny to huge sizes and prices,
    unpriced and stale or future-dated reference prices."""
    equity = draw(equities)
    max_weight = draw(st.floats(0.02, 0.5))
    gross = max_weight * draw(st.sampled_from([1.0, 3.0]) | st.floats(1.0, 8.0))
    lim = RiskLimits(max_weight=max_weight, max_gross_exposure=gross,
                     max_net_exposure=gross * draw(st.sampled_from([0.0, 0.25, 1.0]) | st.floats(0.0, 1.0)),
                     max_order_notional=equity * draw(st.sampled_from([math.inf]) | st.floats(0.01, 5.0)),
                     max_order_quantity=draw(st.sampled_from([None] * 3) | st.floats(1e-3, 1e9)),
                     max_adv_fraction=draw(st.floats(1e-3, 1.0)), fat_finger_band=0.05, max_price_age_seconds=60,
                     max_open_orders=draw(st.sampled_from([50] * 3) | st.integers(0, 8)),
                     max_daily_orders=draw(st.sampled_from([50] * 3) | st.integers(0, 10)), daily_loss_limit=0.02,
                     drawdown_stop=0.1, allow_short=draw(st.booleans()))
    positions, quotes, prices, adv, open_sells = {}, {}, {}, {}, {}
    for s in SYMBOLS:
        quotes[s] = draw(prices_)
        weight = draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, 8.0, -8.0]) | st.floats(-3.0, 3.0)) * max_weight
        positions[s] = weight * equity / quotes[s]
        if positions[s] or draw(st.integers(0, 5)):  # a symbol not held may have no price
            prices[s] = ReferencePrice(quotes[s], NOW - dt.timedelta(seconds=draw(ages)))
        if draw(st.integers(0, 5)):
            adv[s] = draw(st.sampled_from([1e6]) | st.floats(1e-3, 1e3)) * equity / quotes[s]
        open_sells[s] = draw(st.sampled_from([0.0]) | st.floats(0.0, 1.5)) * abs(positions[s])
    orders = []
    for _ in range(draw(st.integers(1, 6))):
        s = draw(st.sampled_from(SYMBOLS))
        size = draw(sizes) * max_weight * equity  # notional at the quote
        limit_price = draw(st.none() | st.floats(0.97, 1.03).map(lambda f: f * quotes[s]))
        in_notional = draw(st.booleans())
        orders.append(Order(s, draw(st.sampled_from(list(Side))), quantity=None if in_notional else size / quotes[s],
                            notional=size if in_notional else None, limit_price=limit_price))
    state = draw(st.sampled_from([KillSwitch.ACTIVE] * 9 + [KillSwitch.REDUCING] * 2 + [KillSwitch.HALTED]))
    return dict(orders=orders, positions=positions, prices=prices, limits=lim, state=state, equity=equity, adv=adv,
                open_sell_quantity=open_sells, open_orders=draw(st.integers(0, 3)),
                orders_sent_today=draw(st.integers(0, 3)))


def one_sell(symbol, quantity, positions, prices, equity, **limits):
    """A book (reviewer's reproducers) where one sell is proposed."""
    return dict(orders=[Order(symbol, Side.SELL, quantity=quantity)], positions=positions,
                prices={s: ReferencePrice(p, NOW) for s, p in prices.items()}, limits=loose(**limits),
                state=KillSwitch.ACTIVE, equity=equity, adv={symbol: 1e12}, open_sell_quantity={}, open_orders=0,
                orders_sent_today=0)


# 13_subnormal_short: a vanishing sell with nothing held opened a short (slack of the whole book).
SUBNORMAL_SHORT = one_sell("A", 1e-13, {"A": 0.0, "B": 5.0}, {"A": 100.0, "B": 100.0}, 1e4)
# 03_slack_short: 14 whole shares of a penny stock sold short next to a large book, and a short
# growing a gross exposure of 1e10 times equity; the round-off allowance was the book's.
PENNY_SHORT = one_sell("PENNY", 14.0, {"BIG": 1.5e7, "PENNY": 0.0}, {"BIG": 100.0, "PENNY": 1e-4}, 1e9)
GROSS_BEYOND_SHORT = one_sell("X", 0.009, {"BIG": 1e10}, {"BIG": 1.0, "X": 1.0}, 1.0, max_net_exposure=2.0,
                              allow_short=True)


def decide(case):
    return check_orders(case["orders"], case["positions"], case["prices"], case["limits"], case["state"],
                        case["equity"], NOW, adv=case["adv"], open_sell_quantity=case["open_sell_quantity"],
                        open_orders=case["open_orders"], orders_sent_today=case["orders_sent_today"])


def counted_price(order: Order, reference: float) -> float:
    """The price at which an order's notional buys or sells the most shares it can: a buy fills at
    or below its limit, a sell at or above it."""
    if order.limit_price is None:
        return reference
    return min(reference, order.limit_price) if order.side is Side.BUY else order.limit_price


def assert_every_order_sent_obeys_the_rule(case):
    """Replay the orders sent on the book, exactly, asserting the rule (module docstring) after each."""
    decision = decide(case)
    lim, prices, equity = case["limits"], case["prices"], Fraction(case["equity"])
    assert len(decision.to_send) <= max(0, lim.max_open_orders - case["open_orders"])
    assert len(decision.to_send) <= max(0, lim.max_daily_orders - case["orders_sent_today"])
    assert case["state"] is not KillSwitch.HALTED or not decision.to_send
    noted = {id(n.order) for n in decision.notes}
    assert all(n.reason.startswith("max_net_exposure: net after the order is ") for n in decision.notes)

    shares = {s: Fraction(q) for s, q in case["positions"].items()}
    weights = {s: q * Fraction(prices[s].price) / equity for s, q in shares.items() if q}
    traded: dict[str, float] = {}
    for order in decision.to_send:
        sym = order.symbol
        assert sym in prices, f"{sym} was sent without a reference price"
        ref = prices[sym]
        assert 0 <= (NOW - ref.as_of).total_seconds() <= lim.max_price_age_seconds
        assert order.limit_price is None or abs(order.limit_price / ref.price - 1) <= lim.fat_finger_band
        size = order.quantity if order.quantity is not None else order.notional
        qty = size if order.quantity is not None else size / counted_price(order, ref.price)
        assert math.isfinite(size) and qty >= SMALLEST_TRADABLE, f"an order of {qty} shares was sent"
        value = order.notional if order.notional is not None else qty * (order.limit_price or ref.price)
        assert value <= lim.max_order_notional * (1 + 1e-9)
        assert lim.max_order_quantity is None or qty <= lim.max_order_quantity * (1 + 1e-9)
        before = traded.get(sym, 0.0)
        traded[sym] = before + qty
        assert traded[sym] <= lim.max_adv_fraction * case["adv"][sym] * (1 + 1e-9), "the batch's share of ADV"
        held, selling = shares.get(sym, Fraction(0)), Fraction(case["open_sell_quantity"].get(sym, 0.0))
        new = held + order.side.sign * Fraction(qty)
        if order.side is Side.SELL and not lim.allow_short:
            assert new - selling >= 0, "a sell took the position less open sells below zero"
        if case["state"] is KillSwitch.REDUCING:
            assert reduces(held, new), "REDUCING sent an order that does not reduce a position"
        per_share = Fraction(ref.price) / equity
        tol = SYMBOL_SLACK * (abs(held) + Fraction(qty) + selling + Fraction(before)) * per_share
        net = sum(weights.values())
        if replay(weights, sym, order.side.sign * Fraction(qty) * per_share, lim, tol):
            if not obeys(net, sum(weights.values()), lim.max_net_exposure * (1 + 1e-9), tol):
                assert id(order) in noted, f"a reducing {sym} order took net beyond its limit unnoted"
        shares[sym] = new
    for symbol, quantity in decision.positions_after.items():
        assert quantity == pytest.approx(float(shares[symbol]), rel=1e-12, abs=1e-300)


@PROPERTY
@example(case=SUBNORMAL_SHORT)
@example(case=PENNY_SHORT)
@example(case=GROSS_BEYOND_SHORT)
@given(books())
def test_after_every_order_sent_each_limit_holds_or_its_breach_shrank_without_a_flip(case):
    assert_every_order_sent_obeys_the_rule(case)


@st.composite
def small_orders_next_to_large_books(draw):
    """One tradable order on X next to a position worth up to a million times equity (beyond
    every limit or not): where a round-off allowance of the book's size would show."""
    equity, x_price, big_price = draw(equities), draw(prices_), draw(prices_)
    lim = loose(max_weight=draw(st.floats(0.02, 0.5)), max_net_exposure=draw(st.sampled_from([0.0, 1.0])),
                allow_short=draw(st.booleans()))
    big = draw(st.sampled_from([1.0, -1.0]) | st.floats(-6.0, 6.0).map(lambda e: math.copysign(10.0 ** abs(e), e)))
    held = draw(st.sampled_from([0.0]) | st.floats(-1.0, 1.0)) * lim.max_weight * equity / x_price
    order = Order("X", draw(st.sampled_from(list(Side))), quantity=draw(st.floats(-9.0, 3.0).map(lambda e: 10.0 ** e)))
    return dict(orders=[order], positions={"BIG": big * equity / big_price, "X": held},
                prices={"BIG": ReferencePrice(big_price, NOW), "X": ReferencePrice(x_price, NOW)}, limits=lim,
                state=draw(st.sampled_from([KillSwitch.ACTIVE, KillSwitch.ACTIVE, KillSwitch.REDUCING])),
                equity=equity, adv={"X": 1e300},
                open_sell_quantity={"X": abs(held) * draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.5))},
                open_orders=0, orders_sent_today=0)


@PROPERTY
@given(small_orders_next_to_large_books())
def test_the_round_off_allowance_is_the_traded_symbols_never_the_books(case):
    assert_every_order_sent_obeys_the_rule(case)


@PROPERTY
@given(books())
def test_every_order_gets_one_verdict_and_a_clamp_only_shrinks_it(case):
    decision = decide(case)
    verdicts = [*decision.accepted, *(c.original for c in decision.clamped), *(r.order for r in decision.rejected)]
    assert sorted(map(id, verdicts)) == sorted(map(id, case["orders"]))
    assert len(decision.to_send) == len(decision.accepted) + len(decision.clamped)
    assert {id(n.order) for n in decision.notes} <= set(map(id, decision.to_send))
    for c in decision.clamped:
        assert (c.order.symbol, c.order.side, c.order.limit_price) == (c.original.symbol, c.original.side,
                                                                        c.original.limit_price)
        smaller = [(new, old) for new, old in [(c.order.quantity, c.original.quantity),
                                               (c.order.notional, c.original.notional)] if old is not None]
        assert len(smaller) == 1 and 0 < smaller[0][0] < smaller[0][1], c
    for r in decision.rejected:
        assert r.reason and r.reason.split(":")[0] in {*RiskLimits.model_fields, "no_short", "input",
                                                       "kill_switch", "reference_price"}, r.reason


# ---------------------------------------------------------------- reducing orders: a book can always be flattened

NAMES = ["AAA", "B", "MMM", "ZZZZ", "c"]


@st.composite
def hedged_books(draw):
    """Books of two to five symbols long and short, beyond any limit, under tight limits."""
    equity = draw(equities)
    max_weight = draw(st.floats(0.02, 0.5))
    gross = max_weight * draw(st.floats(1.0, 8.0))
    lim = RiskLimits(max_weight=max_weight, max_gross_exposure=gross,
                     max_net_exposure=gross * draw(st.sampled_from([0.0, 0.01]) | st.floats(0.0, 1.0)),
                     max_order_notional=math.inf, max_adv_fraction=1.0, fat_finger_band=0.05,
                     max_price_age_seconds=60, max_open_orders=50, max_daily_orders=50, daily_loss_limit=0.02,
                     drawdown_stop=0.1, allow_short=draw(st.booleans()))
    weights = draw(st.lists(st.sampled_from([1.0, -1.0, 8.0, -8.0]) | st.floats(-3.0, 3.0).filter(bool),
                            min_size=2, max_size=len(NAMES)))
    quotes = [draw(prices_) for _ in weights]
    shares = [w * max_weight * equity / p for w, p in zip(weights, quotes)]
    assume(all(abs(q) >= SMALLEST_TRADABLE for q in shares))
    return lim, equity, shares, quotes


def flatten(names, shares, quotes, lim, equity, state):
    positions = dict(zip(names, shares))
    orders = [Order(s, Side.SELL if q > 0 else Side.BUY, quantity=abs(q)) for s, q in positions.items()]
    return check_orders(orders, positions, {s: ReferencePrice(p, NOW) for s, p in zip(names, quotes)}, lim, state,
                        equity, NOW, adv={s: 1e300 for s in names})


@PROPERTY
@given(hedged_books(), st.permutations(NAMES), st.sampled_from([KillSwitch.ACTIVE, KillSwitch.REDUCING]))
def test_a_whole_book_can_always_be_flattened_whatever_its_symbols_are_named(book, names, state):
    lim, equity, shares, quotes = book
    for naming in (names[:len(shares)], names[len(NAMES) - len(shares):][::-1]):
        decision = flatten(naming, shares, quotes, lim, equity, state)
        assert not decision.rejected and not decision.clamped, [r.reason for r in decision.rejected]
        assert all(q == 0 for q in decision.positions_after.values()), decision.positions_after


@FEWER
@given(hedged_books(), st.permutations(NAMES), st.floats(3.0, 9.0))
def test_clamp_weights_always_flattens_a_book_whatever_its_symbols_are_named(book, names, log_capital):
    lim, equity, shares, quotes = book
    capital = 10.0 ** log_capital
    names = names[:len(shares)]
    current = pd.Series([q * p / equity for q, p in zip(shares, quotes)], index=names)
    assume(all(abs(w) * capital / p >= SMALLEST_TRADABLE for w, p in zip(current, quotes)))
    final, events = clamp_weights(current, pd.Series(0.0, index=names), pd.Series(quotes, index=names), lim,
                                  capital, NOW)
    untraded = current.abs() < 1e-6  # min_trade: weight changes smaller than this are not traded
    assert (final[~untraded] == 0).all(), final.to_dict()
    assert final[untraded].tolist() == pytest.approx(current[untraded].tolist(), rel=1e-12)
    assert set(events["action"]) <= {"accepted"} and events["reason"].str.startswith("max_net_exposure").all()


# ---------------------------------------------------------------- one symbol: the closed-form end point

@st.composite
def one_symbol(draw, grid=64):
    """One symbol, sizes on a grid of equity: where an order may end is then a closed form."""
    weight, net = draw(st.integers(1, 16)), draw(st.integers(0, 24))
    gross = max(weight, net) + draw(st.integers(0, 16))
    held = draw(st.sampled_from([0, weight, -weight, net, -net]) | st.integers(-6 * weight, 6 * weight))
    return dict(grid=grid, weight=weight, gross=gross, net=net, held=held, move=draw(st.integers(1, 12 * weight)),
                side=draw(st.sampled_from(list(Side))), adv=draw(st.none() | st.integers(0, 8 * weight)),
                open_sells=draw(st.sampled_from([0]) | st.integers(0, max(held, 0) + weight)),
                allow_short=draw(st.booleans()), price=draw(prices_),
                state=draw(st.sampled_from([KillSwitch.ACTIVE, KillSwitch.ACTIVE, KillSwitch.REDUCING])))


def expected_end(case) -> float:
    """Where the one-symbol book ends, in grid units: the wanted end point clipped into what every
    limit lets it reach. Weight and net are the same quantity here, within +-limit or between the
    limit and where they started (reducing is always allowed); the position less open sells may
    not go below zero (nor below where it started); REDUCING allows no flip; the ADV share bounds
    the size of the move."""
    held, sign = case["held"], case["side"].sign
    edge = min(case["weight"], case["net"])
    low, high = min(-edge, held), max(edge, held)
    if not case["allow_short"]:
        low = max(low, min(held, case["open_sells"]))
    if case["state"] is KillSwitch.REDUCING:
        low, high = (low, high) if held * sign < 0 else (held, held)
        low, high = max(low, min(held, 0)), min(high, max(held, 0))
    end = min(max(held + sign * case["move"], low), high)
    reach = case["move"] if case["adv"] is None else min(case["move"], case["adv"])
    return held + sign * min(abs(end - held), reach)


def verdict(held: float, wanted: float, end: float) -> str:
    return "accepted" if end == wanted else "rejected" if end == held else "clamped"


@PROPERTY
@given(one_symbol(), equities)
def test_one_order_on_one_symbol_ends_where_the_limits_put_it(case, equity):
    grid, price = case["grid"], case["price"]
    shares = equity / grid / price  # per grid unit
    lim = limits_from(grid, case["weight"], case["gross"], case["net"], allow_short=case["allow_short"])
    order = Order("A", case["side"], quantity=case["move"] * shares)
    adv = 1e300 if case["adv"] is None else case["adv"] * shares
    decision = check_orders([order], {"A": case["held"] * shares}, {"A": ReferencePrice(price, NOW)}, lim,
                            case["state"], equity, NOW, adv={"A": adv},
                            open_sell_quantity={"A": case["open_sells"] * shares})
    end = expected_end(case)
    assert decision.positions_after["A"] / shares == pytest.approx(end, abs=1e-9 * (1 + abs(case["held"])))
    wanted = case["held"] + case["side"].sign * case["move"]
    kinds = {"accepted": decision.accepted, "clamped": decision.clamped, "rejected": decision.rejected}
    assert [k for k, v in kinds.items() if v] == [verdict(case["held"], wanted, end)]
    assert not decision.notes, "with one symbol, net is its weight: a reducing order never takes it beyond"


@PROPERTY
@given(one_symbol().filter(lambda c: c["state"] is KillSwitch.ACTIVE and c["open_sells"] == 0),
       st.floats(3, 12), st.lists(st.sampled_from([1.0, 3.7, 41.0, 1e-3 * 1.25]), min_size=2, max_size=3, unique=True),
       st.sampled_from([math.inf, 0.3, 1.0, 5.0]))
def test_clamp_weights_ends_where_the_limits_put_it_whatever_the_capital(case, log_capital, multiples, cap):
    """The research path: the same end point, as one order or split in many, for any capital
    (from 1.25 upwards: a grid unit is then always a tradable number of shares)."""
    grid, price, base = case["grid"], case["price"], 10.0 ** log_capital
    lim = limits_from(grid, case["weight"], case["gross"], case["net"], allow_short=case["allow_short"],
                      max_order_notional=cap * base)
    held, wanted, end = case["held"], case["held"] + case["side"].sign * case["move"], expected_end(case)
    for capital in (base * m for m in multiples):
        adv = None if case["adv"] is None else pd.Series({"A": case["adv"] * capital / grid / price})
        final, events = clamp_weights(pd.Series({"A": held / grid}), pd.Series({"A": wanted / grid}),
                                      pd.Series({"A": price}), lim, capital, NOW, adv)
        assert final["A"] * grid == pytest.approx(end, abs=1e-9 * (1 + abs(held))), capital
        kind = verdict(held, wanted, end)
        assert events["action"].tolist() == ([] if kind == "accepted" else [kind]), (capital, events.to_dict("records"))


# ---------------------------------------------------------------- clamp_weights: many symbols, many capitals

@st.composite
def rebalances(draw, grid=64):
    weight = draw(st.integers(1, 24))
    gross = weight + draw(st.integers(0, 48))
    lim = dict(weight=weight, gross=gross, net=draw(st.integers(0, gross)), allow_short=draw(st.booleans()))
    span = st.sampled_from([0, weight, -weight]) | st.integers(-4 * weight, 4 * weight)
    current = {s: draw(span) for s in SYMBOLS}
    target = {s: draw(span) for s in SYMBOLS}
    prices = {s: draw(prices_) for s in SYMBOLS}
    adv = {s: draw(st.none() | st.integers(0, 6 * weight)) for s in SYMBOLS}
    return grid, lim, current, target, prices, adv


@PROPERTY
@given(rebalances(), st.floats(0, 12), st.sampled_from([math.inf, 0.5, 2.0]))
def test_clamp_weights_holds_the_rule_and_its_verdict_does_not_depend_on_capital(rebalance, log_capital, cap):
    """Research trades are replayed in the documented order (reducing first, then by symbol)."""
    grid, lim_grid, current, target, prices, adv = rebalance
    base = 10.0 ** log_capital
    lim = limits_from(grid, lim_grid["weight"], lim_grid["gross"], lim_grid["net"],
                      allow_short=lim_grid["allow_short"], max_order_notional=cap * base)
    now, wanted = pd.Series(current) / grid, pd.Series(target) / grid
    outcomes = []
    for capital in (base, base * 13.0):
        volume = pd.Series({s: math.nan if a is None else a / grid * capital / prices[s] for s, a in adv.items()})
        final, events = clamp_weights(now, wanted, pd.Series(prices), lim, capital, NOW, volume)
        outcomes.append((final, sorted(zip(events["symbol"], events["action"]))))
        actions = dict(outcomes[-1][1])
        weights = {s: Fraction(now[s]) for s in SYMBOLS}
        reducing_first = lambda s: (not now[s] * (final[s] - now[s]) < 0, s)  # noqa: E731
        trades = sorted((s for s in SYMBOLS if final[s] != now[s]), key=reducing_first)
        for s in trades:
            tol = SYMBOL_SLACK * (abs(Fraction(now[s])) + abs(Fraction(final[s])))
            replay(weights, s, Fraction(final[s]) - Fraction(now[s]), lim, tol)
        for s in SYMBOLS:
            tol = 1e-9 * (abs(now[s]) + abs(wanted[s]))
            assert min(now[s], wanted[s]) - tol <= final[s] <= max(now[s], wanted[s]) + tol, "never past the target"
            if not lim.allow_short:
                assert final[s] >= min(now[s], 0.0) - tol, "a sell opened a short"
            if reduces(Fraction(now[s]), Fraction(wanted[s])) and adv[s] is None:
                assert final[s] == pytest.approx(wanted[s], abs=tol), "a reducing trade is exempt from exposure limits"
            moved = {"accepted": final[s] == pytest.approx(wanted[s], abs=tol),
                     "rejected": final[s] == pytest.approx(now[s], abs=tol)}
            action = actions.get(s, "accepted")
            assert moved.get(action, not any(moved.values())), (s, action, now[s], wanted[s], final[s])
    (first, first_events), (second, second_events) = outcomes
    pd.testing.assert_series_equal(first, second, rtol=0, atol=1e-9)
    assert first_events == second_events


# ---------------------------------------------------------------- malformed books are input errors

def _one_order_call(**changes):
    args = dict(orders=[Order("A", Side.SELL, quantity=1.0)], positions={"A": 100.0},
                prices={"A": ReferencePrice(10.0, NOW)}, limits=limits_from(10, 1, 10, 10), state=KillSwitch.ACTIVE,
                equity=1e4, now=NOW, adv={"A": 1e9}, open_sell_quantity={"A": 0.0}, open_orders=0, orders_sent_today=0)
    args.update(changes)
    return check_orders(**args)


def shown(value) -> str:
    """How a refused value appears in a message: its repr, then its type unless a plain int or float."""
    return re.escape(repr(value)) + (r"" if type(value) in (int, float, type(None)) else r" \(a [\w.]+\)")


@ERRORS
@given(BAD_NUMBERS)
def test_a_malformed_open_sell_quantity_is_an_input_error(value):
    with pytest.raises(RiskInputError, match=rf"open_sell_quantity\['A'\] is {shown(value)}; pass the shares"):
        _one_order_call(open_sell_quantity={"A": value})


def test_a_negative_open_sell_quantity_no_longer_lets_a_sell_open_a_short():
    with pytest.raises(RiskInputError, match=r"open_sell_quantity\['A'\] is -50.0; .* a finite float >= 0"):
        _one_order_call(orders=[Order("A", Side.SELL, quantity=150.0)], open_sell_quantity={"A": -50.0})


@ERRORS
@given(BAD_NUMBERS.filter(lambda v: not isinstance(v, float) or not math.isfinite(v)))
def test_a_malformed_position_is_an_input_error(value):
    with pytest.raises(RiskInputError, match=rf"positions\['A'\] is {shown(value)}; pass a finite number"):
        _one_order_call(positions={"A": value})


@ERRORS
@given(st.sampled_from([math.nan, math.inf, 0.0, -1.0, None, "1e4"]) | st.floats(max_value=0.0))
def test_a_malformed_equity_is_an_input_error(value):
    with pytest.raises(RiskInputError, match=rf"equity is {shown(value)}; pass the account's"):
        _one_order_call(equity=value)


@pytest.mark.parametrize("name, value", [("open_orders", -1), ("open_orders", 1.5), ("orders_sent_today", True),
                                         ("orders_sent_today", math.nan)])
def test_a_malformed_order_count_is_an_input_error(name, value):
    with pytest.raises(RiskInputError, match=rf"{name} is {shown(value)}; pass a non-negative integer"):
        _one_order_call(**{name: value})


def test_a_book_worth_more_than_a_float_holds_is_an_input_error():
    with pytest.raises(RiskInputError, match=r"positions\['A'\] is 1e\+300 shares at 1e\+300: the book is worth inf"):
        _one_order_call(positions={"A": 1e300}, prices={"A": ReferencePrice(1e300, NOW)})


@ERRORS
@given(st.sampled_from(["current", "target"]), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_clamp_weights_refuses_non_finite_weights(name, value):
    weights = {"current": pd.Series({"A": 0.1, "B": 0.1}), "target": pd.Series({"A": 0.1, "B": 0.2})}
    weights[name] = weights[name].copy()
    weights[name]["B"] = value
    with pytest.raises(RiskInputError, match=rf"{name} weights are not finite: \{{'B': {re.escape(repr(value))}\}}"):
        clamp_weights(weights["current"], weights["target"], pd.Series({"A": 10.0, "B": 10.0}),
                      limits_from(10, 5, 10, 10), 1e4, NOW)


@pytest.mark.parametrize("changes, message", [
    (dict(equity=math.nan), r"equity is nan; pass the notional account value"),
    (dict(equity=-1.0), r"equity is -1.0; pass the notional account value"),
    (dict(current=pd.Series([0.1, 0.2], index=["A", "A"])), r"current names \['A'\] more than once"),
    (dict(prices=pd.Series([10.0, 11.0], index=["A", "A"])), r"prices names \['A'\] more than once"),
    (dict(prices=pd.Series({"A": math.inf})), r"no positive decision price on 2026-01-05 for \['A'\]"),
    (dict(adv=pd.Series({"A": -5.0})), r"adv is \{'A': -5.0\}; pass average daily volumes in shares"),
    (dict(adv=pd.Series({"A": math.inf})), r"adv is \{'A': inf\}"),
    (dict(current=pd.Series({"A": "x"})), r"current weights are not all numbers"),
])
def test_clamp_weights_refuses_malformed_inputs(changes, message):
    args = dict(current=pd.Series({"A": 0.1}), target=pd.Series({"A": 0.2}), prices=pd.Series({"A": 10.0}),
                limits=limits_from(10, 5, 10, 10), equity=1e4, when=NOW)
    args.update(changes)
    with pytest.raises(RiskInputError, match=message):
        clamp_weights(**args)
