"""One paper-trading cycle: reconcile, check the loss limits, size, check, record, send.

The steps, each safe to kill and re-run (TRADING_SAFETY.md, "Restart and reconciliation"):

1. **Resolve** the intents whose outcome is not final (written but maybe not sent, sent
   but maybe not filled): look each up at the broker by its ``client_order_id``; found
   means adopted (or filled, cancelled...), not found means it was never sent.
2. **Reconcile** from the broker, the source of truth: account, positions, open orders.
   Open orders that are not this session's intents are cancelled explicitly. A position that
   the strategy's recorded fills do not explain halts the strategy (`reconcile_positions`).
3. **Loss limits**: the day's P&L against the previous session's equity and the drawdown
   from the peak move the kill switch (ACTIVE -> REDUCING -> HALTED, never back on its own).
4. **Orders**: target weights x equity / reference price - positions, in shares, less what
   today's open orders already do; one order per symbol and side, with a deterministic
   ``client_order_id`` so a re-run converges to the same orders. They pass the pre-trade
   checks (`research_lib.risk.check_orders`) with the kill-switch state.
5. **Send** (`research_lib.trading._orders`): each intent is written to the ledger *before* its
   order is sent; the broker's answer updates it. An unknown outcome is looked up at once, and
   again at the next cycle. With an execution algorithm (``inputs.execution``), each order is a
   parent whose schedule is recorded whole first, then its children are checked and sent one by
   one (`research_lib.trading._working`); a re-run sends only the children not yet sent.

Nothing is sent while the market is closed, while HALTED, or on a dry run (which still
reconciles, copying the broker's answers into the ledger, and reports what it would send).
Stopping the command stops the sending: in a notebook kernel whose starting process (`spartan
trade`) has ended, every order and cancel is refused before it is recorded or sent
(`command_gone`, raising `CommandGone`), should the kernel outlive the command at all
(`research_lib.pipeline` makes it die with it); while that process is stopped (Ctrl-Z,
SIGSTOP) the cycle waits before each order and cancel until it continues or ends.

The ledger's record of a finished cycle (`Ledger.finish_cycle`) holds what its session's report
is made of besides the ledger's history: the `CycleReport`, the targets, the reference prices
and the caller's ``notes``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import pandas as pd

from research_lib.broker import Broker
from research_lib.data import asset_class
from research_lib.risk import KillSwitch, Order, ReferencePrice, Side, check_orders, next_state
from research_lib.trading._inputs import CycleInputs, CycleReport
from research_lib.trading._ledger import FINAL_STATUSES, Intent, Ledger
from research_lib.trading._orders import apply_answer, cancel_order, client_order_id, send_order
from research_lib.trading._working import (NOT_COUNTED, cancel_unsent, is_worked, record_schedules, send_children,
                                           unsent_quantity, work_live, working_orders)

UNRESOLVED = ("intent", "unknown")
POSITION_TOLERANCE = 1e-6  # relative (shares for positions under one share): fills and positions agree to rounding


def _resolve(broker: Broker, ledger: Ledger, inputs: CycleInputs, report: CycleReport, dry_run: bool) -> None:
    """Step 1: settle every intent whose state at the broker may have moved (earlier sessions' too).
    A dry run copies only what the broker shows (an order found, its fills); it never marks an
    intent ``not_sent`` for want of finding it: a trade running beside it (a dry run does not
    take the trade lock) may be sending that very order."""
    for intent in ledger.intents(inputs.strategy):
        if intent.status in FINAL_STATUSES:
            continue
        if intent.status == "planned":  # a child never sent: nothing to look up; withdrawn once its session is over
            if intent.session < str(inputs.session) and not dry_run:
                ledger.update_intent(intent.client_order_id, "withdrawn", reason="its session ended before it was sent")
            continue
        found = broker.order_by_client_id(intent.client_order_id)
        if found is None:
            if intent.status in UNRESOLVED:
                if not dry_run:
                    ledger.update_intent(intent.client_order_id, "not_sent", reason="not found at the broker")
                report.resolved.append({"client_order_id": intent.client_order_id, "outcome": "not_sent"})
            continue
        apply_answer(ledger, found, None if found.status in FINAL_STATUSES else
               ("adopted" if intent.status in UNRESOLVED else intent.status))
        if intent.status in UNRESOLVED:
            report.resolved.append({"client_order_id": intent.client_order_id, "outcome": "adopted"})


def _record_delistings(broker: Broker, ledger: Ledger, strategy: str, report: CycleReport, dry_run: bool) -> None:
    """Positions the broker closed because their prices ended (the simulated broker reports them;
    at a real broker a vanished position is a reconciliation mismatch for a person to look at):
    each goes into the ledger once, as a ``delisted`` intent filled at the last close, so the
    ledger's positions keep matching the broker's. A dry run records nothing."""
    closed = getattr(broker, "delistings", None)
    for delisting in closed() if closed is not None else []:
        cid = client_order_id(strategy, delisting.session, delisting.symbol, "delisted")
        quantity = abs(delisting.quantity)
        intent = Intent(cid, strategy, str(delisting.session), delisting.symbol,
                        "sell" if delisting.quantity > 0 else "buy", quantity, delisting.price, "delisted",
                        filled_quantity=quantity, filled_avg_price=delisting.price,
                        reason=f"prices end: closed at the last close {delisting.price:g}, cash {delisting.cash_flow:+,.2f}")
        if not dry_run and ledger.record_intent(intent):
            report.delisted.append({"symbol": delisting.symbol, "session": str(delisting.session),
                                    "quantity": delisting.quantity, "price": delisting.price,
                                    "cash_flow": delisting.cash_flow})


def reconcile_positions(ledger: Ledger, strategy: str, positions: dict[str, float]) -> list[dict]:
    """Symbols whose broker position differs from the signed sum of the strategy's recorded fills
    beyond `POSITION_TOLERANCE` (a trade made outside Spartan, a lost fill, a second strategy on
    the account). The broker stays the source of truth; a mismatch halts the strategy."""
    from_fills: dict[str, float] = {}
    for intent in ledger.intents(strategy):
        signed = intent.filled_quantity if intent.side == "buy" else -intent.filled_quantity
        from_fills[intent.symbol] = from_fills.get(intent.symbol, 0.0) + signed
    out = []
    for symbol in sorted(set(from_fills) | set(positions)):
        broker, ours = positions.get(symbol, 0.0), from_fills.get(symbol, 0.0)
        if abs(broker - ours) > POSITION_TOLERANCE * max(1.0, abs(broker), abs(ours)):
            out.append({"symbol": symbol, "broker": broker, "ledger": ours})
    return out


def _loss_limits(ledger: Ledger, inputs: CycleInputs, equity: float, report: CycleReport, write: bool) -> KillSwitch:
    """Step 3: record today's equity and tighten the kill switch on a loss beyond a limit.

    The drawdown is measured from the peak since the last explicit resume, so that a resumed
    strategy is not halted again at once by the same old peak. A dry run records nothing.
    """
    state, why = ledger.kill_switch(inputs.strategy)
    history = [(s, e) for s, e, _ in ledger.equity_history(inputs.strategy, with_times=True) if s < str(inputs.session)]
    resumed = ledger.last_resume(inputs.strategy)
    since = [e for s, e, at in ledger.equity_history(inputs.strategy, with_times=True)
             if s < str(inputs.session) and (resumed is None or at >= resumed)]
    previous = history[-1][1] if history else equity
    peak = max(since + [equity])
    report.daily_pnl, report.drawdown = equity / previous - 1.0, 1.0 - equity / peak
    if not write:
        report.kill_switch, report.kill_switch_reason = state.value, why
        return state
    ledger.record_equity(inputs.strategy, str(inputs.session), equity, report.cash)
    tightened, reason = next_state(state, report.daily_pnl, report.drawdown, inputs.limits)
    if reason:
        ledger.set_kill_switch(inputs.strategy, tightened, reason)
        state, why = tightened, reason
    report.kill_switch, report.kill_switch_reason = state.value, why
    return state


def _proposed_orders(inputs: CycleInputs, equity: float, positions: dict[str, float],
                     pending: dict[str, float]) -> list[Order]:
    """Step 4: shares to trade so that positions plus today's open orders reach the targets."""
    if inputs.targets is None:
        return []
    symbols = sorted(set(inputs.targets.index[inputs.targets != 0]) | {s for s, q in positions.items() if q})
    orders = []
    for symbol in symbols:
        price = float(inputs.prices.get(symbol, float("nan")))
        target = float(inputs.targets.get(symbol, 0.0))
        if abs(target) * equity < inputs.min_trade_value:
            target = 0.0  # dust from the optimizer: an exit, not a residual position
        if not price > 0:
            orders.append(Order(symbol, Side.BUY if target > 0 else Side.SELL, quantity=float("nan")))  # refused, with reason
            continue
        wanted = target * equity / price
        delta = wanted - positions.get(symbol, 0.0) - pending.get(symbol, 0.0)
        if abs(delta) * price < inputs.min_trade_value:
            continue
        if target == 0 and positions.get(symbol, 0.0) > 0:
            delta = -(positions[symbol] + pending.get(symbol, 0.0))  # an exit sells exactly what is held
        orders.append(Order(symbol, Side.BUY if delta > 0 else Side.SELL, quantity=abs(delta)))
    return orders


def run_cycle(broker: Broker, ledger: Ledger, inputs: CycleInputs, *, dry_run: bool = False,
              notes: dict | None = None, sleep: Callable[[float], None] = time.sleep) -> CycleReport:
    """Run one cycle for ``inputs.session`` (see the module docstring); return its report.

    ``notes`` (JSON-able) are recorded with the cycle's finish, beside what the cycle did.
    ``sleep`` waits for a child's bars when a schedule is worked at a broker that sends orders at
    once (Alpaca): the cycle then lasts until the schedule's window ends.
    """
    report = CycleReport(inputs.strategy, str(inputs.session))
    report.kill_switch_before = ledger.kill_switch(inputs.strategy)[0].value
    report.cycle_id = ledger.start_cycle(inputs.strategy, str(inputs.session), broker.name, dry_run=dry_run)
    rebalancing = False  # whether the decision's targets were applied in full (ACTIVE, not a dry run)
    try:
        rebalancing = _steps(broker, ledger, inputs, report, dry_run, sleep)
        return report
    except BaseException as error:
        report.status = f"failed: {type(error).__name__}: {error}"
        raise
    finally:
        ledger.finish_cycle(report.cycle_id, report.status, {
            "sent": len(report.sent), "adopted": len(report.adopted), "rejected": len(report.rejected),
            "cancelled": len(report.cancelled), "kill_switch": report.kill_switch, "equity": report.equity,
            "decision": None if inputs.decision is None else str(inputs.decision), "dry_run": dry_run,
            "rebalance": rebalancing and report.status in ("traded", "nothing_to_do"),
            "weights": _book_weights(report.positions, inputs.prices, report.equity),
            "execution": None if inputs.execution is None else inputs.execution.model_dump(),
            "cycle": dataclasses.asdict(report), "price_time": inputs.price_time.isoformat(),
            "prices": {str(s): float(p) for s, p in inputs.prices.items()},
            "targets": None if inputs.targets is None else {str(s): float(w) for s, w in inputs.targets.items()},
            **(notes or {})})


def _trades_around_the_clock(inputs: CycleInputs) -> bool:
    """Whether every symbol the cycle may trade is a crypto pair (24/7: no market hours to wait for)."""
    symbols = {*inputs.prices.index, *(inputs.targets.index if inputs.targets is not None else ())}
    return bool(symbols) and all(asset_class(s) == "crypto" for s in symbols)


def _steps(broker: Broker, ledger: Ledger, inputs: CycleInputs, report: CycleReport, dry_run: bool,
           sleep: Callable[[float], None]) -> bool:
    """Steps 1 to 5 (see the module docstring), filling ``report``; return whether the decision's
    targets were to be applied in full (ACTIVE, not a dry run; the record keeps it for a cycle
    that traded or had nothing to do)."""
    _resolve(broker, ledger, inputs, report, dry_run)
    _record_delistings(broker, ledger, inputs.strategy, report, dry_run)
    clock = broker.clock()
    account = broker.account()
    positions = {s: p.quantity for s, p in broker.positions().items()}
    today = ledger.intents(inputs.strategy, str(inputs.session))
    ours = {i.client_order_id for i in today}
    pending: dict[str, float] = {}
    open_orders = []
    for order in broker.open_orders():
        if order.client_order_id in ours:
            open_orders.append(order)
            left = order.quantity - order.filled_quantity
            pending[order.symbol] = pending.get(order.symbol, 0.0) + (left if order.side == "buy" else -left)
        else:
            cancel_order(broker, ledger, order, report, dry_run)  # not this session's: never left to fill unseen
    report.equity, report.cash, report.positions = account.equity, account.cash, positions
    report.mismatches = reconcile_positions(ledger, inputs.strategy, positions)
    if report.mismatches and not dry_run:
        ledger.set_kill_switch(inputs.strategy, KillSwitch.HALTED, "reconciliation mismatch: " + "; ".join(
            f"{m['symbol']} broker {m['broker']:g} vs ledger fills {m['ledger']:g}" for m in report.mismatches))
    state = _loss_limits(ledger, inputs, account.equity, report, write=not dry_run)
    rebalancing = inputs.targets is not None and state is KillSwitch.ACTIVE and not dry_run
    if state is KillSwitch.HALTED:
        for order in open_orders:  # only cancels are allowed: nothing of this session is left to fill
            cancel_order(broker, ledger, order, report, dry_run)
        if not dry_run:
            cancel_unsent(ledger, inputs, f"kill switch HALTED ({report.kill_switch_reason})")
        report.status = "halted"
        return rebalancing
    if not clock.is_open and not _trades_around_the_clock(inputs):  # the clock is the stock market's
        report.status = "market_closed"
        return rebalancing
    if account.trading_blocked:
        report.status = "halted"
        report.kill_switch_reason = "the broker reports trading_blocked"
        return rebalancing
    schedules = ledger.schedules(inputs.strategy, str(inputs.session))
    to_come = unsent_quantity(schedules, today)  # children of today's schedules not at the broker yet
    planned = {s: pending.get(s, 0.0) + to_come.get(s, 0.0) for s in {*pending, *to_come}}
    proposed = _proposed_orders(inputs, account.equity, positions, planned)
    prices = {s: ReferencePrice(float(p), inputs.price_time) for s, p in inputs.prices.items() if p > 0}
    adv = {} if inputs.adv is None else {s: float(v) for s, v in inputs.adv.dropna().items()}
    # Checked against the book as it will be once this session's orders fill (an uncrashed run's
    # book grew with each order it sent, so a re-run decides the same), and counting only the
    # orders really sent today.
    at_broker = {s: positions.get(s, 0.0) + pending.get(s, 0.0) for s in {*positions, *pending}}
    book = {s: at_broker.get(s, 0.0) + to_come.get(s, 0.0) for s in {*at_broker, *to_come}}
    sent_today = sum(1 for i in today if i.status not in NOT_COUNTED)
    working = working_orders(open_orders, schedules)
    decision = check_orders(proposed, book, prices, inputs.limits, state, account.equity, inputs.price_time,
                            adv=adv, open_orders=len(working), orders_sent_today=sent_today)
    report.rejected += [{"symbol": r.order.symbol, "side": r.order.side.value, "reason": r.reason}
                        for r in decision.rejected]
    report.clamped += [{"symbol": c.order.symbol, "quantity": c.order.quantity, "reason": c.reason}
                       for c in decision.clamped]
    if dry_run:
        report.sent = [{"symbol": o.symbol, "side": o.side.value, "quantity": o.quantity, "dry_run": True}
                       for o in decision.to_send]
        report.status = "dry_run"
        return rebalancing
    worked, live = is_worked(inputs), not getattr(broker, "works_schedules", False)
    if worked:  # parents become schedules, recorded whole before any child is sent
        record_schedules(ledger, inputs, list(decision.to_send), report, now=clock.now if live else None)
    if worked or schedules:  # children go one by one, each checked on its own (a re-run resumes them)
        checks = {"state": state, "equity": account.equity, "book": at_broker, "adv": adv, "working": working,
                  "sent_today": sent_today}
        if live:
            work_live(broker, ledger, inputs, report, sleep=sleep, **checks)
        else:
            send_children(broker, ledger, inputs, report, **checks)
    if not worked:
        for order in decision.to_send:
            cid = client_order_id(inputs.strategy, inputs.session, order.symbol, order.side.value)
            send_order(broker, ledger, inputs.strategy, str(inputs.session), order,
                       float(inputs.prices[order.symbol]), report, cid=cid)
    if report.status == "running":  # not halted while working a schedule
        report.status = "traded" if report.sent or report.adopted else "nothing_to_do"
    return rebalancing


def _book_weights(positions: dict[str, float], prices: pd.Series, equity: float | None) -> dict[str, float]:
    """The reconciled book as fractions of equity, valued at the reference prices (for tracking)."""
    if not equity:
        return {}
    return {s: q * float(prices[s]) / equity for s, q in positions.items() if s in prices.index and q}


