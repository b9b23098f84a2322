"""Crash test of the trading cycle (TRADING_SAFETY.md, "Restart and reconciliation", point 6:
every step is safe to kill and re-run).

A child process runs one real `run_cycle` on the simulated broker and SIGKILLs itself: just
before or just after its N-th side-effecting call, a broker call (through `BrokerProxy`) or a
ledger write (through `LedgerProxy`), for every N of an uncrashed run; and, for a few seeded
random N, at the start of the N-th SQL statement it runs, which lands inside the calls (inside
a transaction of the sim or the ledger too). Nothing of the cycle is mocked: the proxies and
the statement hook only count and forward. The parent then re-runs the cycle for the same
session and checks that no order is duplicated at the broker, that the ledger agrees with the
broker, that a second re-run sends nothing, and that the orders and positions reached are
those of an uncrashed control run (a fresh state, the same inputs).

The children are forked from a multiprocessing fork server that has imported only this module
(not from pytest's process): a fresh process per trial in tens of milliseconds instead of a
second of imports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import sqlite3
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research_lib.broker import OPEN_STATUSES, Broker, SimBroker
from research_lib.config import ExecutionConfig
from research_lib.data import canonical_frame
from research_lib.risk import RiskLimits
from research_lib.trading import CycleInputs, Ledger, run_cycle

STRATEGY = "trend"
CHILD = re.compile(r"\.(\d{3})$")  # a child order of an execution schedule: <parent id>.<slice>
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
CHILD_TIMEOUT_SECONDS = 60
RANDOM_STATEMENT_KILLS = 5  # per scenario, on top of a kill before and after every call

LIMITS = RiskLimits(max_weight=0.5, max_gross_exposure=1.02, max_net_exposure=1.02, max_order_notional=600_000,
                    max_adv_fraction=0.1, fat_finger_band=0.05, max_price_age_seconds=900, max_open_orders=50,
                    max_daily_orders=100, daily_loss_limit=0.05, drawdown_stop=0.25)
# Limits that bind on the first session's orders: the last buy is clamped by the gross exposure,
# and the three orders use up the daily order cap.
TIGHT_LIMITS = RiskLimits(**{**LIMITS.model_dump(), "max_gross_exposure": 0.8, "max_net_exposure": 0.8,
                             "max_daily_orders": 3})
EQUAL = {"AAA": 0.3, "BBB": 0.3, "CCC": 0.3}
TILTED = {"AAA": 0.0, "BBB": 0.45, "CCC": 0.15, "DDD": 0.3}  # exit AAA, cut CCC, add to BBB, open DDD


@dataclass(frozen=True)
class Scenario:
    """The state before the crashed cycle, and that cycle's inputs.

    history : targets of the uncrashed cycles run first, one per session from the first, each
        followed by `SimBroker.step` (their orders fill); the crashed cycle runs at the next session.
    foreign : open orders submitted straight to the sim before the crashed cycle, as
        ``(client_order_id, symbol, side, quantity)``: not this strategy's, so cancelled by it.
    """

    targets: dict[str, float]
    history: tuple[dict[str, float], ...] = ()
    foreign: tuple[tuple[str, str, str, float], ...] = ()
    limits: RiskLimits = LIMITS
    execution: ExecutionConfig | None = None

    @property
    def session(self) -> int:
        return len(self.history)


SCENARIOS = {
    # a fresh account with a manual order left open: cancel it, then three buys
    "fresh": Scenario(EQUAL, foreign=(("manual-order-1", "AAA", "buy", 5.0),)),
    # the first session's orders have filled: resolve them, then two sells and two buys
    "rebalance": Scenario(TILTED, history=(EQUAL,)),
    # every symbol falls 10 % at this session's close: the kill switch moves to REDUCING and only
    # the sells go; another strategy's order is left open
    "loss": Scenario(EQUAL, history=(EQUAL, TILTED), foreign=(("other-20240104-DDD-b", "DDD", "buy", 10.0),)),
    # the pre-trade checks clamp and cap the first session's orders
    "limits_bind": Scenario(EQUAL, limits=TIGHT_LIMITS),
    # after the first session's fills, a sell and a buy worked by TWAP: each parent's schedule is
    # recorded whole, then two child limit orders each (09:45 to 10:45, a child every 30 minutes)
    "worked": Scenario({"AAA": 0.1, "BBB": 0.5, "CCC": 0.3}, history=(EQUAL,),
                       execution=ExecutionConfig(algorithm="twap", window_start_bar=3, window_end_bar=15)),
}
BROKER_CALLS = ("clock", "account", "positions", "open_orders", "submit_order", "order_by_client_id", "cancel_order")
LEDGER_WRITES = ("record_intent", "update_intent", "record_equity", "set_kill_switch", "start_cycle", "finish_cycle",
                 "record_schedule")


def market_prices() -> pd.DataFrame:
    """Thirty sessions of four symbols (seeded); every symbol falls 10 % at the third session's close.

    Built here rather than with ``tests.conftest.make_prices``: importing the conftest makes a
    scratch directory that only an ``atexit`` hook removes, which a SIGKILLed child never runs."""
    rng = np.random.default_rng(7)
    steps = rng.normal(0.0, 0.01, size=(30, len(SYMBOLS)))
    steps[2] = np.log(0.9)
    closes = 100.0 * np.exp(np.cumsum(steps, axis=0))
    return canonical_frame({"close": pd.DataFrame(closes, index=pd.bdate_range("2024-01-02", periods=30),
                                                  columns=SYMBOLS)})


def cycle_inputs(prices: pd.DataFrame, session: int, targets: dict[str, float], limits: RiskLimits) -> CycleInputs:
    """As ``tests/test_trading_cycle.py``: targets decided and prices observed at the session's close."""
    day = prices.index[session]
    close = prices["close"].loc[day]
    return CycleInputs(STRATEGY, day.date(), pd.Series(targets, dtype=float), close,
                       dt.datetime.combine(day.date(), dt.time(16)).astimezone(), limits,
                       adv=pd.Series(1e9, index=close.index))


def crash_inputs(prices: pd.DataFrame, scenario: Scenario) -> CycleInputs:
    inputs = cycle_inputs(prices, scenario.session, scenario.targets, scenario.limits)
    return dataclasses.replace(inputs, execution=scenario.execution)


def open_state(db: Path, prices: pd.DataFrame) -> tuple[SimBroker, Ledger]:
    return SimBroker(db, prices, cost_bps=10.0), Ledger(db)


def prepare(db: Path, prices: pd.DataFrame, scenario: Scenario) -> None:
    """Bring a fresh state file to the point where the scenario's cycle runs."""
    sim, ledger = open_state(db, prices)
    for session, targets in enumerate(scenario.history):
        assert run_cycle(sim, ledger, cycle_inputs(prices, session, targets, scenario.limits)).status == "traded"
        sim.step()
    for cid, symbol, side, quantity in scenario.foreign:
        sim.submit_order(symbol, side, quantity, cid)


# ------------------------------------------------------------------ the crashed child


class Tripwire:
    """Counts the side-effecting calls and the SQL statements, and SIGKILLs this process before or
    after the ``kill_at``-th call (``when`` "before" or "after") or at the start of the ``kill_at``-th
    statement (``when`` "statement"); never when ``when`` is None. What it saw goes to ``log`` first."""

    def __init__(self, when: str | None = None, kill_at: int = 0, log: Path | None = None):
        if when not in (None, "before", "after", "statement"):
            raise ValueError(f"when must be None, 'before', 'after' or 'statement' (got {when!r})")
        self.when, self.kill_at, self.log = when, kill_at, log
        self.calls: list[str] = []
        self.details: list[str | None] = []  # the client_order_id each call is about, if any
        self.statements = 0

    def call(self, name: str, method, *args, **kwargs):
        self.calls.append(name)
        self.details.append(_client_order_id(name, args))
        number = len(self.calls)
        if (self.when, self.kill_at) == ("before", number):
            self._die()
        try:
            return method(*args, **kwargs)
        finally:  # after a call that raised is after it too
            if (self.when, self.kill_at) == ("after", number):
                self._die()

    def statement(self, sql: str) -> None:
        """The trace callback of every SQLite connection of the process."""
        self.statements += 1
        if (self.when, self.kill_at) == ("statement", self.statements):
            self._die(sql)

    def _die(self, sql: str | None = None) -> None:
        self.log.write_text(json.dumps({"when": self.when, "calls": self.calls, "details": self.details,
                                        "statement": sql}))
        os.kill(os.getpid(), signal.SIGKILL)
        raise SystemExit("SIGKILL was not delivered")


def _client_order_id(name: str, args: tuple) -> str | None:
    if name == "submit_order":
        return args[3]
    if name == "record_intent":
        return args[0].client_order_id
    if name in ("update_intent", "order_by_client_id"):
        return args[0]
    return None


class BrokerProxy:
    """Forwards every `Broker` call to the wrapped broker through the tripwire."""

    def __init__(self, broker: Broker, wire: Tripwire):
        self._broker, self._wire = broker, wire
        self.name = broker.name

    def clock(self):
        return self._wire.call("clock", self._broker.clock)

    def account(self):
        return self._wire.call("account", self._broker.account)

    def positions(self):
        return self._wire.call("positions", self._broker.positions)

    def open_orders(self):
        return self._wire.call("open_orders", self._broker.open_orders)

    works_schedules = True  # the sim's

    def submit_order(self, symbol, side, quantity, client_order_id, **worked):
        return self._wire.call("submit_order", self._broker.submit_order, symbol, side, quantity, client_order_id,
                               **worked)

    def order_by_client_id(self, client_order_id):
        return self._wire.call("order_by_client_id", self._broker.order_by_client_id, client_order_id)

    def cancel_order(self, broker_id):
        return self._wire.call("cancel_order", self._broker.cancel_order, broker_id)


class LedgerProxy:
    """Forwards to the wrapped ledger: its writes (`LEDGER_WRITES`) through the tripwire, the rest
    (reads) straight."""

    def __init__(self, ledger: Ledger, wire: Tripwire):
        self._ledger, self._wire = ledger, wire

    def __getattr__(self, attr: str):
        method = getattr(self._ledger, attr)
        if attr in LEDGER_WRITES:
            return lambda *args, **kwargs: self._wire.call(attr, method, *args, **kwargs)
        return method


def run_wired_cycle(db: Path, prices: pd.DataFrame, scenario: Scenario, wire: Tripwire):
    sim, ledger = open_state(db, prices)
    return run_cycle(BrokerProxy(sim, wire), LedgerProxy(ledger, wire), crash_inputs(prices, scenario))


def crashed_child(db: str, name: str, when: str | None, kill_at: int, log: str) -> None:
    """The child process: the scenario's cycle on ``db`` (prepared), killed as the tripwire says.
    Every SQLite connection it opens reports its statements to the tripwire."""
    wire = Tripwire(when, kill_at, Path(log))
    connect = sqlite3.connect

    def traced_connect(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(wire.statement)
        return connection

    sqlite3.connect = traced_connect  # this process only
    try:
        report = run_wired_cycle(Path(db), market_prices(), SCENARIOS[name], wire)
    except BaseException:
        Path(log).write_text(json.dumps({"error": traceback.format_exc(), "calls": wire.calls}))
        raise
    Path(log).write_text(json.dumps({"finished": report.status, "calls": wire.calls,
                                     "statements": wire.statements}))


# ------------------------------------------------------------------ the parent: control, trials, checks


@dataclass
class Control:
    """An uncrashed run of a scenario's cycle (in a child, as the crashed ones) on a fresh state."""

    calls: list[str]
    statements: int
    orders: dict[str, tuple[str, str, float]]  # the strategy's orders of the session: cid -> (symbol, side, shares)
    intents: set[str]  # the session's intents
    positions: dict[str, float]  # after `SimBroker.step`
    cash: float


def run_control(fork_server, db: Path, prices: pd.DataFrame, name: str) -> Control:
    scenario = SCENARIOS[name]
    prepare(db, prices, scenario)
    exit_code, run = run_child(fork_server, db, name, None, 0)
    assert exit_code == 0 and run.get("finished") == "traded", run
    sim, ledger = open_state(db, prices)
    assert run_cycle(sim, ledger, crash_inputs(prices, scenario)).sent == []
    orders, intents = session_orders(sim, scenario, prices), session_intents(ledger, scenario, prices)
    sim.step()
    return Control(run["calls"], run["statements"], orders, intents,
                   {s: p.quantity for s, p in sim.positions().items()}, sim.account().cash)


def kill_points(control: Control, rng: random.Random) -> list[tuple[str, int]]:
    """Before and after every call of the uncrashed run, and at a few random SQL statements."""
    calls = range(1, len(control.calls) + 1)
    statements = rng.sample(range(1, control.statements + 1), RANDOM_STATEMENT_KILLS)
    return [(when, n) for n in calls for when in ("before", "after")] + [("statement", n) for n in sorted(statements)]


def ours(order) -> bool:
    return order.client_order_id.startswith(f"{STRATEGY}-")


def session_orders(sim: SimBroker, scenario: Scenario, prices: pd.DataFrame) -> dict[str, tuple[str, str, float]]:
    day = prices.index[scenario.session].date()
    return {o.client_order_id: (o.symbol, o.side, o.quantity) for o in sim.orders()
            if ours(o) and o.submitted_at.date() == day}


def session_intents(ledger: Ledger, scenario: Scenario, prices: pd.DataFrame) -> set[str]:
    return {i.client_order_id for i in ledger.intents(STRATEGY, str(prices.index[scenario.session].date()))}


def assert_no_duplicates(sim: SimBroker) -> None:
    orders = sim.orders()
    cids = [o.client_order_id for o in orders]
    assert len(cids) == len(set(cids)), f"a client_order_id is used twice at the broker: {cids}"
    keys = [(o.submitted_at.date(), o.symbol, o.side) for o in orders if ours(o) and not CHILD.search(o.client_order_id)]
    assert len(keys) == len(set(keys)), f"two orders for one (session, symbol, side): {sorted(keys)}"
    slices = [(o.submitted_at.date(), o.symbol, o.side, CHILD.search(o.client_order_id).group(1)) for o in orders
              if ours(o) and CHILD.search(o.client_order_id)]
    assert len(slices) == len(set(slices)), f"one slice of a schedule sent twice: {sorted(slices)}"


def assert_ledger_agrees(sim: SimBroker, ledger: Ledger) -> None:
    """Every order of the strategy at the broker is an intent with the same symbol, side, quantity
    and state (open <-> sent or adopted; final <-> the same status and fill); every intent the
    ledger has as sent or adopted is open at the broker; none is left unresolved."""
    at_broker = {o.client_order_id: o for o in sim.orders()}
    intents = {i.client_order_id: i for i in ledger.intents(STRATEGY)}
    for cid, order in at_broker.items():
        if not ours(order):
            continue
        intent = intents.get(cid)
        assert intent is not None, f"{cid} is at the broker ({order.status}) but not in the ledger"
        assert (intent.symbol, intent.side) == (order.symbol, order.side), (intent, order)
        assert intent.quantity == pytest.approx(order.quantity, abs=1e-9), \
            f"{cid}: {intent.quantity} shares in the ledger, {order.quantity} at the broker"
        if order.is_open:
            assert intent.status in ("sent", "adopted"), f"{cid} is open at the broker, {intent.status} in the ledger"
        else:
            assert intent.status == order.status, f"{cid} is {order.status} at the broker, {intent.status} in ledger"
            assert intent.filled_quantity == pytest.approx(order.filled_quantity, abs=1e-9), (intent, order)
            assert intent.filled_avg_price == order.filled_avg_price, (intent, order)
    for cid, intent in intents.items():
        assert intent.status not in ("intent", "unknown"), f"{cid} is left {intent.status!r} after a whole cycle"
        if intent.status in ("sent", "adopted"):
            status = at_broker[cid].status if cid in at_broker else "absent"
            assert status in OPEN_STATUSES, f"{cid} is {intent.status} in the ledger, {status} at the broker"
        if intent.status in ("not_sent", "rejected"):
            assert cid not in at_broker, f"{cid} is {intent.status} in the ledger but at the broker"


def check_rerun(db: Path, prices: pd.DataFrame, scenario: Scenario, control: Control, died: dict) -> None:
    """Re-run the killed session, then every check of the crash test."""
    sim, ledger = open_state(db, prices)
    inputs = crash_inputs(prices, scenario)
    rerun = run_cycle(sim, ledger, inputs)
    assert rerun.status in ("traded", "nothing_to_do"), rerun.status

    if died["when"] in ("before", "after"):
        done = len(died["calls"]) - (died["when"] == "before")  # the calls that took effect before the kill
        last, cid = (died["calls"][done - 1], died["details"][done - 1]) if done else (None, None)
        sent = [s["client_order_id"] for s in rerun.sent]
        if last == "submit_order" and cid in control.orders:
            # stored at the broker, its answer never recorded: looked up and adopted, not sent again
            assert {"client_order_id": cid, "outcome": "adopted"} in rerun.resolved, rerun.resolved
            assert cid not in sent, rerun.sent
        if last == "record_intent":
            # written, never sent: found missing at the broker, then sent by the re-run
            assert {"client_order_id": cid, "outcome": "not_sent"} in rerun.resolved, rerun.resolved
            assert cid in sent, f"{cid} was never sent: {rerun.sent}, rejected {rerun.rejected}"

    assert_no_duplicates(sim)
    assert [o.client_order_id for o in sim.open_orders() if not ours(o)] == [], "a foreign order was left open"
    assert_ledger_agrees(sim, ledger)

    again = run_cycle(sim, ledger, inputs)
    assert again.sent == [] and again.adopted == [], f"a second re-run still sends: {again.sent} {again.adopted}"
    orders = session_orders(sim, scenario, prices)
    assert set(orders) == set(control.orders), f"orders {sorted(orders)}, uncrashed {sorted(control.orders)}"
    for cid, (symbol, side, quantity) in orders.items():
        assert (symbol, side) == control.orders[cid][:2]
        assert quantity == pytest.approx(control.orders[cid][2], abs=1e-9), \
            f"{cid}: {quantity} shares, uncrashed {control.orders[cid][2]}"
    assert session_intents(ledger, scenario, prices) == control.intents

    sim.step()  # the session's orders fill; the next cycle (a dry run) resolves them in the ledger
    run_cycle(sim, ledger, cycle_inputs(prices, scenario.session + 1, scenario.targets, scenario.limits), dry_run=True)
    assert_ledger_agrees(sim, ledger)
    statuses = {o.status for o in sim.orders() if ours(o)}  # a child whose limit bound expires, as in the control run
    assert statuses == {"filled"} or (scenario.execution and statuses <= {"filled", "expired"}), statuses
    positions = {s: p.quantity for s, p in sim.positions().items()}
    assert set(positions) == set(control.positions), (positions, control.positions)
    for symbol, quantity in positions.items():
        assert quantity == pytest.approx(control.positions[symbol], abs=1e-9), \
            f"{symbol}: {quantity} shares after the re-run, {control.positions[symbol]} uncrashed"
    assert sim.account().cash == pytest.approx(control.cash, abs=1e-6)


@pytest.fixture(scope="module")
def fork_server():
    """Children forked from a server process that has imported only this module."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def run_child(fork_server, db: Path, name: str, when: str | None, kill_at: int) -> tuple[int, dict]:
    """Run a child to its end; its exit code and what it wrote (before dying, if it died)."""
    log = db.with_suffix(".json")
    child = fork_server.Process(target=crashed_child, args=(str(db), name, when, kill_at, str(log)))
    child.start()
    child.join(CHILD_TIMEOUT_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()
    return child.exitcode, json.loads(log.read_text()) if log.exists() else {}


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return market_prices()


@pytest.fixture(scope="module")
def state_home(tmp_path_factory):
    """Where the state files go: in memory (/dev/shm) when there is one. A SIGKILL loses nothing
    that the ledger's fsyncs would keep, and on a busy disk those fsyncs take most of the time."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path_factory.mktemp("crash")
        return
    home = Path(tempfile.mkdtemp(prefix="spartan-crash-test-", dir=shm))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def controls(fork_server, prices, state_home) -> dict[str, Control]:
    return {name: run_control(fork_server, state_home / f"control-{name}.sqlite", prices, name) for name in SCENARIOS}


def test_the_proxies_see_every_broker_call_and_every_ledger_write():
    assert {m for m in vars(Broker) if not m.startswith("_")} == set(BROKER_CALLS)
    assert {m for m, v in vars(BrokerProxy).items() if not m.startswith("_") and callable(v)} == set(BROKER_CALLS)
    writes = {m for m, v in vars(Ledger).items()
              if not m.startswith("_") and callable(v) and "self._write()" in inspect.getsource(v)}
    assert writes == set(LEDGER_WRITES), "each Ledger method that writes must go through the tripwire"


def test_the_trials_cover_every_step_of_the_cycle(controls):
    """At least 50 kill points in all, killing before and after each broker call and each ledger
    write; the scenarios go through every step of the cycle."""
    points = {name: kill_points(control, random.Random(name)) for name, control in controls.items()}
    assert sum(map(len, points.values())) >= 50
    killed_at = {(when, controls[name].calls[n - 1]) for name, kills in points.items() for when, n in kills
                 if when != "statement"}
    assert killed_at == {(when, call) for when in ("before", "after") for call in BROKER_CALLS + LEDGER_WRITES}
    assert controls["fresh"].calls.count("cancel_order") == controls["loss"].calls.count("cancel_order") == 1
    assert controls["rebalance"].calls.count("order_by_client_id") == 3  # the first session's orders resolved
    assert "set_kill_switch" in controls["loss"].calls
    assert all(control.calls.count("submit_order") >= 2 for control in controls.values())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_cycle_killed_anywhere_reruns_without_duplicates_to_the_uncrashed_result(name, prices, controls, fork_server,
                                                                                   state_home):
    scenario, control = SCENARIOS[name], controls[name]
    home = state_home / name
    home.mkdir()
    template = home / "template.sqlite"
    prepare(template, prices, scenario)
    assert not Path(f"{template}-wal").exists(), "the state file is not checkpointed: a copy would lose writes"
    points = kill_points(control, random.Random(name))
    failures = []
    for when, kill_at in points:
        db = home / f"{when}-{kill_at}.sqlite"
        shutil.copyfile(template, db)
        exit_code, died = run_child(fork_server, db, name, when, kill_at)
        where = f"killed {when} call {kill_at} ({control.calls[kill_at - 1]})" if when != "statement" else \
            f"killed at SQL statement {kill_at}"
        try:
            assert exit_code == -signal.SIGKILL, f"the child exited with {exit_code}: {died}"
            if when == "statement":
                where += f" ({died['statement'].strip()[:60]!r}, {len(died['calls'])} calls begun)"
            assert died["calls"] == control.calls[:len(died["calls"])], "the child's calls are not the uncrashed run's"
            check_rerun(db, prices, scenario, control, died)
        except AssertionError as error:
            failures.append(f"{where}: {str(error).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {len(points)} kill points fail:\n" + "\n".join(failures)
