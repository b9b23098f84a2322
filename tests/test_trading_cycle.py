"""One trading cycle on the simulated broker: idempotent re-runs, intents before orders,
unknown outcomes resolved, the kill switch, loss limits."""

from __future__ import annotations

import datetime as dt
import os
import sys

import numpy as np
import pandas as pd
import pytest

from research_lib._kernel_guard import PARENT_PID_ENV
from research_lib.broker import SimBroker, UnknownOutcome
from research_lib.risk import KillSwitch, RiskLimits
from research_lib.trading import CommandGone, CycleInputs, Intent, Ledger, client_order_id, command_gone, run_cycle
from tests.conftest import make_prices

LIMITS = RiskLimits(max_weight=0.5, max_gross_exposure=1.02, max_net_exposure=1.02, max_order_notional=600_000,
                    max_adv_fraction=0.1, fat_finger_band=0.05, max_price_age_seconds=900, max_open_orders=50,
                    max_daily_orders=100, daily_loss_limit=0.05, drawdown_stop=0.25)
TARGETS = pd.Series({"AAA": 0.3, "BBB": 0.3, "CCC": 0.3})


@pytest.fixture()
def market(tmp_path):
    rng = np.random.default_rng(0)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(30, 3)), axis=0))
    prices = make_prices({s: closes[:, i] for i, s in enumerate(["AAA", "BBB", "CCC"])})
    db = tmp_path / "state.sqlite"
    return prices, SimBroker(db, prices, cost_bps=10.0), Ledger(db)


def inputs_at(prices, session, targets=TARGETS, strategy="trend") -> CycleInputs:
    day = pd.Timestamp(session)
    close = prices["close"].loc[day]
    return CycleInputs(strategy, day.date(), targets, close, dt.datetime.combine(day.date(), dt.time(16)).astimezone(),
                       LIMITS, adv=pd.Series(1e9, index=close.index))


def sessions(prices):
    return prices.index


def test_client_order_ids_are_deterministic_short_and_distinct():
    day = dt.date(2024, 3, 15)
    assert client_order_id("trend", day, "AAPL", "buy") == "trend-20240315-AAPL-b"
    long_a = client_order_id("a" * 60, day, "X" * 30, "sell")
    long_b = client_order_id("a" * 59 + "b", day, "X" * 30, "sell")
    assert len(long_a) <= 48 and long_a != long_b and long_a == client_order_id("a" * 60, day, "X" * 30, "sell")


def test_a_cycle_sends_the_orders_once_and_a_rerun_of_the_session_sends_nothing(market):
    prices, sim, ledger = market
    day = sessions(prices)[0]
    report = run_cycle(sim, ledger, inputs_at(prices, day))
    assert report.status == "traded" and {o["symbol"] for o in report.sent} == {"AAA", "BBB", "CCC"}
    assert [i.status for i in ledger.intents("trend", str(day.date()))] == ["sent"] * 3
    again = run_cycle(sim, ledger, inputs_at(prices, day))
    assert again.sent == [] and again.status == "nothing_to_do"
    assert len(sim.orders()) == 3, "no duplicate orders"
    sim.step()  # the orders fill at the next close
    after = run_cycle(sim, ledger, inputs_at(prices, sessions(prices)[1]))
    assert {s: round(q * prices["close"].loc[sessions(prices)[1], s] / after.equity, 2)
            for s, q in after.positions.items()} == {"AAA": 0.3, "BBB": 0.3, "CCC": 0.3}
    assert {i.status for i in ledger.intents("trend", str(day.date()))} == {"filled"}


def test_an_intent_written_but_never_sent_is_sent_once_by_the_next_run(market):
    prices, sim, ledger = market
    day = sessions(prices)[0]
    cid = client_order_id("trend", day.date(), "AAA", "buy")
    ledger.record_intent(Intent(cid, "trend", str(day.date()), "AAA", "buy", 10.0, 100.0, "intent"))  # then a crash
    report = run_cycle(sim, ledger, inputs_at(prices, day))
    assert {"client_order_id": cid, "outcome": "not_sent"} in report.resolved
    assert [o.client_order_id for o in sim.orders()].count(cid) == 1
    assert ledger.intent(cid).status == "sent"


def test_an_unknown_outcome_is_looked_up_and_adopted_never_resent(market):
    prices, sim, ledger = market
    day = sessions(prices)[0]
    sim.fail_next(UnknownOutcome, call="submit_order")  # the broker stores the order, the answer is lost
    report = run_cycle(sim, ledger, inputs_at(prices, day))
    assert len(report.adopted) == 1 and len(report.sent) == 2
    again = run_cycle(sim, ledger, inputs_at(prices, day))
    assert again.sent == [] and len(sim.orders()) == 3


def test_halted_sends_nothing_and_open_orders_of_other_sessions_are_cancelled(market):
    prices, sim, ledger = market
    first, second = sessions(prices)[:2]
    sim.submit_order("AAA", "buy", 5.0, "manual-order-1")  # not the strategy's: cancelled at the next cycle
    ledger.set_kill_switch("trend", KillSwitch.HALTED, "spartan halt: operator")
    report = run_cycle(sim, ledger, inputs_at(prices, first))
    assert report.status == "halted" and report.sent == [] and report.cancelled == ["manual-order-1"]
    assert sim.open_orders() == []
    ledger.set_kill_switch("trend", KillSwitch.ACTIVE, "manual resume: checked")
    assert run_cycle(sim, ledger, inputs_at(prices, second)).status == "traded"


def test_a_daily_loss_beyond_the_limit_moves_to_reducing(market):
    prices, sim, ledger = market
    day = sessions(prices)[3]
    ledger.record_equity("trend", str(sessions(prices)[2].date()), 1_100_000.0, 1_100_000.0)  # yesterday: 10 % more
    report = run_cycle(sim, ledger, inputs_at(prices, day))
    assert report.kill_switch == "reducing" and report.kill_switch_reason.startswith("ACTIVE -> REDUCING")
    assert report.sent == [] and {r["reason"].split(":")[0] for r in report.rejected} == {"kill_switch"}
    assert ledger.kill_switch("trend")[0] is KillSwitch.REDUCING


def test_a_dry_run_reconciles_and_reports_but_sends_nothing(market):
    prices, sim, ledger = market
    report = run_cycle(sim, ledger, inputs_at(prices, sessions(prices)[0]), dry_run=True)
    assert report.status == "dry_run" and len(report.sent) == 3 and all(o["dry_run"] for o in report.sent)
    assert sim.orders() == [] and ledger.intents("trend") == []


def test_strategy_names_that_differ_only_in_punctuation_get_distinct_ids():
    day = dt.date(2024, 1, 2)
    assert client_order_id("mom-1", day, "AAA", "buy") != client_order_id("mom_1", day, "AAA", "buy")


def test_a_dry_run_cancels_nothing_and_records_no_equity(market):
    prices, sim, ledger = market
    first, second = sessions(prices)[:2]
    run_cycle(sim, ledger, inputs_at(prices, first))  # open orders of the first session
    equity_before = ledger.equity_history("trend")
    report = run_cycle(sim, ledger, inputs_at(prices, second), dry_run=True)
    assert report.cancelled == [] and len(report.would_cancel) == 3
    assert all(o.is_open for o in sim.orders()) and ledger.equity_history("trend") == equity_before


def test_after_a_drawdown_halt_and_a_resume_the_old_peak_does_not_halt_again(market):
    prices, sim, ledger = market
    day0, day1, day2 = sessions(prices)[:3]
    ledger.record_equity("trend", "2019-12-30", 2_000_000.0, 2_000_000.0)  # a peak far above today's equity
    assert run_cycle(sim, ledger, inputs_at(prices, day0)).status == "halted"
    assert ledger.kill_switch("trend")[0] is KillSwitch.HALTED
    ledger.set_kill_switch("trend", KillSwitch.ACTIVE, "reviewed the loss; trading on")
    report = run_cycle(sim, ledger, inputs_at(prices, day1))
    assert report.kill_switch == "active" and report.status == "traded", "the drawdown counts from the resume"


def test_a_halt_during_the_sending_stops_the_remaining_orders(market):
    prices, sim, ledger = market
    day0 = sessions(prices)[0]

    class HaltAfterFirstOrder:
        """The real sim; after its first accepted order an operator runs `spartan halt`."""

        def __getattr__(self, name):
            return getattr(sim, name)

        def submit_order(self, *args, **kwargs):
            placed = sim.submit_order(*args, **kwargs)
            ledger.set_kill_switch("trend", KillSwitch.HALTED, "operator halt mid-cycle")
            return placed

    report = run_cycle(HaltAfterFirstOrder(), ledger, inputs_at(prices, day0))
    assert len(report.sent) == 1 and len(sim.orders()) == 1
    assert sum("HALTED" in r["reason"] for r in report.rejected) == 2


# ---------------------------------------------------------------- the command that started a kernel is gone


class _Kernel:
    """Stands in for ``ipykernel.kernelapp`` in a process that is a running notebook kernel."""

    class IPKernelApp:
        @staticmethod
        def initialized() -> bool:
            return True


KERNEL_CASES = [  # (in a notebook kernel, the starter's state, whether the cycle may send)
    (True, "our parent", True), (True, "alive, not our parent", True), (True, "ended", False), (True, "zombie", False),
    (True, "not a pid", True), (True, "unset", True),
    (False, "ended", True), (False, "zombie", True), (False, "unset", True), (False, "our parent", True),
]


@pytest.mark.parametrize("in_kernel, starter, may_send", KERNEL_CASES)
def test_a_kernel_whose_command_is_gone_sends_nothing_and_other_processes_are_never_stopped(
        market, process_states, monkeypatch, in_kernel, starter, may_send):
    if starter not in process_states and starter not in ("not a pid", "unset"):
        pytest.skip(f"no {starter} process on this platform")
    prices, sim, ledger = market
    sim.submit_order("AAA", "buy", 5.0, "manual-order-1")  # cancelled by a cycle that may act
    if in_kernel:
        monkeypatch.setitem(sys.modules, "ipykernel.kernelapp", _Kernel)
    else:
        monkeypatch.delitem(sys.modules, "ipykernel.kernelapp", raising=False)
    if starter == "unset":
        monkeypatch.delenv(PARENT_PID_ENV, raising=False)
    else:
        monkeypatch.setenv(PARENT_PID_ENV, "pid-1" if starter == "not a pid" else str(process_states[starter]))
    assert (command_gone() is None) is may_send
    day = sessions(prices)[0]
    if may_send:
        assert run_cycle(sim, ledger, inputs_at(prices, day)).status == "traded"
        assert len(sim.orders()) == 4
        return
    gone = rf"the process that started this notebook kernel \(pid {process_states[starter]}\) has ended; nothing more is sent"
    with pytest.raises(CommandGone, match=gone):
        run_cycle(sim, ledger, inputs_at(prices, day))
    assert [(o.client_order_id, o.status) for o in sim.orders()] == [("manual-order-1", "new")], "nothing cancelled"
    assert ledger.intents("trend") == []
    [cycle] = ledger.cycles("trend")
    assert cycle["status"].startswith("failed: CommandGone") and cycle["finished_at"]


def test_a_command_killed_mid_rebalance_stops_the_remaining_orders(market, process_states, monkeypatch):
    prices, sim, ledger = market
    monkeypatch.setitem(sys.modules, "ipykernel.kernelapp", _Kernel)
    monkeypatch.setenv(PARENT_PID_ENV, str(os.getppid()))

    class KilledAfterFirstOrder:
        """The real sim; the command is killed as its first order is accepted."""

        def __getattr__(self, name):
            return getattr(sim, name)

        def submit_order(self, *args, **kwargs):
            placed = sim.submit_order(*args, **kwargs)
            os.environ[PARENT_PID_ENV] = str(process_states["ended"])
            return placed

    with pytest.raises(CommandGone):
        run_cycle(KilledAfterFirstOrder(), ledger, inputs_at(prices, sessions(prices)[0]))
    assert len(sim.orders()) == 1 and [i.status for i in ledger.intents("trend")] == ["sent"]


def test_the_next_cycle_marks_a_killed_cycle_interrupted_and_leaves_the_others(market):
    prices, sim, ledger = market
    first, second = (str(d.date()) for d in sessions(prices)[:2])
    killed = ledger.start_cycle("trend", first, "sim")  # then SIGKILL: never finished
    other = ledger.start_cycle("other", first, "sim")  # another strategy's, running now
    done = ledger.start_cycle("trend", first, "sim")
    ledger.finish_cycle(done, "traded", {"sent": 3})
    by_id = {c["id"]: c for c in ledger.cycles("trend")}
    assert by_id[killed]["status"] == "interrupted", "starting a cycle closes the strategy's unfinished ones"
    assert by_id[killed]["finished_at"] is None and "found unfinished at" in by_id[killed]["summary"]["interrupted"]
    assert by_id[done]["status"] == "traded" and by_id[done]["summary"] == {"sent": 3}
    assert ledger.cycles("other")[0]["status"] == "running", "another strategy's cycle is not this one's"
    assert ledger.cycles("other")[0]["id"] == other
    run_cycle(sim, ledger, inputs_at(prices, second))
    assert [c["status"] for c in ledger.cycles("trend")] == ["interrupted", "traded", "traded"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the command's state from /proc")
@pytest.mark.parametrize("then", ["continued", "killed"])
def test_while_the_command_is_stopped_the_cycle_waits_before_each_order(market, monkeypatch, then):
    """Ctrl-Z or SIGSTOP of `spartan trade` does not stop its kernel (a session of its own):
    the cycle waits before its next order until the command continues (then it completes,
    sending nothing twice) or ends (then `CommandGone`)."""
    import signal
    import subprocess
    import threading
    import time

    prices, sim, ledger = market
    command = subprocess.Popen(["sleep", "60"])
    monkeypatch.setitem(sys.modules, "ipykernel.kernelapp", _Kernel)
    monkeypatch.setenv(PARENT_PID_ENV, str(command.pid))

    class StoppedAfterFirstOrder:
        """The real sim; the command is stopped as its first order is accepted."""

        def __getattr__(self, name):
            return getattr(sim, name)

        def submit_order(self, *args, **kwargs):
            placed = sim.submit_order(*args, **kwargs)
            if len(sim.orders()) == 1:
                os.kill(command.pid, signal.SIGSTOP)
                time.sleep(0.05)  # the stop takes effect
            return placed

    outcome = {}

    def cycle():
        try:
            outcome["report"] = run_cycle(StoppedAfterFirstOrder(), ledger, inputs_at(prices, sessions(prices)[0]))
        except CommandGone as gone:
            outcome["gone"] = gone

    worker = threading.Thread(target=cycle)
    try:
        worker.start()
        time.sleep(1.0)
        assert worker.is_alive() and len(sim.orders()) == 1, "nothing more is sent while the command is stopped"
        if then == "continued":
            os.kill(command.pid, signal.SIGCONT)
        else:
            command.kill()
            command.wait()
        worker.join(5)
        assert not worker.is_alive()
    finally:
        command.kill()
        command.wait()
    if then == "continued":
        assert outcome["report"].status == "traded" and len(sim.orders()) == len(TARGETS)
        assert len({o.client_order_id for o in sim.orders()}) == len(TARGETS), "no order twice"
    else:
        assert "has ended; nothing more is sent" in str(outcome["gone"]) and len(sim.orders()) == 1
