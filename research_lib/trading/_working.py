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

Two kinds of broker (`Broker.works_schedules`):

- **the simulated broker** takes each child with the bars of the next session it works over, and
  works it there when the sim moves on: every child is sent at once, at the close;
- **Alpaca** sends an order the moment it gets it, so the cycle works the schedule itself, in the
  session it runs in (`work_live`): the window starts at the next bar, each child is a limit day
  order for whole shares sent when its first bar starts, its fills are polled until its last bar
  ends, and what is left of it then is cancelled. A child whose bars passed while nothing ran (a
  crash, a late start) is sent at once for as long as it would have worked. When the market
  closes, the children not sent are cancelled in the ledger. A re-run after a crash picks the
  schedule up where it stands: open children are polled (and cancelled when their bars are over),
  unsent ones sent in their turn, none twice.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Callable
from zoneinfo import ZoneInfo

import numpy as np

from research_lib.broker import Broker, BrokerOrder, OPEN_STATUSES
from research_lib.execution import BARS_PER_SESSION, plan_schedule
from research_lib.execution.intraday import u_shape
from research_lib.risk import KillSwitch, Order, ReferencePrice, Side, check_orders
from research_lib.trading._inputs import CycleInputs, CycleReport
from research_lib.trading._ledger import FINAL_STATUSES, Intent, Ledger, Schedule
from research_lib.trading._orders import UNSENT, apply_answer, cancel_order, client_order_id, send_order

CHILD_LOT = 1e-9  # children at the sim: fractional shares to 9 decimals
LIVE_LOT = 1.0  # children at Alpaca: whole shares (its limit orders take no fraction)
EXCHANGE = ZoneInfo("America/New_York")
SESSION_OPEN = dt.time(9, 30)
BAR = dt.timedelta(minutes=5)
POLL_S = 30.0  # how often a working child's fills are read (a 30-minute child: 60 reads)
LIVE = ("sent", "adopted", "unknown")  # a child that may be working at the broker
NOT_COUNTED = ("not_sent", "planned", "withdrawn", "rejected", "delisted")  # intents that are not orders sent today
CLAMP_TOLERANCE = 1e-9  # a child clamped by less than this share of it (float rounding) goes as clamped


def is_worked(inputs: CycleInputs) -> bool:
    """Whether the cycle works its orders with an algorithm (not one market order per symbol and side)."""
    return inputs.execution is not None and inputs.execution.algorithm != "market"


def parent_of(client_order_id: str, schedules: list[Schedule]) -> str | None:
    """The parent id of a child order of one of ``schedules`` (None: not a child)."""
    for schedule in schedules:
        if any(child["client_order_id"] == client_order_id for child in schedule.slices):
            return schedule.parent_id
    return None


def unsent_quantity(schedules: list[Schedule], today: list[Intent]) -> dict[str, float]:
    """Signed shares of the children of today's ``schedules`` not at the broker yet (``planned`` or
    ``not_sent``, from ``today``'s intents): the orders to come, which the cycle's targets already count on."""
    children = {c["client_order_id"] for s in schedules for c in s.slices}
    out: dict[str, float] = {}
    for intent in today:
        if intent.client_order_id in children and intent.status in UNSENT:
            out[intent.symbol] = out.get(intent.symbol, 0.0) + (intent.quantity if intent.side == "buy"
                                                                else -intent.quantity)
    return out


def working_orders(open_orders: list[BrokerOrder], schedules: list[Schedule]) -> set[str]:
    """Open orders as counted against ``max_open_orders``: one per working parent (its id), one per
    other order (its client_order_id)."""
    return {parent_of(o.client_order_id, schedules) or o.client_order_id for o in open_orders}


def _parent_id(ledger: Ledger, inputs: CycleInputs, known: dict[str, Schedule], symbol: str, side: str) -> str | None:
    """The id of a new parent for ``symbol`` and ``side`` this session: the order's client_order_id,
    or, when the schedule under it (among ``known``, today's by parent id) was cut short (children withdrawn by a halt or the close, none
    still working), the same id with ``.r2``, ``.r3``... None while a schedule under it is still
    working, or once it was worked to its end (what it left unfilled is reported, not chased)."""
    base = client_order_id(inputs.strategy, inputs.session, symbol, side)
    for revision in range(1, 100):
        parent = base if revision == 1 else f"{base}.r{revision}"
        if parent not in known:
            return parent
        kids = [ledger.intent(c["client_order_id"]) or _GONE for c in known[parent].slices]
        if any(k.status not in FINAL_STATUSES for k in kids) or not any(k.status == "withdrawn" for k in kids):
            return None
    return None


def _lot(quantity: float, smallest: float) -> float:
    """``smallest``, or the power of ten that keeps a parent under 2**50 lots (plan_schedule counts
    lots exactly up to 2**53)."""
    if not quantity > 0:
        return smallest
    return max(smallest, 10.0 ** math.ceil(math.log10(quantity / 2**50)))


def record_schedules(ledger: Ledger, inputs: CycleInputs, parents: list[Order], report: CycleReport, *,
                     now: dt.datetime | None = None) -> None:
    """Plan each parent and record its schedule with its ``planned`` children (a parent already
    recorded this session keeps its schedule). ``now`` (a live broker's clock): the window starts
    at the bar after it, in this session, and children are whole shares; None: the next session's
    window (the sim)."""
    config, lot = inputs.execution, CHILD_LOT
    if now is not None:
        config, lot = _live_window(config, now), LIVE_LOT
        if config is None:
            report.rejected += [{"symbol": o.symbol, "side": o.side.value, "reason": "execution: no 5-minute bar is "
                                 "left in today's session to work it in"} for o in parents]
            return
    known = {s.parent_id: s for s in ledger.schedules(inputs.strategy, str(inputs.session))}  # today's, by id
    for order in parents:
        side = order.side.value
        parent = _parent_id(ledger, inputs, known, order.symbol, side)
        if parent is None:  # its schedule is still working: what it will fill is already counted
            continue
        arrival = float(inputs.prices[order.symbol])
        daily = float(inputs.adv.get(order.symbol, np.nan)) if inputs.adv is not None else np.nan
        expected = u_shape(BARS_PER_SESSION) * (daily if np.isfinite(daily) and daily > 0 else 0.0)
        try:
            slices, unplanned = plan_schedule(parent, side, order.quantity, arrival, expected, config,
                                              lot_size=_lot(order.quantity, lot),
                                              fat_finger_band=inputs.limits.fat_finger_band)
        except ValueError as error:  # refused for this order only; the others are worked
            report.rejected.append({"symbol": order.symbol, "side": side, "reason": f"execution: {error}"})
            continue
        children = tuple({"client_order_id": s.client_order_id, "bar": s.bar, "bars": s.bars, "quantity": s.quantity,
                          "limit_price": s.limit_price, "phase": s.phase} for s in slices)
        schedule = Schedule(parent, inputs.strategy, str(inputs.session), order.symbol, side, order.quantity, arrival,
                            config.algorithm, unplanned, children)
        if ledger.record_schedule(schedule):
            report.scheduled.append({"parent_id": parent, "symbol": order.symbol, "side": side,
                                     "quantity": order.quantity, "algorithm": config.algorithm,
                                     "children": len(children), "unplanned": unplanned})


def send_children(broker: Broker, ledger: Ledger, inputs: CycleInputs, report: CycleReport, *, state: KillSwitch,
                  equity: float, book: dict[str, float], adv: dict[str, float], working: set[str],
                  sent_today: int, only: set[str] | None = None, live: bool = False) -> int:
    """Send today's children still ``planned`` or ``not_sent`` (those in ``only``, if given), each
    checked on its own against the book as it will be once the orders at the broker (``book``,
    updated in place) and the children sent before it fill. ``working`` (updated in place) are the
    open orders as `working_orders` counts them: a child of a parent already working adds none.
    ``live``: sent with their limit only (the broker sends at once), else with their bars too.
    Returns the number of orders sent today, these included."""
    prices = {s: ReferencePrice(float(p), inputs.price_time) for s, p in inputs.prices.items() if p > 0}
    for schedule in ledger.schedules(inputs.strategy, str(inputs.session)):
        side = Side.BUY if schedule.side == "buy" else Side.SELL
        for child in schedule.slices:
            cid = child["client_order_id"]
            known = ledger.intent(cid)
            if known is None or known.status not in UNSENT or (only is not None and cid not in only):
                continue
            order = Order(schedule.symbol, side, quantity=child["quantity"], limit_price=child["limit_price"])
            others = len(working - {schedule.parent_id})
            decision = check_orders([order], book, prices, inputs.limits, state, equity, inputs.price_time, adv=adv,
                                    open_orders=others, orders_sent_today=sent_today)
            hair = [c.order for c in decision.clamped if c.order.quantity >= order.quantity * (1 - CLAMP_TOLERANCE)]
            order = hair[0] if hair else order  # float rounding of the book (the last child of an exit), not a limit
            if decision.accepted != (order,) and not hair:  # refused, or clamped: a child goes whole or not at all
                refusal = decision.rejected or decision.clamped
                reason = refusal[0].reason if refusal else "refused by the pre-trade checks"
                ledger.update_intent(cid, "rejected", reason=f"pre-trade check: {reason}")
                report.rejected.append({"symbol": schedule.symbol, "side": schedule.side, "client_order_id": cid,
                                        "reason": reason})
                continue
            worked = ({"limit_price": child["limit_price"]} if live else
                      {"limit_price": child["limit_price"], "bar": child["bar"], "bars": child["bars"]})
            if send_order(broker, ledger, inputs.strategy, str(inputs.session), order, schedule.arrival_price, report,
                          cid=cid, worked=worked):
                book[schedule.symbol] = book.get(schedule.symbol, 0.0) + side.sign * order.quantity
                working.add(schedule.parent_id)
                sent_today += 1
    return sent_today


def cancel_unsent(ledger: Ledger, inputs: CycleInputs, why: str) -> None:
    """Mark today's children not yet sent ``withdrawn`` (the kill switch halted the strategy, the
    market closed): none of them will be sent, and the decision stays to be traded (a new schedule,
    `_parent_id`), once the strategy is resumed."""
    for schedule in ledger.schedules(inputs.strategy, str(inputs.session)):
        for child in schedule.slices:
            known = ledger.intent(child["client_order_id"])
            if known is not None and known.status in UNSENT:
                ledger.update_intent(known.client_order_id, "withdrawn", reason=f"not sent: {why}")


def bar_start(session: dt.date, bar: int) -> dt.datetime:
    """When 5-minute bar ``bar`` of ``session`` starts (bar 0 at 09:30 New York)."""
    return dt.datetime.combine(session, SESSION_OPEN, EXCHANGE) + bar * BAR


def _live_window(config, now: dt.datetime):
    """``config`` with its window moved to start at the bar after ``now`` (None: no bar left today)."""
    local = now.astimezone(EXCHANGE)
    current = math.floor((local - bar_start(local.date(), 0)) / BAR)
    first = max(config.window_start_bar, current + 1)
    if first >= BARS_PER_SESSION:
        return None
    if first >= config.window_end_bar:  # past the window: worked over the bars left up to the close
        return config.model_copy(update={"window_start_bar": first, "window_end_bar": BARS_PER_SESSION})
    return config.model_copy(update={"window_start_bar": first})


def work_live(broker: Broker, ledger: Ledger, inputs: CycleInputs, report: CycleReport, *, state: KillSwitch,
              equity: float, book: dict[str, float], adv: dict[str, float], working: set[str], sent_today: int,
              sleep: Callable[[float], None] = time.sleep, poll_s: float = POLL_S) -> None:
    """Work today's schedules at a broker that sends orders at once (see the module docstring).

    The kill switch is read again each round: REDUCING binds the children sent after it, HALTED
    cancels what works and withdraws the rest. A cancel is asked once per child (a pending cancel is
    polled until the broker says it is over); a child whose outcome is unknown is looked up each
    round, adopted when found, and left to the next cycle's first step when not found by its end.
    """
    session, day = inputs.session, str(inputs.session)
    ends: dict[str, dt.datetime] = {}
    cancelled: set[str] = set()
    given_up: set[str] = set()

    def statuses() -> dict[str, str]:  # one read of the session's intents a step, not one per child
        return {i.client_order_id: i.status for i in ledger.intents(inputs.strategy, day)}

    while True:
        status = statuses()
        todo = [(s, c) for s in ledger.schedules(inputs.strategy, day) for c in s.slices
                if c["client_order_id"] not in given_up and status.get(c["client_order_id"], "not_sent") in (*UNSENT, *LIVE)]
        if not todo:
            return
        clock = broker.clock()
        now = clock.now
        state, why = ledger.kill_switch(inputs.strategy)
        if state is KillSwitch.HALTED or not clock.is_open:  # copy every fill first, then stop
            for _, child in todo:
                found = _poll(broker, ledger, child["client_order_id"])
                if state is KillSwitch.HALTED and found is not None and found.is_open:
                    cancel_order(broker, ledger, found, report, dry_run=False)
            if state is KillSwitch.HALTED:
                report.status, report.kill_switch, report.kill_switch_reason = "halted", state.value, why
            cancel_unsent(ledger, inputs, f"kill switch HALTED ({why})" if state is KillSwitch.HALTED
                          else "the market closed before it was sent")
            return
        due = [(s, c) for s, c in todo if status[c["client_order_id"]] in UNSENT and bar_start(session, c["bar"]) <= now]
        for schedule, child in due:  # late ones (bars passed while nothing ran) work as long as they would have
            start, span = bar_start(session, child["bar"]), child["bars"] * BAR
            ends[child["client_order_id"]] = max(start + span, now + span)
            sent_today = send_children(broker, ledger, inputs, report, state=state, equity=equity, book=book,
                                       adv=adv, working=working, sent_today=sent_today,
                                       only={child["client_order_id"]}, live=True)
        status = statuses() if due else status
        for _, child in todo:
            cid = child["client_order_id"]
            if status[cid] not in LIVE:
                continue
            end = ends.setdefault(cid, bar_start(session, child["bar"] + child["bars"]))
            found = _poll(broker, ledger, cid)
            if found is None and now >= end:
                given_up.add(cid)  # sent, never found: the next cycle's first step resolves it
            elif found is not None and found.is_open and now >= end and cid not in cancelled:
                cancelled.add(cid)
                cancel_order(broker, ledger, found, report, dry_run=False)
        status = statuses()
        starts = [bar_start(session, c["bar"]) for _, c in todo if status[c["client_order_id"]] in UNSENT]
        busy = [ends[c["client_order_id"]] for _, c in todo if c["client_order_id"] in ends
                and status[c["client_order_id"]] in LIVE and c["client_order_id"] not in given_up]
        upcoming = [(w - now).total_seconds() for w in starts + busy if w > now]
        pause = min(upcoming + ([poll_s] if busy else []), default=poll_s)  # poll only while a child works
        sleep(max(pause, 0.0))


def _poll(broker: Broker, ledger: Ledger, cid: str) -> BrokerOrder | None:
    """Copy a sent child's state from the broker into the ledger (an unknown one found is adopted)."""
    known = ledger.intent(cid)
    if known is None or known.status in UNSENT:
        return None
    found = broker.order_by_client_id(cid)
    if found is None:
        return None
    status = found.status if found.status not in OPEN_STATUSES else ("adopted" if known.status == "unknown"
                                                                    else known.status)
    if (status, found.filled_quantity, found.broker_id) != (known.status, known.filled_quantity, known.broker_id):
        apply_answer(ledger, found, status)  # written only when something moved: a poll is not a write
    return found


_GONE = Intent("", "", "", "", "", 0.0, 0.0, "not_sent")  # a child with no intent: treated as never sent
