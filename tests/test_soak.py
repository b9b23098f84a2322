"""Soak (issue 8, part 5): 60 scheduled sessions of research and paper trading on an accelerated
clock, without a crash, a leaked thread, process or file descriptor, or growing memory.

The scheduler is the production one (`research_lib.scheduler.run_scheduler`: the SQLite job
store, the calendar triggers, the locks, ``reports/schedule.json``) on a `FakeClock` that jumps
to each next run: January to March 2024 on the New York calendar (two holidays, the switch to
daylight saving time). Trading is real: `trade_job` runs `trade_session` on the simulated
broker for a strategy promoted by hand with 100 sessions of prices, one sim session per
cycle. Research is a stand-in (the real pipeline takes a minute a run): it records the memory
in use each session. The index is the real dashboard rebuild, after every job.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import yaml

from research_lib import paths
from research_lib.scheduler import FakeClock, load_schedule, run_scheduler
from research_lib.paths import state_db
from research_lib.trading import Ledger
from tests.conftest import make_prices
from tests.test_paper import BOOKS, SIM_START_ROW, SYMBOLS, promote_by_hand

SESSIONS = 60
PRICE_SESSIONS = 100  # the sim trades rows 20-79 and still has sessions after them
WARM_UP = 5  # sessions after which lazily created native thread pools (pyarrow, BLAS) exist
RSS_GROWTH_LIMIT = 8 * 2**20  # bytes the second half may add to the first half's peak (~1.5 MiB in all is usual)
SAMPLES: list[dict] = []
NY = ZoneInfo("America/New_York")


def research_stand_in(params: str) -> str:
    """The research job's stand-in: samples the resources in use."""
    SAMPLES.append({**resources(), "rss": resident_bytes()})
    return f"stand-in research, session {len(SAMPLES)}"


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def children() -> set[int]:
    """Live child processes of this process (from /proc: no psutil needed)."""
    mine = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == mine and fields[0] != "Z":
                found.add(int(entry))
    return found


def resources() -> dict:
    return {"threads": len(os.listdir("/proc/self/task")), "python_threads": threading.active_count(),
            "children": children(), "fds": len(os.listdir("/proc/self/fd"))}


def soak_prices() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, size=(PRICE_SESSIONS, len(SYMBOLS))), axis=0))
    return make_prices({s: closes[:, i] for i, s in enumerate(SYMBOLS)})


def test_sixty_sessions_of_research_and_real_paper_trading_run_without_crash_leak_or_growth(workspace, caplog):
    prices = soak_prices()
    rows = list(range(0, PRICE_SESSIONS, 20))
    weights = pd.DataFrame([BOOKS[i % len(BOOKS)] for i in range(len(rows))], index=prices.index[rows], columns=SYMBOLS)
    promote_by_hand(workspace, "soak", prices=prices, weights=weights)
    path = workspace / "params" / "schedule-soak.yaml"
    path.write_text(yaml.safe_dump({"jobs": {"research": {"call": f"{__name__}:research_stand_in",
                                                          "params": "params/smoke.yaml"}}}))
    config = load_schedule(path)  # otherwise the repository's defaults: the real trade and index jobs, sim broker
    SAMPLES.clear()
    before = resources()
    with caplog.at_level(logging.INFO, logger="spartan.scheduler"):
        code = run_scheduler(config, clock=FakeClock(dt.datetime(2024, 1, 2, 9, tzinfo=NY)),
                             stop_after_sessions=SESSIONS)
    after = resources()

    assert code == 0
    outcomes = Counter(m.group(0) for r in caplog.records if r.name == "spartan.scheduler"
                       for m in [re.match(r"(research|trade|index) \w+", r.getMessage())] if m)
    assert outcomes == {"research started": SESSIONS, "research succeeded": SESSIONS, "trade started": SESSIONS,
                        "trade succeeded": SESSIONS, "index started": 2 * SESSIONS, "index succeeded": 2 * SESSIONS}, \
        "every job ran and succeeded; none failed, was skipped or missed (a clock slip at daylight saving would miss)"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("spartan")]

    cycles = Ledger(state_db()).cycles("soak")
    sim_sessions = [f"{d:%Y-%m-%d}" for d in prices.index[SIM_START_ROW:SIM_START_ROW + SESSIONS]]
    assert [c["session"] for c in cycles] == sim_sessions, "60 cycles in the ledger, one sim session each"
    assert all(c["finished_at"] and c["status"] in ("traded", "nothing_to_do") for c in cycles)
    assert sum(c["status"] == "traded" for c in cycles) >= 3, "the book rebalanced on each new decision"

    schedule = (paths.reports_dir() / "schedule.json").read_text()
    assert '"last_status": "succeeded"' in schedule and '"failed"' not in schedule
    assert '"next_run": "2024-03-28T15:45:00-04:00"' in schedule, "the 61st session, Thursday before Good Friday"

    assert len(SAMPLES) == SESSIONS
    assert after["children"] == before["children"] and all(x["children"] == before["children"] for x in SAMPLES), \
        "no process started, none left behind"
    assert after["python_threads"] == before["python_threads"] and {x["python_threads"] for x in SAMPLES} == {
        before["python_threads"]}, "the scheduler runs its jobs in this thread and starts none"
    warm = SAMPLES[WARM_UP]
    assert max(x["threads"] for x in SAMPLES[WARM_UP:]) == warm["threads"] and after["threads"] <= warm["threads"], \
        "native threads do not grow after the warm-up"
    assert max(x["fds"] for x in SAMPLES[WARM_UP:]) <= warm["fds"] and after["fds"] <= before["fds"], \
        "file descriptors (locks, SQLite, reports) are closed"
    rss = [x["rss"] for x in SAMPLES]
    growth = max(rss[SESSIONS // 2:]) - max(rss[:SESSIONS // 2])
    assert growth < RSS_GROWTH_LIMIT, f"resident memory grew {growth / 2**20:.1f} MiB in the second half"
