"""Pre-trade checks: a pure function from (book, proposed orders, prices, limits) to a decision.

Checks, in order, for each order (TRADING_SAFETY.md pre-trade checks 1, 4-7, 9 and 11):
kill switch; input sanity, including a size of at least `MIN_ORDER_QUANTITY` shares; a fresh
reference price (missing or stale: reject, fail closed) and the fat-finger band around it;
max order notional and quantity; open-order count and daily order cap; then the sizing
limits, which clamp an order down to the largest size that fits, or reject it when nothing
does or what fits is less than `MIN_ORDER_QUANTITY`: share of ADV (of all the orders of a
symbol in the batch together), no accidental short, no flip in REDUCING, per-symbol weight,
gross and net exposure. The rule they hold is stated in the risk package's docstring.

The sizing (`research_lib.risk._sizing`) lets the shares of an order that only reduce a
position through the exposure limits whatever the book, and the rest what the strict rule
leaves it; so the room each limit leaves depends only on the book, not on how a trade is
split into orders, nor on the order the symbols sort in when a book is flattened.

Orders are checked in a deterministic order: those reducing an existing position first, then
by symbol, then as given. Each order sent updates the hypothetical book the next is checked
against; the traded symbols' positions are kept exactly (as fractions), so that the no-short
and REDUCING bounds hold without round-off. Positions are valued at reference prices;
weights are fractions of ``equity``.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import NamedTuple

from research_lib.risk._kill_switch import KillSwitch, _as_state
from research_lib.risk._limits import RiskInputError, RiskLimits
from research_lib.risk._orders import (MIN_ORDER_QUANTITY, ClampedOrder, Order, ReferencePrice, RejectedOrder,
                                       RiskDecision, RiskNote, Side)
from research_lib.risk._sizing import Sizing


def _finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _finite_positive(value: object) -> bool:
    return _finite(value) and value > 0


def _shown(value: object) -> str:
    """``repr(value)``, naming its type unless it is a plain int or float (Decimal, numpy, str...)."""
    kind = type(value)
    if kind in (int, float, type(None)):
        return repr(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"{value!r} (a {name})"


class _Verdict(NamedTuple):
    reason: str | None  # None: sent as proposed
    order: Order | None  # what is sent; None: rejected
    shares: float = 0.0  # the shares ``order`` is counted as
    note: str | None = None  # sent beyond a limit that does not apply to it


def _sanity(order: Order) -> str | None:
    if not isinstance(order.symbol, str) or not order.symbol:
        return f"input: symbol is {order.symbol!r}; give a non-empty symbol"
    if (order.quantity is None) == (order.notional is None):
        return (f"input: {order.symbol} gives quantity={order.quantity} and notional={order.notional}; "
                "give exactly one of them")
    name, value = ("quantity", order.quantity) if order.quantity is not None else ("notional", order.notional)
    if not _finite_positive(value):
        return f"input: {order.symbol} {name} is {_shown(value)}; give a finite, positive float"
    if order.limit_price is not None and not _finite_positive(order.limit_price):
        return f"input: {order.symbol} limit_price is {_shown(order.limit_price)}; give a finite, positive float"
    return None


def _kill_switch(order: Order, held: Fraction, state: KillSwitch) -> str | None:
    if state is KillSwitch.HALTED:
        return "kill_switch: state HALTED allows only cancels"
    if state is KillSwitch.REDUCING and order.side.sign * held >= 0:
        return (f"kill_switch: state REDUCING allows only orders that reduce a position; {order.symbol} position is "
                f"{float(held):g} and this is a {order.side.value}")
    return None


def _reference(order: Order, ref: ReferencePrice | None, now: dt.datetime, limits: RiskLimits) -> str | None:
    sym = order.symbol
    if ref is None or not _finite_positive(ref.price):
        return f"reference_price: {sym} has no finite positive reference price ({ref}); fail closed"
    try:
        age = (now - ref.as_of).total_seconds()
    except TypeError:
        raise RiskInputError(f"prices[{sym!r}].as_of {ref.as_of!r} and now {now!r} mix naive and tz-aware "
                             "datetimes; give both in the same timezone convention") from None
    if age < 0:
        return f"max_price_age_seconds: {sym} reference price is dated {-age:.1f} s after now; fail closed"
    if age > limits.max_price_age_seconds:
        return (f"max_price_age_seconds: {sym} reference price is {age:.1f} s old > limit "
                f"{limits.max_price_age_seconds:.1f} s; fail closed")
    if order.limit_price is not None:
        deviation = abs(order.limit_price / ref.price - 1.0)
        if deviation > limits.fat_finger_band:
            return (f"fat_finger_band: {sym} limit price {order.limit_price:g} is {deviation:.2%} from reference "
                    f"{ref.price:g} > limit {limits.fat_finger_band:.2%}")
    return None


def _share_price(order: Order, ref: float) -> float:
    """The price a notional is counted in shares at: the one giving the most shares the order can
    take (a buy fills at its limit price or lower, a sell at its limit price or higher)."""
    if order.limit_price is None:
        return ref
    limit = float(order.limit_price)
    return min(ref, limit) if order.side is Side.BUY else limit


def _caps(order: Order, qty: float, px: float, ref: float, limits: RiskLimits, n_open: int, n_today: int,
          volume: object) -> str | None:
    """The reason an order of ``qty`` shares breaks a check that rejects rather than clamps."""
    sym = order.symbol
    if not (math.isfinite(qty) and qty >= MIN_ORDER_QUANTITY):
        size = "quantity" if order.quantity is not None else f"notional {order.notional:g} at price {px:g}"
        return (f"input: {sym} {size} is {qty:g} shares, not a finite number >= MIN_ORDER_QUANTITY "
                f"{MIN_ORDER_QUANTITY:g} (the smallest tradable quantity); give a larger order")
    value = order.notional if order.notional is not None else qty * (order.limit_price or ref)
    if value > limits.max_order_notional:
        return f"max_order_notional: {sym} order notional {value:,.2f} > limit {limits.max_order_notional:,.2f}"
    if limits.max_order_quantity is not None and qty > limits.max_order_quantity:
        return f"max_order_quantity: {sym} order quantity {qty:g} > limit {limits.max_order_quantity:g}"
    if n_open + 1 > limits.max_open_orders:
        return f"max_open_orders: open orders would be {n_open + 1} > limit {limits.max_open_orders}"
    if n_today + 1 > limits.max_daily_orders:
        return f"max_daily_orders: orders today would be {n_today + 1} > limit {limits.max_daily_orders}"
    if not _finite_positive(volume):
        return f"max_adv_fraction: {sym} has no finite positive average daily volume ({_shown(volume)}); fail closed"
    return None


def _validate_book(positions: Mapping[str, float], prices: Mapping[str, ReferencePrice], equity: float,
                   open_sell_quantity: Mapping[str, float], counts: dict[str, int]) -> None:
    """Raise RiskInputError naming the first malformed book input (the call is wrong, not an order)."""
    if not _finite_positive(equity):
        raise RiskInputError(f"equity is {_shown(equity)}; pass the account's finite, positive net liquidation "
                             "value as a float")
    for name, count in counts.items():
        if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 0:
            raise RiskInputError(f"{name} is {_shown(count)}; pass a non-negative integer")
    for symbol, quantity in positions.items():
        if not _finite(quantity):
            raise RiskInputError(f"positions[{symbol!r}] is {_shown(quantity)}; pass a finite number of shares "
                                 "(a float; negative: short), rebuilt from the broker")
    for symbol, quantity in open_sell_quantity.items():
        if not (_finite(quantity) and quantity >= 0):
            raise RiskInputError(f"open_sell_quantity[{symbol!r}] is {_shown(quantity)}; pass the shares that open "
                                 "sell orders have still to sell, a finite float >= 0, rebuilt from the broker")
    unpriced = {s: prices[s].price if s in prices else None for s, q in positions.items()
                if q != 0 and not (s in prices and _finite_positive(prices[s].price))}
    if unpriced:
        found = ", ".join(f"{s!r}: {_shown(p)}" for s, p in sorted(unpriced.items()))
        raise RiskInputError(f"positions hold {sorted(unpriced)} without a finite positive reference price "
                             f"({found}); pass a float price for every held symbol so exposures can be measured")
    gross = 0.0
    for symbol, quantity in positions.items():
        value = quantity * prices[symbol].price / equity if quantity else 0.0
        gross += abs(value)
        if not math.isfinite(gross):
            raise RiskInputError(f"positions[{symbol!r}] is {quantity!r} shares at {prices[symbol].price!r}: the book "
                                 f"is worth {gross} times equity {equity!r}; check the positions, prices and equity")


def check_orders(orders: Sequence[Order], positions: Mapping[str, float], prices: Mapping[str, ReferencePrice],
                 limits: RiskLimits, state: KillSwitch, equity: float, now: dt.datetime, *,
                 adv: Mapping[str, float], open_sell_quantity: Mapping[str, float] | None = None,
                 open_orders: int = 0, orders_sent_today: int = 0) -> RiskDecision:
    """Accept, clamp or reject each proposed order against the limits and the kill switch.

    Parameters
    ----------
    orders : sequence of Order
        Proposed orders.
    positions : mapping symbol -> float
        Current quantities in shares (negative: short), finite.
    prices : mapping symbol -> ReferencePrice
        Reference prices with their timestamps; every held symbol needs one.
    limits : RiskLimits
    state : KillSwitch
        HALTED rejects everything; REDUCING only lets orders shrink an existing position.
    equity : float
        Account equity (net liquidation value) that weights are fractions of.
    now : datetime
        The decision time (no clock is read here).
    adv : mapping symbol -> float
        Average daily volume in shares; a missing value rejects the symbol's orders.
    open_sell_quantity : mapping symbol -> float, optional
        Shares already being sold by open orders, finite and >= 0.
    open_orders, orders_sent_today : int
        Open orders at the broker now, and orders already sent this session (numpy integers too).

    Returns
    -------
    RiskDecision
        Every order is in exactly one of accepted, clamped or rejected; an order whose clamp
        leaves fewer than `MIN_ORDER_QUANTITY` shares is rejected with a reason saying so.
        ``notes`` holds the reducing orders sent that take net exposure beyond its limit
        (grown, or through zero), which the exposure limits never refuse.

    Raises
    ------
    RiskInputError
        A malformed book: equity, a count, a position or an open sell quantity that is not a
        finite number (negative too, except positions), or a held symbol without a price.
    """
    state = _as_state(state, "state")
    selling = dict(open_sell_quantity or {})
    _validate_book(positions, prices, equity, selling,
                   {"open_orders": open_orders, "orders_sent_today": orders_sent_today})
    equity, book = float(equity), {s: float(q) for s, q in positions.items()}
    selling = {s: float(q) for s, q in selling.items()}

    def reducing(o: Order) -> bool:
        return isinstance(o.side, Side) and o.side.sign * book.get(o.symbol, 0.0) < 0

    sequence = sorted(range(len(orders)), key=lambda i: (not reducing(orders[i]), str(orders[i].symbol), i))
    accepted, clamped, rejected, to_send, notes = [], [], [], [], []
    exact: dict[str, Fraction] = {}  # positions of the symbols traded so far, exactly
    traded: dict[str, float] = {}  # shares sent per symbol in this batch
    for i in sequence:
        order = orders[i]
        sym = order.symbol
        held = exact[sym] if sym in exact else Fraction(book.get(sym, 0.0))
        verdict = _check_one(order, held, book, selling, traded, prices, limits, state, equity, now, adv,
                             open_orders + len(to_send), orders_sent_today + len(to_send))
        if verdict.order is None:
            rejected.append(RejectedOrder(order, verdict.reason))
            continue
        if verdict.reason is None:
            accepted.append(order)
        else:
            clamped.append(ClampedOrder(order, verdict.order, verdict.reason))
        if verdict.note is not None:
            notes.append(RiskNote(verdict.order, verdict.note))
        to_send.append(verdict.order)
        exact[sym] = held + order.side.sign * Fraction(verdict.shares)
        book[sym] = float(exact[sym])
        traded[sym] = traded.get(sym, 0.0) + verdict.shares
    return RiskDecision(tuple(accepted), tuple(clamped), tuple(rejected), tuple(to_send), book, tuple(notes))


def _check_one(order, held, book, selling, traded, prices, limits, state, equity, now, adv, n_open,
               n_today) -> _Verdict:
    """The verdict on one order, ``held`` being its symbol's exact position in the hypothetical book."""
    sym = order.symbol
    reason = _kill_switch(order, held, state) or _sanity(order) or _reference(order, prices.get(sym), now, limits)
    if reason:
        return _Verdict(reason, None)
    ref = float(prices[sym].price)
    px = _share_price(order, ref)
    qty = float(order.quantity) if order.quantity is not None else float(order.notional) / px
    reason = _caps(order, qty, px, ref, limits, n_open, n_today, adv.get(sym))
    if reason:
        return _Verdict(reason, None)
    per_weight = equity / ref
    if not _finite_positive(per_weight):
        return _Verdict(f"input: {sym} cannot be sized: equity {equity:g} / reference price {ref:g} = {per_weight:g} "
                        "shares per unit of weight; fail closed", None)
    sizing = Sizing(order, qty, held, selling.get(sym, 0.0), traded.get(sym, 0.0), per_weight,
                     _other_exposures(book, prices, equity, sym))
    failing = [bound for bound in sizing.bounds(float(adv[sym]), limits, state) if qty > bound[0] + bound[1]]
    if not failing:
        return _Verdict(None, order, qty, sizing.net_note(qty, limits.max_net_exposure))
    room, tolerance, message = min(failing, key=lambda bound: bound[0])
    if room <= tolerance:
        return _Verdict(f"{message}; nothing fits", None)
    sent, shares = _resized(order, room, px)
    unit, before, after = (("quantity", qty, sent.quantity) if order.quantity is not None
                           else ("notional", order.notional, sent.notional))
    change = f"{unit} reduced from {before:g} to {after:g}"
    if shares < MIN_ORDER_QUANTITY:
        return _Verdict(f"{message}; {change}, {shares:g} shares: fewer than MIN_ORDER_QUANTITY "
                        f"{MIN_ORDER_QUANTITY:g}, order dropped", None)
    return _Verdict(f"{message}; {change}", sent, shares, sizing.net_note(shares, limits.max_net_exposure))


def _resized(order: Order, shares: float, px: float) -> tuple[Order, float]:
    """``order`` resized to at most ``shares`` shares counted at ``px``, and the shares it counts as."""
    if order.quantity is not None:
        return replace(order, quantity=shares), shares
    notional = shares * px
    while notional / px > shares:  # a rounded-up notional would count as more shares than fit
        notional = math.nextafter(notional, 0.0)
    return replace(order, notional=notional), notional / px


def _other_exposures(book: Mapping[str, float], prices: Mapping[str, ReferencePrice], equity: float,
                     symbol: str) -> tuple[float, float]:
    """Gross and net exposure of the book's other symbols, fractions of equity."""
    values = [q * prices[s].price / equity for s, q in book.items() if q != 0 and s != symbol]
    return math.fsum(abs(v) for v in values), math.fsum(values)
