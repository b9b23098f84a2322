"""Stopping `spartan trade` stops the trading, and every session keeps its report (issue 13, section 6).

`spartan trade` runs as a user or a supervisor runs it: a process in its own process group, on
the sim broker, executing notebook 07 in a kernel. The group is signalled mid-rebalance, just
after an order reached the broker: no order may reach the broker after the command is gone, no
kernel may survive it, and the next run removes the kernel files a killed command left and
marks its cycle interrupted. Each layer is proven alone, by removing the other in the kernel:

- a SIGKILL with the command guard removed: only ``PR_SET_PDEATHSIG`` (`research_lib._kernel_guard`)
  stops the kernel; without it the kernel would send an order every ``ORDER_PAUSE_S`` until
  ipykernel's parent poller noticed, within a second;
- a SIGKILL with ``PR_SET_PDEATHSIG`` cleared: the kernel outlives the command for up to a
  second, and only the guard checked before each order (`_cycle._guard_command`) stops it;
- SIGTERM twice and Ctrl-C twice: a second signal during the clean-up does not cut it short
  (exit 143 and 130, the kernel's files removed);
- SIGSTOP (as Ctrl-Z): the kernel, in a session of its own, is not stopped with the command but
  sends nothing until SIGCONT; meanwhile a second `spartan trade` of the strategy is refused by
  its lock (exit 1, nothing run). After SIGCONT the command completes the rebalance, sending no
  order twice.

Then a command killed (SIGKILL) after the ledger recorded its cycle, before ``cycle.json``, and
another between ``cycle.json`` and ``summary.html``: the next `spartan trade --asof` of the
session writes the report from the ledger (its numbers, not a re-run's) and raises the alert.

Kernels are changed by a ``sitecustomize`` module this test writes and puts on their
``PYTHONPATH``: after each order the simulated broker accepts, the kernel sleeps
``ORDER_PAUSE_S``; and ``SPARTAN_TEST_REMOVE`` takes a layer out. Nothing in the library knows
about it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research_lib.alerts import read_alerts
from research_lib.cli import main
from research_lib.pipeline import KERNEL_FILES
from research_lib.paths import state_db
from research_lib.trading import Ledger
from tests.conftest import REPO, make_prices
from tests.test_paper import promote_by_hand

pytestmark = [pytest.mark.notebook,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")]

SYMBOLS = [f"S{i:02d}" for i in range(20)]  # an equal-weight book: 20 orders in the first rebalance
ORDER_PAUSE_S = 0.15
SPARTAN = str(Path(sys.executable).with_name("spartan"))
KERNEL_HOOK = """\
import os
import sys
# tests/test_trade_kill.py: in the notebook kernels of the commands it starts (not in the guard that starts them)
if os.environ.get("JPY_PARENT_PID") and "research_lib._kernel_guard" not in sys.orig_argv:
    if os.environ.get("SPARTAN_TEST_ORDER_PAUSE_S"):  # each order is followed by a pause
        import time
        from research_lib.broker import _sim
        _submit = _sim.SimBroker._submit
        def _paused(self, *args, **kwargs):
            order = _submit(self, *args, **kwargs)
            time.sleep(float(os.environ["SPARTAN_TEST_ORDER_PAUSE_S"]))
            return order
        _sim.SimBroker._submit = _paused
    if os.environ.get("SPARTAN_TEST_REMOVE") == "PR_SET_PDEATHSIG":  # this kernel outlives its command
        import ctypes
        ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
    if os.environ.get("SPARTAN_TEST_REMOVE") == "the command guard":  # orders are sent whatever the command
        from research_lib.trading import _cycle
        _cycle._guard_command = lambda *args, **kwargs: None
"""


@pytest.fixture()
def book(workspace, tmp_path):
    """A promoted 20-symbol strategy; the folders the commands use for temp files and the hook.
    The commands still running at the end (a failed test) are killed, stopped ones included."""
    rng = np.random.default_rng(11)
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, size=(60, len(SYMBOLS))), axis=0))
    prices = make_prices({s: closes[:, i] for i, s in enumerate(SYMBOLS)})
    weights = pd.DataFrame([[1.0 / len(SYMBOLS)] * len(SYMBOLS)], index=prices.index[[20]], columns=SYMBOLS)
    made = promote_by_hand(workspace, prices=prices, weights=weights)
    hook, temp = tmp_path / "hook", tmp_path / "tmp"
    hook.mkdir()
    temp.mkdir()
    (hook / "sitecustomize.py").write_text(KERNEL_HOOK)
    started: list[subprocess.Popen] = []
    yield {"home": workspace, "hook": hook, "temp": temp, "db": workspace / "data" / "spartan.sqlite",
           "sessions": made["sessions"], "paper": workspace / "reports" / "paper" / "trend", "started": started}
    for command in started:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)  # its kernel dies with it
            command.wait()


def as_typed_at_a_terminal() -> None:
    """In a child before it runs: Ctrl-C and SIGQUIT at their defaults, as for a command typed at a
    terminal. A test run started with ``&`` from a non-interactive shell inherits both ignored (POSIX),
    and a command that inherits an ignored Ctrl-C rightly never handles it (as under nohup): these
    tests would then wait forever for a command that is behaving as documented."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def spartan(book: dict, *args: str, remove: str | None = None, name: str = "command") -> subprocess.Popen:
    """`spartan ARGS` in a new process group, slow orders in its kernel (and ``remove`` taken out
    of it), its output in files (a kernel never holds a pipe open)."""
    env = {**os.environ, "SPARTAN_HOME": str(book["home"]), "TMPDIR": str(book["temp"]),
           "PYTHONPATH": os.pathsep.join([str(book["hook"]), str(REPO)]),
           "SPARTAN_TEST_ORDER_PAUSE_S": str(ORDER_PAUSE_S)}
    if remove:
        env["SPARTAN_TEST_REMOVE"] = remove
    out = (book["temp"].parent / f"{name}.out").open("w")
    err = (book["temp"].parent / f"{name}.err").open("w")
    book["started"].append(subprocess.Popen([SPARTAN, *args], env=env, stdout=out, stderr=err, start_new_session=True,
                                            preexec_fn=as_typed_at_a_terminal))
    return book["started"][-1]


def stderr_of(book: dict, name: str = "command") -> str:
    return (book["temp"].parent / f"{name}.err").read_text()


def broker_orders(db: Path) -> list[str]:
    """The client_order_ids the simulated broker holds, in submission order."""
    if not db.exists():
        return []
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            return [row[0] for row in conn.execute("SELECT client_order_id FROM sim_orders ORDER BY seq")]
        except sqlite3.OperationalError:  # the tables are not made yet
            return []


def kernels_of(pid: int) -> list[int]:
    """Live processes started by ``pid`` as notebook kernels (``JPY_PARENT_PID`` in their environment)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_bytes().rsplit(b")", 1)[-1].split()[0]
        except OSError:
            continue
        if f"JPY_PARENT_PID={pid}".encode() in environ and state != b"Z":
            found.append(int(proc.name))
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return result


def kernel_files(book: dict, pid: int) -> list[str]:
    return sorted(p.name for p in book["temp"].glob(f"{KERNEL_FILES}{pid}-*"))


def started_sending(book: dict, command: subprocess.Popen) -> None:
    """Wait until the command's rebalance has sent an order."""
    before = len(broker_orders(book["db"]))
    wait_for(lambda: len(broker_orders(book["db"])) > before or command.poll() is not None, 90,
             "an order of the rebalance")
    assert command.poll() is None, f"the command ended first: {stderr_of(book)[-3000:]}"


GONE = "failed: CommandGone: the process that started this notebook kernel (pid {}) has ended; nothing more is sent"
STOPS = [  # (the layer taken out of the kernel, the signals to the command's process group, its exit code,
    #         the status its cycle ends with in the ledger: killed with the kernel, or refused by the guard)
    ("the command guard", [signal.SIGKILL], -signal.SIGKILL, "interrupted"),
    ("PR_SET_PDEATHSIG", [signal.SIGKILL], -signal.SIGKILL, GONE),
    (None, [signal.SIGTERM, signal.SIGTERM], 128 + signal.SIGTERM, "interrupted"),
    (None, [signal.SIGINT, signal.SIGINT], 128 + signal.SIGINT, "interrupted"),
]


def test_stopping_the_command_mid_rebalance_stops_its_orders_and_the_next_run_converges(book):
    killed, statuses = [], []
    for removed, signals, exit_code, status in STOPS:
        what = f"{'+'.join(s.name for s in signals)} with {removed or 'nothing'} removed"
        command = spartan(book, "trade", remove=removed)
        started_sending(book, command)
        for number in signals:
            os.killpg(command.pid, number)
            time.sleep(0.05)
        assert command.wait(timeout=60) == exit_code, stderr_of(book)
        at_stop = broker_orders(book["db"])
        assert len(at_stop) < len(SYMBOLS), "stopped mid-rebalance"
        wait_for(lambda: not kernels_of(command.pid), 5, f"the kernel of a command stopped by {what} to end")
        time.sleep(2 * ORDER_PAUSE_S)
        assert broker_orders(book["db"]) == at_stop, f"orders reached the broker after {what}"
        assert [kernel_files(book, pid) for pid in killed] == [[] for _ in killed], \
            "this run removed the files of the kernels of killed commands"
        statuses.append(status.format(command.pid))
        if signals == [signal.SIGKILL]:
            assert len(kernel_files(book, command.pid)) == 6, "5 sockets and a connection file, for the next run"
            killed.append(command.pid)
        else:
            assert kernel_files(book, command.pid) == [], "a stopped command removes its kernel's files"

    # Ctrl-Z: the command stops, its kernel (another session) sends nothing until it continues;
    # meanwhile a second trade of the strategy (even of another session) is refused by the lock.
    paused = spartan(book, "trade")
    started_sending(book, paused)
    os.killpg(paused.pid, signal.SIGSTOP)
    stopped_at, sent = time.monotonic(), broker_orders(book["db"])
    folders = sorted(p.name for p in book["paper"].iterdir())
    second = spartan(book, "trade", "--asof", f"{book['sessions'][21]:%Y-%m-%d}", name="second")
    assert second.wait(timeout=60) == 1
    assert (f"spartan: another spartan trade of trend is running (pid {paused.pid}); wait for it or stop it"
            in stderr_of(book, "second"))
    time.sleep(max(0.0, 2.0 - (time.monotonic() - stopped_at)))
    assert broker_orders(book["db"]) == sent, "no order while the command is stopped, none from the second one"
    assert sorted(p.name for p in book["paper"].iterdir()) == folders, "the refused command made no folder"
    os.killpg(paused.pid, signal.SIGCONT)
    assert paused.wait(timeout=90) == 0, stderr_of(book)
    assert [kernel_files(book, pid) for pid in killed] == [[] for _ in killed]

    orders = broker_orders(book["db"])
    assert len(orders) == len(set(orders)) == len(SYMBOLS), "the rebalance completed, no order twice"
    assert [c["status"] for c in Ledger(state_db()).cycles("trend")] == statuses + ["traded"], \
        "each stopped cycle is marked interrupted by the next run, or was refused by the guard"
    assert {i.status for i in Ledger(state_db()).intents("trend")} <= {"sent", "adopted"}
    report = json.loads((book["paper"] / f"{book['sessions'][20]:%Y-%m-%d}" / "cycle.json").read_text())
    assert report["status"] == "traded" and len(report["cycle"]["resolved"]) >= 1


def test_status_into_a_closed_pipe_exits_quietly(book):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as `spartan status | head -0`
    env = {**os.environ, "SPARTAN_HOME": str(book["home"]), "PYTHONPATH": str(REPO)}
    done = subprocess.run([SPARTAN, "status"], stdout=write, stderr=subprocess.PIPE, env=env, timeout=60)
    os.close(write)
    assert done.stderr.decode() == "" and done.returncode == 128 + signal.SIGPIPE


# ---------------------------------------------------------------- a kill between the ledger and the report

KILLED_IN_A_WINDOW = """\
import importlib, sys, time
from research_lib.stages.paper import trade_session
module, name, flag, session = sys.argv[1:]
def wait_for_the_kill(*args, **kwargs):
    open(flag, "w").close()
    time.sleep(120)
setattr(importlib.import_module(module), name, wait_for_the_kill)
trade_session("trend", asof=session)
"""
WINDOWS = {  # the function about to be called when the process is killed
    "after the ledger recorded the cycle, before cycle.json": ("research_lib.stages.paper", "write_session_report"),
    "between cycle.json and summary.html": ("research_lib.reports.paper", "render_to"),
}


def kill_in_window(workspace: Path, window: str, session: pd.Timestamp) -> None:
    """Trade ``session`` in another process and SIGKILL it in ``window`` (`WINDOWS`)."""
    flag = workspace / "in-the-window"
    flag.unlink(missing_ok=True)
    env = {**os.environ, "SPARTAN_HOME": str(workspace), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", KILLED_IN_A_WINDOW, *WINDOWS[window], str(flag),
                              f"{session:%Y-%m-%d}"], env=env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: flag.exists() or child.poll() is not None, 90, f"the window {window}")
        assert flag.exists(), child.communicate()[1].decode()[-3000:]
        child.kill()
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        child.stderr.close()


def test_a_session_killed_before_its_report_gets_it_from_the_ledger_with_its_alert(workspace, capsys):
    sessions = promote_by_hand(workspace)["sessions"]
    paper = workspace / "reports" / "paper" / "trend"
    for window, row in zip(WINDOWS, (20, 21)):
        if row == 21:  # a peak the account is far below: the cycle HALTs on the drawdown stop and alerts
            Ledger(state_db()).record_equity("trend", "1999-12-31", 1e9, 1e9)
        session = f"{sessions[row]:%Y-%m-%d}"
        kill_in_window(workspace, window, sessions[row])
        cycle = Ledger(state_db()).cycles("trend")[-1]
        assert cycle["session"] == session and cycle["finished_at"], f"{window}: the ledger recorded the cycle"
        assert not (paper / session / "summary.html").exists()
        orders = broker_orders(workspace / "data" / "spartan.sqlite")
        capsys.readouterr()

        assert main(["trade", "--asof", session]) == 0, f"{window}: {capsys.readouterr().err}"
        out = capsys.readouterr().out
        assert f"wrote the missing report of trend {session} from the ledger" in out
        assert f"trend {session} on sim: already traded; nothing was run or sent" in out
        report = json.loads((paper / session / "cycle.json").read_text())
        assert (paper / session / "summary.html").is_file(), window
        assert report["status"] == cycle["status"] and len(report["cycle"]["sent"]) == cycle["summary"]["sent"], \
            f"{window}: the report states what the ledger recorded"
        assert Ledger(state_db()).cycles("trend")[-1]["id"] == cycle["id"], "no cycle was run again"
        assert broker_orders(workspace / "data" / "spartan.sqlite") == orders, "nothing was sent"
        if row == 20:
            assert report["status"] == "traded" and len(report["cycle"]["sent"]) == 4 == len(orders)
        else:
            assert report["status"] == "halted"
            (tripped,) = [a for a in read_alerts() if a["kind"] == "kill_switch"]
            assert tripped["fields"]["session"] == session and "ACTIVE -> HALTED" in tripped["message"]


LATE_SIGNAL_SCRIPT = """
import os, signal, sys
from research_lib.cli import _stop_signals_interrupt
try:
    with _stop_signals_interrupt():
        print("ready", flush=True)
        while True:
            signal.pause()
except KeyboardInterrupt as stop:
    sys.exit(128 + stop.signum)
"""


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_signals_after_the_first_cannot_change_the_exit_code_even_while_python_shuts_down(number):
    """The double Ctrl-C above, without its timing: the command is signalled every millisecond from
    the first signal to its end. Python's shutdown gives the default action back to the signals it
    handled, which would kill the command (exit -2) if one came then; they stay ignored instead."""
    for _ in range(5):
        command = subprocess.Popen([sys.executable, "-c", LATE_SIGNAL_SCRIPT], cwd=REPO, preexec_fn=as_typed_at_a_terminal,
                                   stdout=subprocess.PIPE,
                                   text=True)
        assert command.stdout.readline().strip() == "ready"
        while command.poll() is None:
            try:
                os.kill(command.pid, number)
            except ProcessLookupError:
                break
            time.sleep(0.001)
        assert command.wait(timeout=30) == 128 + number
