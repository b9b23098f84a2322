"""Shared fixtures: small real data, and a throw-away workspace for runs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from research_lib.data import canonical_frame, load_prices

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("SPARTAN_PROGRESS", "0")  # no progress bars in test output (tests of them turn them on)
# The suite never uses a developer's or CI's real keys (nor their endpoints): tests that need
# keys set their own, pointing at local servers. Notebook kernels inherit this environment.
for _name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "APCA_API_DATA_URL",
              "APCA_API_BASE_URL", "SPARTAN_SMTP_PASSWORD", "SPARTAN_ALERT_WEBHOOK_URL"):
    os.environ.pop(_name, None)
# Tests never alert a developer's real channels: workspaces get this alerts.yaml, not the repository's.
NO_CHANNELS = "# tests: alerts are logged and recorded, never sent\n"


def link_params(home: Path) -> None:
    """``home/params``: the repository's parameter files (linked), an empty ``promoted/`` and an
    alerts.yaml without channels."""
    (home / "params" / "promoted").mkdir(parents=True)
    for path in (REPO / "params").glob("*.yaml"):
        if path.name != "alerts.yaml":
            (home / "params" / path.name).symlink_to(path)
    (home / "params" / "alerts.yaml").write_text(NO_CHANNELS)


# The whole session, nbval's notebook runs included, uses a scratch workspace: its data/ (snapshots,
# caches, SQLite) is thrown away, and a developer's .env (real keys) is never read by a test.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="spartan-tests-"))
link_params(_SESSION_HOME)
(_SESSION_HOME / "notebooks").symlink_to(REPO / "notebooks")
os.environ["SPARTAN_HOME"] = str(_SESSION_HOME)
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With ``--dist loadfile`` (make test), the notebooks nbval runs go to one worker, one after
    another in the chain's order, as a user runs them in Lab: each finds what the notebooks before it
    wrote to ``reports/lab`` and reuses it, instead of computing the chain again for itself (notebook
    05 alone refits 03's models on the daily scenario). Every other file is its own unit, as before."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class NotebooksInOrder(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "notebooks" if path.startswith("notebooks/") and path.endswith(".ipynb") else path

    return NotebooksInOrder(config, log)


@pytest.fixture(scope="session")
def bundled_small(tmp_path_factory) -> pd.DataFrame:
    """Six bundled stocks and the S&P 500 index, 2015-2018 (real prices)."""
    return load_prices("bundled", ["AAPL", "JPM", "KO", "MSFT", "PFE", "XOM", "SP500"], "2015-01-01", "2018-12-31",
                       snapshot_dir=tmp_path_factory.mktemp("snapshots"))


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """An empty workspace (SPARTAN_HOME) that uses the repository's params and notebooks
    (its own params/promoted/, so promotions in tests never land in the repository)."""
    link_params(tmp_path)
    (tmp_path / "notebooks").symlink_to(REPO / "notebooks")
    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path))
    return tmp_path


def make_prices(closes: dict[str, list[float]], start: str = "2020-01-01", **fields) -> pd.DataFrame:
    """A canonical frame from lists of closes on consecutive business days."""
    dates = pd.bdate_range(start, periods=len(next(iter(closes.values()))))
    frames = {"close": pd.DataFrame(closes, index=dates)}
    for name, values in fields.items():
        frames[name] = pd.DataFrame(values, index=dates)
    return canonical_frame(frames)


@pytest.fixture()
def process_states():
    """Pids in each state a notebook kernel's command can be in: ended and reaped, a zombie
    (ended, not reaped; Linux only), stopped (SIGSTOP), alive but not our parent, this process,
    our parent and init."""
    import signal
    import subprocess
    import sys

    ended = subprocess.Popen(["true"])
    ended.wait()
    alive = subprocess.Popen(["sleep", "60"])
    stopped = subprocess.Popen(["sleep", "60"])
    os.kill(stopped.pid, signal.SIGSTOP)
    zombie = subprocess.Popen(["true"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
    states = {"ended": ended.pid, "alive, not our parent": alive.pid, "stopped": stopped.pid,
              "this process": os.getpid(), "our parent": os.getppid(), "init": 1}
    if sys.platform.startswith("linux"):
        states["zombie"] = zombie.pid
    yield states
    for process in (alive, stopped):
        process.kill()
        process.wait()
    zombie.wait()
