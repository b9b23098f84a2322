"""Sending and cancelling: an intent is written before its order is sent, and every answer (or its
absence) is recorded (TRADING_SAFETY.md, "Restart and reconciliation").

- `client_order_id`: the deterministic id of a session's order, the same on every re-run.
- `send_order`: record the intent, then send; a duplicate id or an unknown outcome is looked up
  and adopted, a refusal recorded. A child order of an execution schedule is sent the same way,
  with its limit price and bars.
- `cancel_order`: cancel, then record what the broker says.
- `command_gone` / `CommandGone`: in a notebook kernel whose starting command has ended, nothing
  more is sent or cancelled; while that command is stopped, the cycle waits before each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time

from research_lib._kernel_guard import command_pid, process_state
from research_lib.broker import (Broker, BrokerError, BrokerOrder, DuplicateClientOrderId, InsufficientBuyingPower,
                                 OrderRejected, UnknownOutcome, check_client_order_id)
from research_lib.errors import SpartanError
from research_lib.risk import KillSwitch, Order
from research_lib.trading._inputs import CycleReport
from research_lib.trading._ledger import FINAL_STATUSES, Intent, Ledger

COMMAND_POLL_S = 0.2  # while the command that started this kernel is stopped, look again this often
UNSENT = ("planned", "not_sent")  # an intent a cycle may send (again): a schedule's child, or one never sent


def client_order_id(strategy: str, session: dt.date, symbol: str, side: str) -> str:
    """``<strategy>-<yyyymmdd>-<symbol>-<b|s>``, at most 48 characters, the same on every re-run.

    Long strategy names or symbols are shortened with a hash suffix so that two different
    inputs never share an id.
    """
    def part(text: str, width: int) -> str:
        clean = re.sub(r"[^A-Za-z0-9._-]", "_", text)
        if len(clean) <= width:
            return clean
        return clean[: width - 7] + "~" + hashlib.sha256(text.encode()).hexdigest()[:6]

    return check_client_order_id(f"{part(strategy, 20)}-{session:%Y%m%d}-{part(symbol, 14)}-{side[0]}")


class CommandGone(SpartanError):
    """This notebook kernel's command has ended (killed, stopped): the cycle sends and cancels
    nothing more. What it recorded stays; the next cycle resolves it."""


def command_gone() -> str | None:
    """Why this process must send nothing more, or None.

    In a notebook kernel, the process that started it (``JPY_PARENT_PID``: `spartan trade`, or a
    Jupyter server) must still be there, this kernel's parent or not (a kernelspec may start the
    kernel through a wrapper); a zombie, exited but not yet reaped, is gone. Outside a kernel
    (the scheduler, a script, a test) there is no such process to outlive: always None.
    """
    starter = command_pid()
    if starter is None or process_state(starter) != "gone":
        return None
    return f"the process that started this notebook kernel (pid {starter}) has ended; nothing more is sent"


def _guard_command(poll_s: float = COMMAND_POLL_S) -> None:
    """Checked before every order and cancel: wait while the command that started this kernel
    is stopped (Ctrl-Z, SIGSTOP; the kernel runs in a session of its own and is not stopped with
    it), then raise `CommandGone` if it has ended."""
    starter = command_pid()
    while starter is not None and process_state(starter) == "stopped":
        time.sleep(poll_s)
    reason = command_gone()
    if reason:
        raise CommandGone(reason)


def apply_answer(ledger: Ledger, order: BrokerOrder, status: str | None = None) -> None:
    """Copy the broker's answer about ``order`` into its intent (with ``status`` instead of the broker's, if given)."""
    ledger.update_intent(order.client_order_id, status or order.status, broker_id=order.broker_id,
                         filled_quantity=order.filled_quantity, filled_avg_price=order.filled_avg_price)


def cancel_order(broker: Broker, ledger: Ledger, order: BrokerOrder, report: CycleReport, dry_run: bool) -> None:
    """Cancel an open order and record what the broker then says. A cancel can be asynchronous
    (Alpaca's pending_cancel, and a fill may still come): until the broker reports a final
    status the intent keeps its status, so the next cycle looks it up again. A cancel refused
    because the order closed meanwhile (filled, say) records its final state instead. A dry run
    only reports the order in ``would_cancel``."""
    if dry_run:
        report.would_cancel.append(order.client_order_id)
        return
    _guard_command()
    try:
        broker.cancel_order(order.broker_id)
    except OrderRejected:  # refused: it may have filled (or been cancelled) since it was read
        found = broker.order_by_client_id(order.client_order_id)
        if found is None or found.is_open:
            raise
        if (known := ledger.intent(order.client_order_id)) is not None and known.status not in FINAL_STATUSES:
            apply_answer(ledger, found)
        return
    report.cancelled.append(order.client_order_id)
    known = ledger.intent(order.client_order_id)
    if known is None or known.status in FINAL_STATUSES:
        return
    found = broker.order_by_client_id(order.client_order_id)
    if found is not None and found.status in FINAL_STATUSES:
        apply_answer(ledger, found)


def send_order(broker: Broker, ledger: Ledger, strategy: str, session: str, order: Order, decision_price: float,
               report: CycleReport, *, cid: str, worked: dict | None = None) -> bool:
    """Intent first, then the order; every answer (or its absence) is recorded. Return whether the
    order is at the broker now (sent or adopted).

    ``cid`` is the order's client_order_id; an intent already recorded under it is sent only while
    it is ``planned`` or ``not_sent`` (its state otherwise came from the broker in the cycle's first
    step). ``worked`` is a child order's ``limit_price``, ``bar`` and ``bars``.
    """
    side = order.side.value
    known = ledger.intent(cid)
    if known is not None and known.status not in UNSENT:
        return False
    _guard_command()
    state, why = ledger.kill_switch(strategy)
    if state is KillSwitch.HALTED:  # halted while this cycle was sending: nothing more goes out
        report.kill_switch, report.kill_switch_reason = state.value, why
        report.rejected.append({"symbol": order.symbol, "side": side, "reason": f"kill_switch: HALTED ({why})"})
        return False
    if known is None:
        ledger.record_intent(Intent(cid, strategy, session, order.symbol, side, order.quantity, decision_price, "intent"))
    else:
        ledger.update_intent(cid, "intent", quantity=order.quantity, decision_price=decision_price,
                             reason=None if known.status == "planned" else "re-sent after it was not found at the broker")
    try:
        placed = broker.submit_order(order.symbol, side, order.quantity, cid, **(worked or {}))
    except (DuplicateClientOrderId, UnknownOutcome) as error:
        found = broker.order_by_client_id(cid)
        if found is None:
            why = "duplicate id but not found" if isinstance(error, DuplicateClientOrderId) else "no answer and not found yet"
            ledger.update_intent(cid, "unknown", reason=f"{why}; resolved next cycle")
            return False
        apply_answer(ledger, found, "adopted" if found.is_open else None)
        report.adopted.append({"client_order_id": cid, "symbol": order.symbol})
        return True
    except (InsufficientBuyingPower, OrderRejected) as error:
        ledger.update_intent(cid, "rejected", reason=str(error))
        report.rejected.append({"symbol": order.symbol, "side": side, "reason": f"broker: {error}"})
        return False
    except BrokerError:
        ledger.update_intent(cid, "unknown", reason="broker error while sending; resolved next cycle")
        raise
    apply_answer(ledger, placed, "sent" if placed.is_open else None)
    if placed.quantity != order.quantity:  # the broker's rules rounded it (a crypto pair's step): record what it took
        ledger.update_intent(cid, ledger.intent(cid).status, quantity=placed.quantity,
                             reason=f"{order.quantity:.12g} asked, {placed.quantity:.12g} taken on the broker's increments")
    report.sent.append({"client_order_id": cid, "symbol": order.symbol, "side": side, "quantity": placed.quantity,
                        "decision_price": decision_price, **(worked or {})})
    return True
