"""Orders worked by an execution algorithm (``params: execution`` other than ``market``).

Each order the pre-trade checks let through is a *parent*. `record_schedules` splits it into child
slices over the next session's bars (`research_lib.execution.plan_schedule`; the expected volume of a
bar is the average daily volume shared out on the intraday profile: no source here gives minute bars,
so the profile is the usual U shape) and records the schedule and a ``planned`` intent per child in
one transaction. `send_children` then sends each child still ``planned`` or ``not_sent``, in order,
after checking it on its own (`research_lib.risk.check_orders` with its limit price: the kill switch,
the fat-finger band, the order and exposure limits, the session's order count), intent first.

So a crash at any point leaves either no schedule or the whole schedule recorded; the re-run finds
it, sends only the children not yet at the broker (each has its own client_order_id, looked up in
the cycle's first step), and never plans the parent again. A child refused by the checks is recorded
``rejected`` with the reason and the schedule goes on without it.

Open orders are counted against ``risk.max_open_orders`` by working parent (the children of one
parent work one after another in the market), each child against ``risk.max_daily_orders``.
"""

from __future__ import annotations

import numpy as np

from research_lib.broker import Broker, BrokerOrder
from research_lib.execution import BARS_PER_SESSION, plan_schedule
from research_lib.execution.intraday import u_shape
from research_lib.risk import KillSwitch, Order, ReferencePrice, Side, check_orders
from research_lib.trading._inputs import CycleInputs, CycleReport
from research_lib.trading._ledger import Intent, Ledger, Schedule
from research_lib.trading._orders import UNSENT, client_order_id, send_order

CHILD_LOT = 1e-9  # children are fractional shares to 9 decimals (Alpaca's precision)
NOT_COUNTED = ("not_sent", "planned", "rejected", "delisted")  # intents that are not orders sent today


def is_worked(inputs: CycleInputs) -> bool:
    """Whether the cycle works its orders with an algorithm (not one market order per symbol and side)."""
    return inputs.execution is not None and inputs.execution.algorithm != "market"


def parent_of(client_order_id: str, schedules: list[Schedule]) -> str | None:
    """The parent id of a child order of one of ``schedules`` (None: not a child)."""
    for schedule in schedules:
        if any(child["client_order_id"] == client_order_id for child in schedule.slices):
            return schedule.parent_id
    return None


def unsent_quantity(ledger: Ledger, inputs: CycleInputs, today: list[Intent]) -> dict[str, float]:
    """Signed shares of today's children not at the broker yet (``planned`` or ``not_sent``): the
    orders to come, which the cycle's targets already count on."""
    children = {c["client_order_id"] for s in ledger.schedules(inputs.strategy, str(inputs.session)) for c in s.slices}
    out: dict[str, float] = {}
    for intent in today:
        if intent.client_order_id in children and intent.status in UNSENT:
            out[intent.symbol] = out.get(intent.symbol, 0.0) + (intent.quantity if intent.side == "buy"
                                                                else -intent.quantity)
    return out


def working_count(open_orders: list[BrokerOrder], schedules: list[Schedule]) -> int:
    """Open orders counted against ``max_open_orders``: one per working parent, one per other order."""
    return len({parent_of(o.client_order_id, schedules) or o.client_order_id for o in open_orders})


def record_schedules(ledger: Ledger, inputs: CycleInputs, parents: list[Order], report: CycleReport) -> None:
    """Plan each parent and record its schedule with its ``planned`` children (a parent already
    recorded this session keeps its schedule)."""
    config = inputs.execution
    for order in parents:
        side = order.side.value
        parent = client_order_id(inputs.strategy, inputs.session, order.symbol, side)
        arrival = float(inputs.prices[order.symbol])
        daily = float(inputs.adv.get(order.symbol, np.nan)) if inputs.adv is not None else np.nan
        expected = u_shape(BARS_PER_SESSION) * (daily if np.isfinite(daily) and daily > 0 else 0.0)
        slices, unplanned = plan_schedule(parent, side, order.quantity, arrival, expected, config, lot_size=CHILD_LOT,
                                          fat_finger_band=inputs.limits.fat_finger_band)
        children = tuple({"client_order_id": s.client_order_id, "bar": s.bar, "bars": s.bars, "quantity": s.quantity,
                          "limit_price": s.limit_price, "phase": s.phase} for s in slices)
        schedule = Schedule(parent, inputs.strategy, str(inputs.session), order.symbol, side, order.quantity, arrival,
                            config.algorithm, unplanned, children)
        if ledger.record_schedule(schedule):
            report.scheduled.append({"parent_id": parent, "symbol": order.symbol, "side": side,
                                     "quantity": order.quantity, "algorithm": config.algorithm,
                                     "children": len(children), "unplanned": unplanned})


def send_children(broker: Broker, ledger: Ledger, inputs: CycleInputs, report: CycleReport, *, state: KillSwitch,
                  equity: float, book: dict[str, float], adv: dict[str, float], open_count: int,
                  sent_today: int) -> None:
    """Send today's children still ``planned`` or ``not_sent``, each checked on its own against the
    book as it will be once the orders at the broker (``book``) and the children sent before it fill."""
    book = dict(book)
    prices = {s: ReferencePrice(float(p), inputs.price_time) for s, p in inputs.prices.items() if p > 0}
    for schedule in ledger.schedules(inputs.strategy, str(inputs.session)):
        side = Side.BUY if schedule.side == "buy" else Side.SELL
        for child in schedule.slices:
            cid = child["client_order_id"]
            known = ledger.intent(cid)
            if known is None or known.status not in UNSENT:
                continue
            order = Order(schedule.symbol, side, quantity=child["quantity"], limit_price=child["limit_price"])
            decision = check_orders([order], book, prices, inputs.limits, state, equity, inputs.price_time, adv=adv,
                                    open_orders=open_count, orders_sent_today=sent_today)
            if decision.accepted != (order,):  # refused, or clamped: a child goes whole or not at all
                refusal = decision.rejected or decision.clamped
                reason = refusal[0].reason if refusal else "refused by the pre-trade checks"
                ledger.update_intent(cid, "rejected", reason=f"pre-trade check: {reason}")
                report.rejected.append({"symbol": schedule.symbol, "side": schedule.side, "client_order_id": cid,
                                        "reason": reason})
                continue
            worked = {"limit_price": child["limit_price"], "bar": child["bar"], "bars": child["bars"]}
            if send_order(broker, ledger, inputs.strategy, str(inputs.session), order, schedule.arrival_price, report,
                          cid=cid, worked=worked):
                book[schedule.symbol] = book.get(schedule.symbol, 0.0) + side.sign * child["quantity"]
                sent_today += 1


def cancel_unsent(ledger: Ledger, inputs: CycleInputs, why: str) -> None:
    """Mark today's children not yet sent ``canceled`` (the kill switch halted the strategy): none
    of them will be sent, and the decision stays to be traded once the strategy is resumed."""
    for schedule in ledger.schedules(inputs.strategy, str(inputs.session)):
        for child in schedule.slices:
            known = ledger.intent(child["client_order_id"])
            if known is not None and known.status in UNSENT:
                ledger.update_intent(known.client_order_id, "canceled", reason=f"not sent: {why}")

