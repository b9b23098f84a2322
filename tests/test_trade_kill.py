"""Stopping `spartan trade` stops the trading (issue 13, section 6).

`spartan trade` runs as a user or a supervisor runs it: a process in its own process group, on
the sim broker, executing notebook 07 in a kernel. The group is signalled mid-rebalance, just
after the first order reached the broker, with SIGKILL, SIGTERM and SIGINT in turn: no order may
reach the broker after the command is gone, no kernel may survive it, and the next run removes
the kernel files a killed command left, marks its cycle interrupted and completes the rebalance
without sending any order twice.

Orders are slowed down in the commands' notebook kernels only, by a ``sitecustomize`` module this
test writes and puts on their ``PYTHONPATH``: after each order the simulated broker accepts, the
kernel sleeps ``ORDER_PAUSE_S``. Nothing in the library knows about it.
"""

from __future__ import annotations

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

from research_lib.pipeline import KERNEL_FILES
from research_lib.trading import Ledger, state_db, trade_session
from tests.conftest import REPO, make_prices
from tests.test_paper import promote_by_hand

pytestmark = [pytest.mark.notebook,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")]

SYMBOLS = [f"S{i:02d}" for i in range(20)]  # an equal-weight book: 20 orders in the first rebalance
ORDER_PAUSE_S = 0.15
SPARTAN = str(Path(sys.executable).with_name("spartan"))
SLOW_ORDERS = """\
import os
# tests/test_trade_kill.py: in the notebook kernels of the commands it starts, each order is followed by a pause
if os.environ.get("SPARTAN_TEST_ORDER_PAUSE_S") and os.environ.get("JPY_PARENT_PID"):
    import time
    from research_lib.broker import _sim
    _submit = _sim.SimBroker._submit
    def _paused(self, *args, **kwargs):
        order = _submit(self, *args, **kwargs)
        time.sleep(float(os.environ["SPARTAN_TEST_ORDER_PAUSE_S"]))
        return order
    _sim.SimBroker._submit = _paused
"""


@pytest.fixture()
def book(workspace, tmp_path):
    """A promoted 20-symbol strategy; the folders the commands use for temp files and the hook."""
    rng = np.random.default_rng(11)
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, size=(60, len(SYMBOLS))), axis=0))
    prices = make_prices({s: closes[:, i] for i, s in enumerate(SYMBOLS)})
    weights = pd.DataFrame([[1.0 / len(SYMBOLS)] * len(SYMBOLS)], index=prices.index[[20]], columns=SYMBOLS)
    promote_by_hand(workspace, prices=prices, weights=weights)
    hook, temp = tmp_path / "hook", tmp_path / "tmp"
    hook.mkdir()
    temp.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_ORDERS)
    return {"home": workspace, "hook": hook, "temp": temp, "db": workspace / "data" / "spartan.sqlite"}


def spartan(book: dict, *args: str, pause: bool = False) -> subprocess.Popen:
    """`spartan ARGS` in a new process group, its output in files (a kernel never holds a pipe open)."""
    env = {**os.environ, "SPARTAN_HOME": str(book["home"]), "TMPDIR": str(book["temp"]),
           "PYTHONPATH": os.pathsep.join([str(book["hook"]), str(REPO)])}
    if pause:
        env["SPARTAN_TEST_ORDER_PAUSE_S"] = str(ORDER_PAUSE_S)
    out = (book["temp"].parent / "out.txt").open("w")
    err = (book["temp"].parent / "err.txt").open("w")
    return subprocess.Popen([SPARTAN, *args], env=env, stdout=out, stderr=err, start_new_session=True)


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


STOPS = [(signal.SIGKILL, -signal.SIGKILL),  # (the signal to the command's process group, its exit code)
         (signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 128 + signal.SIGINT)]


def test_stopping_the_command_mid_rebalance_stops_its_orders_and_the_next_run_converges(book):
    killed = []
    for number, exit_code in STOPS:
        sent = broker_orders(book["db"])
        command = spartan(book, "trade", pause=True)
        wait_for(lambda: len(broker_orders(book["db"])) > len(sent), 90, "the first order of the rebalance")
        os.killpg(command.pid, number)
        assert command.wait(timeout=60) == exit_code, (book["temp"].parent / "err.txt").read_text()
        at_stop = broker_orders(book["db"])
        assert len(at_stop) < len(SYMBOLS), "stopped mid-rebalance"
        wait_for(lambda: not kernels_of(command.pid), 5, f"the kernel of a command stopped by {number.name} to end")
        time.sleep(2 * ORDER_PAUSE_S)
        assert broker_orders(book["db"]) == at_stop, f"orders reached the broker after {number.name}"
        assert [kernel_files(book, pid) for pid in killed] == [[] for _ in killed], \
            "this run removed the files of the kernels of killed commands"
        if number == signal.SIGKILL:
            assert len(kernel_files(book, command.pid)) == 6, "5 sockets and a connection file, for the next run"
            killed.append(command.pid)
        else:
            assert kernel_files(book, command.pid) == [], "a stopped command removes its kernel's files"

    result = trade_session("trend")  # the next run, in-process: the same session, completed
    assert result["status"] == "traded" and len(result["cycle"]["resolved"]) >= 1
    orders = broker_orders(book["db"])
    assert len(orders) == len(set(orders)) == len(SYMBOLS), "the rebalance completed, no order twice"
    cycles = [(c["status"], c["finished_at"] is None) for c in Ledger(state_db()).cycles("trend")]
    assert cycles == [("interrupted", True)] * len(STOPS) + [("traded", False)]
    assert {i.status for i in Ledger(state_db()).intents("trend")} <= {"sent", "adopted"}


def test_status_into_a_closed_pipe_exits_quietly(book):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as `spartan status | head -0`
    env = {**os.environ, "SPARTAN_HOME": str(book["home"]), "PYTHONPATH": str(REPO)}
    done = subprocess.run([SPARTAN, "status"], stdout=write, stderr=subprocess.PIPE, env=env, timeout=60)
    os.close(write)
    assert done.stderr.decode() == "" and done.returncode == 128 + signal.SIGPIPE
