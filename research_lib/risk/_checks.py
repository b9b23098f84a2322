"""Pre-trade checks: a pure function from (book, proposed orders, prices, limits) to a decision.

Checks, in order, for each order (TRADING_SAFETY.md pre-trade checks 1, 4-7, 9 and 11):
kill switch; input sanity; a fresh reference price (missing or stale: reject, fail closed)
and the fat-finger band around it; max order notional and quantity; open-order count and
daily order cap; then the sizing limits, which clamp an order down to the largest size that
fits (or reject it when nothing fits): share of ADV (of all the orders of a symbol in the
batch together), no accidental short, per-symbol weight, gross and net exposure.

The rule the sizing limits hold: after every order sent, each limited quantity is within its
limit or, when it already was beyond, it moved towards the limit without changing sign and
without growing. So an order that reduces a position stays allowed, and one that flips it
through zero is clamped at the limit on the other side: the part that opens the new side is a
new position, checked against the book as it is once the old one is closed. The room each
limit leaves depends only on the book, not on how a trade is split into orders. Differences
smaller than float round-off (``_ROUND_OFF`` of the sizes involved) are not sizes: an order
that exceeds the room by less is accepted, a clamp to less than that is a rejection, and a
clamped order whose size rounds to zero is dropped with a reason; nothing of zero size is
ever sent.

Orders are checked in a deterministic order: those reducing an existing position first, then
by symbol, then as given. Each order sent updates the hypothetical book the next is checked
against. Positions are valued at reference prices; weights are fractions of ``equity``.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import replace

from research_lib.risk._kill_switch import KillSwitch, _as_state
from research_lib.risk._limits import RiskInputError, RiskLimits
from research_lib.risk._orders import ClampedOrder, Order, ReferencePrice, RejectedOrder, RiskDecision, Side

_ROUND_OFF = 1e-12  # relative to the sizes in a check: a difference below this is float noise


def _finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _finite_positive(value: object) -> bool:
    return _finite(value) and value > 0


def _sanity(order: Order) -> str | None:
    if not isinstance(order.symbol, str) or not order.symbol:
        return f"input: symbol is {order.symbol!r}; give a non-empty symbol"
    if (order.quantity is None) == (order.notional is None):
        return (f"input: {order.symbol} gives quantity={order.quantity} and notional={order.notional}; "
                "give exactly one of them")
    name, value = ("quantity", order.quantity) if order.quantity is not None else ("notional", order.notional)
    if not _finite_positive(value):
        return f"input: {order.symbol} {name} is {value}; it must be finite and positive"
    if order.limit_price is not None and not _finite_positive(order.limit_price):
        return f"input: {order.symbol} limit_price is {order.limit_price}; it must be finite and positive"
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


def _validate_book(positions: Mapping[str, float], prices: Mapping[str, ReferencePrice], equity: float,
                   open_sell_quantity: Mapping[str, float], counts: dict[str, int]) -> None:
    """Raise RiskInputError naming the first malformed book input (the call is wrong, not an order)."""
    if not _finite_positive(equity):
        raise RiskInputError(f"equity is {equity}; pass the account's finite, positive net liquidation value")
    for name, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise RiskInputError(f"{name} is {count!r}; pass a non-negative integer")
    for symbol, quantity in positions.items():
        if not _finite(quantity):
            raise RiskInputError(f"positions[{symbol!r}] is {quantity!r}; pass a finite number of shares "
                                 "(negative: short), rebuilt from the broker")
    for symbol, quantity in open_sell_quantity.items():
        if not (_finite(quantity) and quantity >= 0):
            raise RiskInputError(f"open_sell_quantity[{symbol!r}] is {quantity!r}; pass the shares that open sell "
                                 "orders have still to sell, a finite number >= 0, rebuilt from the broker")
    unpriced = sorted(s for s, q in positions.items() if q != 0 and not (s in prices and _finite_positive(prices[s].price)))
    if unpriced:
        raise RiskInputError(f"positions hold {unpriced} without a finite positive reference price; "
                             "pass a price for every held symbol so exposures can be measured")
    gross = 0.0
    for symbol, quantity in positions.items():
        value = quantity * prices[symbol].price / equity if quantity else 0.0
        gross += abs(value)
        if not math.isfinite(gross):
            raise RiskInputError(f"positions[{symbol!r}] is {quantity!r} shares at {prices[symbol].price!r}: the book "
                                 f"is worth {gross} times equity {equity!r}; check the positions, prices and equity")


def _exposures(book: Mapping[str, float], prices: Mapping[str, ReferencePrice], equity: float) -> tuple[float, float]:
    values = [q * prices[s].price / equity for s, q in book.items() if q != 0]
    return sum(abs(v) for v in values), sum(values)


def _room(limit: float, level: float, direction: int) -> float:
    """How far a signed quantity now at ``level`` may move in ``direction`` (+1 or -1): up to
    ``limit`` on that side (so through zero up to the limit on the other side when it starts
    beyond it there), and not at all when it is already at or beyond ``limit`` on that side."""
    return max(limit - direction * level, 0.0)


def _size_bounds(order: Order, qty: float, held: float, avail: float, done: float, per_weight: float,
                 volume: float, gross: float, net: float, limits: RiskLimits,
                 state: KillSwitch) -> list[tuple[float, str]]:
    """Largest quantity each sizing limit allows, with the message for when it binds.

    ``held`` is the position, ``avail`` the position less open sells, ``done`` the shares of the
    symbol already sent in this batch, ``per_weight`` the shares worth all of equity; ``gross``
    and ``net`` are fractions of equity.
    """
    sym, sgn, side = order.symbol, order.side.sign, order.side.value
    earlier = f" (with {done:g} sent before it)" if done else ""
    bounds = [(limits.max_adv_fraction * volume - done,
               f"max_adv_fraction: {sym} order of {qty:g}{earlier} is {(qty + done) / volume:.4f} of ADV {volume:g} "
               f"> limit {limits.max_adv_fraction:.4f}")]
    if order.side is Side.SELL and not limits.allow_short:
        bounds.append((avail, f"no_short: {sym} sell of {qty:g} exceeds position {held:g} less open sells "
                              f"{held - avail:g} = {avail:g}"))
    if state is KillSwitch.REDUCING:
        bounds.append((abs(held), f"kill_switch: state REDUCING: {sym} {side} of {qty:g} would flip position {held:g}"))
    beyond = ">" if sgn > 0 else "<"
    weight, after = held / per_weight, (held + sgn * qty) / per_weight
    bounds.append((_room(limits.max_weight * per_weight, held, sgn),
                   f"max_weight: {sym} weight after the order would be {after:.4f} {beyond} limit "
                   f"{sgn * max(limits.max_weight, sgn * weight):.4f}"))
    closing = max(-sgn * held, 0.0)  # the shares that reduce the position; the rest opens a new one
    closed = gross - closing / per_weight
    g_after = gross + (abs(held + sgn * qty) - abs(held)) / per_weight
    bounds.append((closing + _room(limits.max_gross_exposure, closed, 1) * per_weight,
                   f"max_gross_exposure: gross after the order would be {g_after:.4f} > limit "
                   f"{max(limits.max_gross_exposure, closed):.4f}"))
    bounds.append((_room(limits.max_net_exposure, net, sgn) * per_weight,
                   f"max_net_exposure: net after the order would be {net + sgn * qty / per_weight:.4f} {beyond} limit "
                   f"{sgn * max(limits.max_net_exposure, sgn * net):.4f}"))
    return bounds


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
        Open orders at the broker now, and orders already sent this session.

    Returns
    -------
    RiskDecision
        Every order is in exactly one of accepted, clamped or rejected; an order whose clamp
        leaves nothing to send (its size rounds to zero) is rejected with a reason saying so.

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
    book = {s: float(q) for s, q in positions.items()}

    def reducing(o: Order) -> bool:
        return isinstance(o.side, Side) and o.side.sign * book.get(o.symbol, 0.0) < 0

    sequence = sorted(range(len(orders)), key=lambda i: (not reducing(orders[i]), str(orders[i].symbol), i))
    accepted, clamped, rejected, to_send = [], [], [], []
    traded: dict[str, float] = {}  # shares sent per symbol in this batch
    for i in sequence:
        order = orders[i]
        reason, sent, qty = _check_one(order, book, selling, traded, prices, limits, state, equity, now, adv,
                                       open_orders + len(to_send), orders_sent_today + len(to_send))
        if sent is None:
            rejected.append(RejectedOrder(order, reason))
            continue
        if reason is None:
            accepted.append(order)
        else:
            clamped.append(ClampedOrder(order, sent, reason))
        to_send.append(sent)
        book[order.symbol] = book.get(order.symbol, 0.0) + order.side.sign * qty
        traded[order.symbol] = traded.get(order.symbol, 0.0) + qty
    return RiskDecision(tuple(accepted), tuple(clamped), tuple(rejected), tuple(to_send), book)


def _resized(order: Order, qty: float, price: float) -> Order:
    if order.quantity is not None:
        return replace(order, quantity=qty)
    return replace(order, notional=qty * price)


def _check_one(order, book, selling, traded, prices, limits, state, equity, now, adv, n_open, n_today):
    """(None, order, qty) to accept, (reason, smaller order, its qty) to clamp, (reason, None, 0) to reject."""
    sym = order.symbol
    if state is KillSwitch.HALTED:
        return "kill_switch: state HALTED allows only cancels", None, 0.0
    if state is KillSwitch.REDUCING and order.side.sign * book.get(sym, 0.0) >= 0:
        return (f"kill_switch: state REDUCING allows only orders that reduce a position; {sym} position is "
                f"{book.get(sym, 0.0):g} and this is a {order.side.value}"), None, 0.0
    reason = _sanity(order) or _reference(order, prices.get(sym), now, limits)
    if reason:
        return reason, None, 0.0
    ref = prices[sym].price
    px = order.limit_price or ref
    qty = order.quantity if order.quantity is not None else order.notional / px
    if not _finite_positive(qty):
        return (f"input: {sym} notional {order.notional:g} at price {px:g} is {qty:g} shares; give a notional "
                "worth a finite, positive number of shares"), None, 0.0
    if qty * px > limits.max_order_notional:
        return f"max_order_notional: {sym} order notional {qty * px:,.2f} > limit {limits.max_order_notional:,.2f}", None, 0.0
    if limits.max_order_quantity is not None and qty > limits.max_order_quantity:
        return f"max_order_quantity: {sym} order quantity {qty:g} > limit {limits.max_order_quantity:g}", None, 0.0
    if n_open + 1 > limits.max_open_orders:
        return f"max_open_orders: open orders would be {n_open + 1} > limit {limits.max_open_orders}", None, 0.0
    if n_today + 1 > limits.max_daily_orders:
        return f"max_daily_orders: orders today would be {n_today + 1} > limit {limits.max_daily_orders}", None, 0.0
    volume = adv.get(sym)
    if not _finite_positive(volume):
        return f"max_adv_fraction: {sym} has no finite positive average daily volume ({volume}); fail closed", None, 0.0
    held, done = book.get(sym, 0.0), traded.get(sym, 0.0)
    gross, net = _exposures(book, prices, equity)
    per_weight = equity / ref
    scale = qty + abs(held) + done + gross * per_weight  # the sizes a room is computed from
    if not (_finite_positive(per_weight) and math.isfinite(scale)):
        return (f"input: {sym} cannot be sized: equity {equity:g} / reference price {ref:g} = {per_weight:g} shares "
                "per unit of weight; fail closed"), None, 0.0
    bounds = _size_bounds(order, qty, held, held - selling.get(sym, 0.0), done, per_weight, volume, gross, net,
                          limits, state)
    allowed, message = min(bounds, key=lambda b: b[0])
    slack = _ROUND_OFF * scale
    if qty <= allowed + slack:
        return None, order, qty
    if allowed <= slack:
        return f"{message}; nothing fits", None, 0.0
    sent = _resized(order, allowed, px)
    unit, before, after = (("quantity", qty, sent.quantity) if order.quantity is not None
                           else ("notional", order.notional, sent.notional))
    if not _finite_positive(after):
        return f"{message}; {unit} reduced from {before:g} to {after:g}: nothing to send, order dropped", None, 0.0
    return f"{message}; {unit} reduced from {before:g} to {after:g}", sent, allowed
