"""Pre-trade checks: a pure function from (book, proposed orders, prices, limits) to a decision.

Checks, in order, for each order (TRADING_SAFETY.md pre-trade checks 1, 4-7, 9 and 11):
kill switch; input sanity; a fresh reference price (missing or stale: reject, fail closed)
and the fat-finger band around it; max order notional and quantity; open-order count and
daily order cap; then the sizing limits, which clamp an order down to the largest size that
fits (or reject it when nothing fits): share of ADV, no accidental short, per-symbol weight,
gross and net exposure. A book already beyond a limit may shrink but not grow further.

Orders are checked in a deterministic order: those reducing an existing position first, then
by symbol, then as given. Each order sent updates the hypothetical book the next is checked
against. Positions are valued at reference prices; weights are fractions of ``equity``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from research_lib.risk._kill_switch import KillSwitch, _as_state
from research_lib.risk._limits import RiskInputError, RiskLimits
from research_lib.risk._orders import ClampedOrder, Order, ReferencePrice, RejectedOrder, RiskDecision, Side


def _finite_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


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
    if not _finite_positive(equity):
        raise RiskInputError(f"equity is {equity}; pass the account's finite, positive net liquidation value")
    for name, count in counts.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise RiskInputError(f"{name} is {count!r}; pass a non-negative integer")
    for name, book in (("positions", positions), ("open_sell_quantity", open_sell_quantity)):
        bad = {s: q for s, q in book.items() if not (isinstance(q, (int, float)) and math.isfinite(q))}
        if bad:
            raise RiskInputError(f"{name} has non-finite quantities {bad}; rebuild the book from the broker")
    unpriced = sorted(s for s, q in positions.items() if q != 0 and not (s in prices and _finite_positive(prices[s].price)))
    if unpriced:
        raise RiskInputError(f"positions hold {unpriced} without a finite positive reference price; "
                             "pass a price for every held symbol so exposures can be measured")


def _exposures(book: Mapping[str, float], prices: Mapping[str, ReferencePrice], equity: float) -> tuple[float, float]:
    values = [q * prices[s].price / equity for s, q in book.items() if q != 0]
    return sum(abs(v) for v in values), sum(values)


def _size_bounds(order: Order, qty: float, book: Mapping[str, float], selling: Mapping[str, float], r: float,
                 adv: float, equity: float, gross: float, net: float, limits: RiskLimits,
                 state: KillSwitch) -> list[tuple[float, str]]:
    """Largest quantity each sizing limit allows, with the message for when it binds."""
    sym, sgn, p = order.symbol, order.side.sign, book.get(order.symbol, 0.0)
    bounds = [(limits.max_adv_fraction * adv,
               f"max_adv_fraction: {sym} order of {qty:g} is {qty / adv:.4f} of ADV {adv:g} > limit {limits.max_adv_fraction:.4f}")]
    if order.side is Side.SELL and not limits.allow_short:
        avail = p - selling.get(sym, 0.0)
        bounds.append((avail, f"no_short: {sym} sell of {qty:g} exceeds position {p:g} less open sells "
                              f"{selling.get(sym, 0.0):g} = {avail:g}"))
    if state is KillSwitch.REDUCING:
        bounds.append((abs(p), f"kill_switch: state REDUCING: {sym} {order.side.value} of {qty:g} would flip position {p:g}"))
    after = (p + sgn * qty) * r / equity
    w_bound = max(limits.max_weight, abs(p) * r / equity)
    bounds.append((w_bound * equity / r - sgn * p,
                   f"max_weight: {sym} weight after the order would be {after:.4f} > limit {w_bound:.4f}"))
    g_bound = max(limits.max_gross_exposure, gross)
    g_after = gross + (abs(p + sgn * qty) - abs(p)) * r / equity
    bounds.append(((g_bound - gross) * equity / r + abs(p) - sgn * p,
                   f"max_gross_exposure: gross after the order would be {g_after:.4f} > limit {g_bound:.4f}"))
    n_bound = max(limits.max_net_exposure, abs(net))
    n_after = net + sgn * qty * r / equity
    bounds.append(((n_bound - sgn * net) * equity / r,
                   f"max_net_exposure: |net| after the order would be {abs(n_after):.4f} > limit {n_bound:.4f}"))
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
        Current quantities in shares (negative: short).
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
        Shares already being sold by open orders.
    open_orders, orders_sent_today : int
        Open orders at the broker now, and orders already sent this session.

    Returns
    -------
    RiskDecision
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
    for i in sequence:
        order = orders[i]
        reason, qty = _check_one(order, book, selling, prices, limits, state, equity, now, adv,
                                 open_orders + len(to_send), orders_sent_today + len(to_send))
        if qty is None:
            rejected.append(RejectedOrder(order, reason))
            continue
        if reason is None:
            sent = order
            accepted.append(order)
        else:
            sent = _resized(order, qty, prices[order.symbol].price)
            clamped.append(ClampedOrder(order, sent, reason))
        to_send.append(sent)
        book[order.symbol] = book.get(order.symbol, 0.0) + order.side.sign * qty
    return RiskDecision(tuple(accepted), tuple(clamped), tuple(rejected), tuple(to_send), book)


def _resized(order: Order, qty: float, ref: float) -> Order:
    if order.quantity is not None:
        return replace(order, quantity=qty)
    return replace(order, notional=qty * (order.limit_price or ref))


def _check_one(order, book, selling, prices, limits, state, equity, now, adv, n_open, n_today):
    """(None, qty) to accept, (reason, qty) to clamp, (reason, None) to reject."""
    sym = order.symbol
    if state is KillSwitch.HALTED:
        return "kill_switch: state HALTED allows only cancels", None
    if state is KillSwitch.REDUCING and order.side.sign * book.get(sym, 0.0) >= 0:
        return (f"kill_switch: state REDUCING allows only orders that reduce a position; {sym} position is "
                f"{book.get(sym, 0.0):g} and this is a {order.side.value}"), None
    reason = _sanity(order) or _reference(order, prices.get(sym), now, limits)
    if reason:
        return reason, None
    ref = prices[sym].price
    px = order.limit_price or ref
    qty = order.quantity if order.quantity is not None else order.notional / px
    if qty * px > limits.max_order_notional:
        return f"max_order_notional: {sym} order notional {qty * px:,.2f} > limit {limits.max_order_notional:,.2f}", None
    if limits.max_order_quantity is not None and qty > limits.max_order_quantity:
        return f"max_order_quantity: {sym} order quantity {qty:g} > limit {limits.max_order_quantity:g}", None
    if n_open + 1 > limits.max_open_orders:
        return f"max_open_orders: open orders would be {n_open + 1} > limit {limits.max_open_orders}", None
    if n_today + 1 > limits.max_daily_orders:
        return f"max_daily_orders: orders today would be {n_today + 1} > limit {limits.max_daily_orders}", None
    volume = adv.get(sym)
    if not _finite_positive(volume):
        return f"max_adv_fraction: {sym} has no finite positive average daily volume ({volume}); fail closed", None
    gross, net = _exposures(book, prices, equity)
    bounds = _size_bounds(order, qty, book, selling, ref, volume, equity, gross, net, limits, state)
    allowed, message = min(bounds, key=lambda b: b[0])
    if qty <= allowed:
        return None, qty
    if allowed <= 0:
        return f"{message}; nothing fits", None
    unit = "quantity" if order.quantity is not None else "notional"
    scale = 1.0 if order.quantity is not None else px
    return f"{message}; {unit} reduced from {qty * scale:g} to {allowed * scale:g}", allowed
