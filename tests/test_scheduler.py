"""`spartan schedule` (`research_lib.scheduler`): calendar times, the persistent job store,
missed runs, locks, failures, stopping on a signal, and the crontab.

The jobs point (``call`` in the schedule file) at the small stand-ins below, which record their
calls, except in the test of the real trade job. Schedulers run on a `FakeClock`: the same loop,
job store, triggers and record as production, with time jumping to the next run.

This module imports nothing from ``tests.conftest`` at the top level: the signal tests import
its stand-ins in a child process, which must keep the ``SPARTAN_HOME`` it is given.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from research_lib import paths
from research_lib.trading import Ledger
from research_lib.errors import ConfigError
from research_lib.scheduler import (CRON_WINDOW_SECONDS, FakeClock, crontab, load_schedule, lock_path, next_runs,
                                    run_due, run_scheduler, split_due)

REPO = Path(__file__).resolve().parents[1]
NY = ZoneInfo("America/New_York")
CALLS: list[tuple[str, dict]] = []
RELEASE, STARTED = threading.Event(), threading.Event()
JOB_KEYS = {"id", "name", "next_run", "last_run", "last_status", "last_error"}


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=NY)


# ---------------------------------------------------------------- stand-in jobs (module level: the job store keeps references)


def research_stand_in(params: str) -> str:
    CALLS.append(("research", {"params": params}))
    return "research recorded"


def trade_stand_in(strategy: list[str] | None, broker: str | None) -> str:
    CALLS.append(("trade", {"strategy": strategy, "broker": broker}))
    return "trade recorded"


def index_stand_in() -> str:
    CALLS.append(("index", {}))
    return "index recorded"


def failing_stand_in(params: str) -> str:
    CALLS.append(("research", {"params": params}))
    raise RuntimeError("disk full")


def alerted_stand_in(params: str) -> str:
    from research_lib.scheduler import JobFailed

    raise JobFailed("run 42 failed", alerted=True)


def blocking_stand_in(params: str) -> str:
    CALLS.append(("research", {"params": params}))
    STARTED.set()
    RELEASE.wait(10)
    return "released"


def leaky_stand_in(params: str) -> str:
    raise RuntimeError(f"request failed with key {os.environ['ANTHROPIC_API_KEY']}")


def slow_stand_in(params: str) -> str:
    """For the signal test's child process: says it started, then takes a minute."""
    (paths.data_dir() / "slow.started").write_text(str(os.getpid()))
    time.sleep(60)
    return "slept"


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()
    RELEASE.clear()
    STARTED.clear()
    yield
    RELEASE.set()


def schedule(workspace: Path, jobs: dict | None = None, **top) -> Path:
    """A schedule file in the workspace: the stand-ins, with ``jobs`` sections and top-level keys changed."""
    sections = {"research": {"call": f"{__name__}:research_stand_in", "params": "params/smoke.yaml"},
                "trade": {"call": f"{__name__}:trade_stand_in"},
                "index": {"call": f"{__name__}:index_stand_in"}}
    for name, changes in (jobs or {}).items():
        sections[name] = {**sections[name], **changes}
    path = workspace / "params" / "schedule-test.yaml"
    path.write_text(yaml.safe_dump({"exchange": "XNYS", "timezone": "America/New_York", **top, "jobs": sections}))
    return path


def record() -> dict:
    return json.loads((paths.reports_dir() / "schedule.json").read_text())


def job(name: str) -> dict:
    return next(j for j in record()["jobs"] if j["id"] == name)


def events(name: str, status: str | None = None) -> list[dict]:
    return [h for h in record()["history"] if h["job"] == name and status in (None, h["status"])]


def stored_next_runs() -> dict[str, dt.datetime]:
    """The next run times in the accelerated clock's SQLite job store (the tests' schedulers run
    on a FakeClock), read without APScheduler."""
    from research_lib.scheduler import FAKE_STORE_FILE

    with sqlite3.connect(paths.data_dir() / FAKE_STORE_FILE) as db:
        rows = db.execute("SELECT id, next_run_time FROM apscheduler_jobs").fetchall()
    return {job_id: dt.datetime.fromtimestamp(stamp, NY) for job_id, stamp in rows}


# ---------------------------------------------------------------- the schedule file


def test_the_repository_schedule_runs_research_after_the_close_and_trading_before_it(workspace):
    config = load_schedule(REPO / "params" / "schedule.yaml")
    assert (config.exchange, config.timezone, config.coalesce) == ("XNYS", "America/New_York", True)
    research, trade, index = config.jobs.research, config.jobs.trade, config.jobs.index
    assert (research.params, research.minutes_after_close, research.call) == (
        "params/daily.yaml", 30, "research_lib.scheduler:research_job")
    assert (trade.strategy, trade.broker, trade.minutes_before_close, trade.enabled) == (None, "sim", 15, True)
    assert index.after == ["research", "trade"] and index.call == "research_lib.scheduler:index_job"
    assert config.source == (REPO / "params" / "schedule.yaml").resolve()


@pytest.mark.parametrize("change, message", [
    ({"jobs": {"trade": {"minutes_befor_close": 10}}},
     r"jobs\.trade\.minutes_befor_close: unknown key; valid keys here: \[.*\]\. Did you mean 'minutes_before_close'\?"),
    ({"exchange": "NYSX"}, r"exchange: Value error, is not an exchange_calendars code; use e\.g\. XNYS .*\(got 'NYSX'\)"),
    ({"timezone": "New York"}, r"timezone: Value error, is not an IANA time zone; use e\.g\. America/New_York "
                               r"\(got 'New York'\)"),
    ({"jobs": {"trade": {"broker": "ib"}}}, r"jobs\.trade\.broker: Input should be 'sim' or 'alpaca' \(got 'ib'\)"),
    ({"jobs": {"research": {"minutes_after_close": -5}}},
     r"jobs\.research\.minutes_after_close: Input should be greater than or equal to 0 \(got -5\)"),
    ({"jobs": {"research": {"call": "nowhere:nothing"}}},
     r"jobs\.research\.call: Value error, cannot be imported .*; give 'module:function', "
     r"e\.g\. 'research_lib\.scheduler:research_job' \(got 'nowhere:nothing'\)"),
    ({"jobs": {"research": {"params": "params/nope.yaml"}}},
     r"jobs\.research\.params 'params/nope\.yaml': Parameter file .*nope\.yaml does not exist"),
])
def test_a_bad_schedule_is_refused_naming_the_file_key_value_and_fix(workspace, change, message):
    raw = yaml.safe_load((REPO / "params" / "schedule.yaml").read_text())
    for key, value in change.items():
        if key == "jobs":
            for name, keys in value.items():
                raw["jobs"][name].update(keys)
        else:
            raw[key] = value
    path = workspace / "params" / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"Invalid schedule in {path}:?[\s\S]*{message}"):
        load_schedule(path)


def test_a_missing_schedule_file_is_refused_with_where_to_find_one(workspace):
    with pytest.raises(ConfigError, match=r"Schedule file .*nope\.yaml does not exist; pass a file such as "
                                          r"params/schedule\.yaml"):
        load_schedule("params/nope.yaml")


# ---------------------------------------------------------------- times from the exchange calendar


def test_the_fourth_of_july_has_no_runs_and_the_early_close_before_it_moves_both_jobs(workspace):
    config = load_schedule(REPO / "params" / "schedule.yaml")
    assert next_runs(config, at(2024, 7, 2, 17), 4) == [
        ("trade", at(2024, 7, 3, 12, 45)), ("research", at(2024, 7, 3, 13, 30)),  # 13:00 close on July 3rd
        ("trade", at(2024, 7, 5, 15, 45)), ("research", at(2024, 7, 5, 16, 30))]  # nothing on the 4th


def test_the_day_after_thanksgiving_closes_at_13_so_trade_runs_at_12_45_and_research_at_13_30(workspace):
    config = load_schedule(REPO / "params" / "schedule.yaml")
    assert next_runs(config, at(2024, 11, 27, 16, 30), 3) == [  # strictly after: the 27th's research is not listed
        ("trade", at(2024, 11, 29, 12, 45)), ("research", at(2024, 11, 29, 13, 30)), ("trade", at(2024, 12, 2, 15, 45))]
    runs = next_runs(config, at(2024, 11, 29, 12, 45), 1)
    assert runs == [("research", at(2024, 11, 29, 13, 30))] and runs[0][1].isoformat() == "2024-11-29T13:30:00-05:00"


def test_weekends_are_skipped_and_times_stay_local_across_daylight_saving(workspace):
    config = load_schedule(REPO / "params" / "schedule.yaml")
    assert next_runs(config, at(2024, 3, 8, 16, 31), 2) == [  # Friday, then Monday after the clocks changed
        ("trade", at(2024, 3, 11, 15, 45)), ("research", at(2024, 3, 11, 16, 30))]
    assert [t.utcoffset() for _, t in next_runs(config, at(2024, 3, 8, 9), 4)] == [dt.timedelta(hours=-5)] * 2 + [
        dt.timedelta(hours=-4)] * 2


def test_only_the_latest_of_several_due_runs_runs_when_coalescing_and_never_beyond_the_grace():
    times = [at(2024, 11, 25, 16, 30), at(2024, 11, 26, 16, 30)]
    assert split_due(times, at(2024, 11, 26, 16, 30), coalesce=True, grace_seconds=None) == (times[1:], times[:1])
    assert split_due(times[1:], at(2024, 11, 26, 16, 30, 20), coalesce=True, grace_seconds=3600) == (times[1:], []), \
        "20 s late is on time"
    assert split_due(times, at(2024, 11, 26, 16, 40), coalesce=True, grace_seconds=3600) == (times[1:], times), \
        "run 10 minutes late: reported missed at its time too"
    assert split_due(times, at(2024, 11, 26, 18), coalesce=True, grace_seconds=3600) == ([], times)
    assert split_due(times, at(2024, 11, 26, 16, 30), coalesce=False, grace_seconds=None) == (times, times[:1])


# ---------------------------------------------------------------- the scheduler on a fake clock


def test_the_scheduler_runs_the_jobs_in_calendar_order_and_writes_schedule_json(workspace):
    config = load_schedule(schedule(workspace))
    assert run_scheduler(config, clock=FakeClock(at(2024, 11, 27, 9)), stop_after_sessions=2) == 0
    assert [name for name, _ in CALLS] == ["trade", "index", "research", "index"] * 2
    assert CALLS[0][1] == {"strategy": None, "broker": "sim"} and CALLS[2][1] == {"params": "params/smoke.yaml"}
    state = record()
    assert set(state) == {"updated_at", "exchange", "timezone", "jobs", "history"}
    assert (state["exchange"], state["timezone"]) == ("XNYS", "America/New_York")
    assert [j["id"] for j in state["jobs"]] == ["research", "trade", "index"]
    assert all(set(j) == JOB_KEYS and j["last_status"] == "succeeded" and j["last_error"] is None
               for j in state["jobs"])
    assert [(h["job"], h["at"], h["status"]) for h in state["history"]] == [
        ("trade", "2024-11-27T15:45:00-05:00", "succeeded"), ("index", "2024-11-27T15:45:00-05:00", "succeeded"),
        ("research", "2024-11-27T16:30:00-05:00", "succeeded"), ("index", "2024-11-27T16:30:00-05:00", "succeeded"),
        ("trade", "2024-11-29T12:45:00-05:00", "succeeded"), ("index", "2024-11-29T12:45:00-05:00", "succeeded"),
        ("research", "2024-11-29T13:30:00-05:00", "succeeded"), ("index", "2024-11-29T13:30:00-05:00", "succeeded")]
    assert state["history"][2]["detail"].startswith("research recorded (")
    assert {j["id"]: j["next_run"] for j in state["jobs"]} == {
        "research": "2024-12-02T16:30:00-05:00", "trade": "2024-12-02T15:45:00-05:00",
        "index": "2024-12-02T15:45:00-05:00"}
    assert job("research")["last_run"] == "2024-11-29T13:30:00-05:00"
    assert state["updated_at"] == "2024-11-29T13:30:00-05:00", "the scheduler's clock, not the wall clock"


def test_the_job_store_keeps_the_next_runs_across_a_restart(workspace):
    config = load_schedule(schedule(workspace))
    run_scheduler(config, clock=FakeClock(at(2024, 11, 25, 9)), stop_after_sessions=1)
    monday = {"trade": at(2024, 11, 26, 15, 45), "research": at(2024, 11, 26, 16, 30)}
    assert stored_next_runs() == monday
    # Restarted (and stopped at once) after trade's time: the stored next runs stand, where a new
    # schedule would start from now (trade on Wednesday).
    assert run_scheduler(config, clock=FakeClock(at(2024, 11, 26, 16)), stop_after_sessions=0) == 0
    assert stored_next_runs() == monday and job("trade")["next_run"] == "2024-11-26T15:45:00-05:00"
    assert [name for name, _ in CALLS] == ["trade", "index", "research", "index"], "only Monday's runs"
    # A changed schedule replaces the stored one: research now 45 minutes after the close.
    moved = load_schedule(schedule(workspace, jobs={"research": {"minutes_after_close": 45}}))
    run_scheduler(moved, clock=FakeClock(at(2024, 11, 26, 16)), stop_after_sessions=0)
    assert stored_next_runs() == {"trade": at(2024, 11, 26, 15, 45), "research": at(2024, 11, 26, 16, 45)}


@pytest.mark.parametrize("coalesce", [True, False])
def test_runs_missed_while_no_scheduler_ran_are_reported_and_coalesced_into_one_run(workspace, coalesce):
    config = load_schedule(schedule(workspace, coalesce=coalesce, misfire_grace_seconds=2 * 86400))
    run_scheduler(config, clock=FakeClock(at(2024, 11, 25, 9)), stop_after_sessions=1)  # Monday's runs
    CALLS.clear()
    # Down from Monday evening to Wednesday 16:35: Tuesday's and Wednesday's runs were missed.
    assert run_scheduler(config, clock=FakeClock(at(2024, 11, 27, 16, 35)), stop_after_sessions=1) == 0
    if coalesce:
        assert [name for name, _ in CALLS] == ["trade", "research", "index"], "each job once, then the index"
    else:
        assert [name for name, _ in CALLS] == ["trade", "trade", "research", "research", "index"]
    [missed] = events("research", "missed")
    assert missed == {"job": "research", "at": "2024-11-27T16:35:00-05:00", "status": "missed", "detail": (
        "missed 2 run(s) at 2024-11-26T16:30:00-05:00, 2024-11-27T16:30:00-05:00 (the scheduler was stopped or "
        "busy); " + ("coalesced into one run now" if coalesce else "run now, late"))}
    assert events("trade", "missed")[0]["detail"].startswith(
        "missed 2 run(s) at 2024-11-26T15:45:00-05:00, 2024-11-27T15:45:00-05:00 (")
    assert [h["status"] for h in events("research")] == ["succeeded", "missed"] + ["succeeded"] * (1 if coalesce else 2)
    assert job("research")["last_run"] == job("trade")["last_run"] == "2024-11-27T16:35:00-05:00"
    assert job("trade")["next_run"] == "2024-11-29T12:45:00-05:00"


def test_a_trade_run_later_than_its_own_grace_is_missed_not_run(workspace):
    config = load_schedule(schedule(workspace, jobs={"trade": {"misfire_grace_seconds": 600}}))
    run_scheduler(config, clock=FakeClock(at(2024, 11, 25, 9)), stop_after_sessions=1)
    CALLS.clear()
    run_scheduler(config, clock=FakeClock(at(2024, 11, 26, 16)), stop_after_sessions=1)  # 15 minutes late
    assert [name for name, _ in CALLS] == ["research", "index"]
    [missed] = events("trade", "missed")
    assert missed["detail"] == ("missed 1 run(s) at 2024-11-26T15:45:00-05:00 (the scheduler was stopped or busy); "
                                "later than misfire_grace_seconds (600 s), not run; next run 2024-11-27T15:45:00-05:00")


def test_a_failing_job_is_recorded_logged_and_alerted_and_the_scheduler_goes_on(workspace, caplog, monkeypatch):
    raised = []
    alerts = types.ModuleType("research_lib.alerts")
    alerts.alert = lambda kind, message, **fields: raised.append((kind, message, fields))
    monkeypatch.setitem(sys.modules, "research_lib.alerts", alerts)
    config = load_schedule(schedule(workspace, jobs={"research": {"call": f"{__name__}:failing_stand_in"}}))
    with caplog.at_level(logging.INFO, logger="spartan.scheduler"):
        assert run_scheduler(config, clock=FakeClock(at(2024, 11, 25, 9)), stop_after_sessions=2) == 0
    assert [name for name, _ in CALLS] == ["trade", "index", "research", "index"] * 2, "trading went on"
    assert [h["status"] for h in events("research")] == ["failed", "failed"]
    assert events("research")[0]["detail"].startswith("RuntimeError: disk full (")
    assert job("research")["last_status"] == "failed" and job("research")["last_error"] == "RuntimeError: disk full"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["job research failed: RuntimeError: disk full"] * 2
    assert errors[0].job == "research" and errors[0].exc_info[0] is RuntimeError
    assert [(kind, fields["job"]) for kind, _, fields in raised] == [("run_failed", "research")] * 2
    assert raised[0][1] == "Scheduled job research failed: RuntimeError: disk full"
    assert run_due(config, "research", now=at(2024, 11, 27, 16, 31)) == 1, "--run-due exits 1 on a failed run"
    assert len(raised) == 3
    alerted = load_schedule(schedule(workspace, jobs={"research": {"call": f"{__name__}:alerted_stand_in"}}))
    assert run_due(alerted, "research", now=at(2024, 11, 29, 13, 31)) == 1
    assert len(raised) == 3 and job("research")["last_error"] == "JobFailed: run 42 failed", \
        "no second alert for a failure that raised its own"


def test_a_run_left_running_by_a_process_that_died_is_marked_failed_at_the_next_start(workspace):
    config = load_schedule(schedule(workspace))
    path = paths.reports_dir() / "schedule.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"jobs": [{"id": "research", "last_run": "2024-11-25T16:30:00-05:00",
                                          "last_status": "running", "last_error": None}], "history": []}))
    run_scheduler(config, clock=FakeClock(at(2024, 11, 26, 9)), stop_after_sessions=0)
    assert job("research")["last_status"] == "failed"
    assert job("research")["last_error"] == ("the process running it since 2024-11-25T16:30:00-05:00 stopped before "
                                             "it finished")
    assert job("research")["next_run"] == "2024-11-26T16:30:00-05:00" and CALLS == []


# ---------------------------------------------------------------- one run at a time


def test_a_second_run_of_a_job_while_one_runs_is_skipped_as_locked(workspace):
    config = load_schedule(schedule(workspace, jobs={"research": {"call": f"{__name__}:blocking_stand_in"}}))
    due = at(2024, 11, 26, 16, 31)
    first = threading.Thread(target=run_due, args=(config, "research", due))
    first.start()
    assert STARTED.wait(10)
    assert run_due(config, "research", now=due) == 0
    RELEASE.set()
    first.join(10)
    assert [name for name, _ in CALLS] == ["research", "index"], "one research run, then the index"
    skipped, succeeded = events("research", "skipped"), events("research", "succeeded")
    assert len(skipped) == 1 and len(succeeded) == 1
    assert skipped[0]["detail"].startswith(f"locked: another run of research holds {lock_path('research')} "
                                           f"(pid {os.getpid()} since 2024-11-26T16:31:00-05:00)")
    assert job("research")["last_status"] == "succeeded"


# ---------------------------------------------------------------- stopping on a signal


def start_scheduler(workspace: Path, schedule_path: Path, clock_start: dt.datetime | None) -> subprocess.Popen:
    """``run_scheduler`` in a child process (on a FakeClock from ``clock_start``, or the wall clock)."""
    script = ("import sys, datetime as dt\n"
              "from research_lib.scheduler import FakeClock, load_schedule, run_scheduler\n"
              "clock = FakeClock(dt.datetime.fromisoformat(sys.argv[2])) if len(sys.argv) > 2 else None\n"
              "sys.exit(run_scheduler(load_schedule(sys.argv[1]), clock=clock))\n")
    args = [sys.executable, "-c", script, str(schedule_path)] + ([clock_start.isoformat()] if clock_start else [])
    env = {**os.environ, "SPARTAN_HOME": str(workspace), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_at_its_default)


def _ctrl_c_at_its_default() -> None:
    """In the scheduler's process before it runs: Ctrl-C at its default, as typed at a terminal (a test run
    started with & from a non-interactive shell would otherwise hand it down ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(condition, seconds: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the scheduler did not get there: {process.communicate()[1][-3000:]}")
        time.sleep(0.05)


def lock_is_free(name: str) -> bool:
    with open(lock_path(name), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_sigterm_during_a_job_abandons_it_releases_its_lock_writes_the_record_and_exits_0(workspace):
    path = schedule(workspace, jobs={"research": {"call": f"{__name__}:slow_stand_in"}, "trade": {"enabled": False}})
    process = start_scheduler(workspace, path, at(2024, 11, 26, 16))
    started = workspace / "data" / "slow.started"
    wait_for(started.is_file, 60, process)
    assert not lock_is_free("research")
    # Another process (this one) asks for the same job: skipped, the lock is held across processes.
    assert run_due(load_schedule(path), "research", now=at(2024, 11, 26, 16, 31)) == 0
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0, process.communicate()[1][-3000:]
    assert lock_is_free("research")
    research = job("research")
    assert research["last_status"] == "failed"
    assert research["last_error"] == "interrupted by SIGTERM: the run was abandoned"
    assert research["next_run"] == "2024-11-26T16:30:00-05:00", "the abandoned run is due again at the next start"
    assert stored_next_runs()["research"] == at(2024, 11, 26, 16, 30)
    assert [h["status"] for h in events("research")] == ["skipped", "failed"]
    assert f"(pid {started.read_text()} since 2024-11-26T16:30:00-05:00)" in events("research")[0]["detail"]


def test_sigint_stops_an_idle_scheduler_on_the_wall_clock_and_exits_0(workspace):
    path = schedule(workspace)
    process = start_scheduler(workspace, path, None)
    wait_for((paths.reports_dir() / "schedule.json").is_file, 60, process)
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0, process.communicate()[1][-3000:]
    assert time.monotonic() - began < 5, "a sleeping scheduler stops at once"
    now = dt.datetime.now(NY)
    assert all(dt.datetime.fromisoformat(j["next_run"]) > now for j in record()["jobs"]), "from the wall clock"
    assert lock_is_free("research") and lock_is_free("trade")


# ---------------------------------------------------------------- cron


def test_the_crontab_has_a_line_per_job_for_regular_and_early_closes_in_new_york_time(workspace):
    config = load_schedule(REPO / "params" / "schedule.yaml")
    text = crontab(config, "/opt/spartan/bin/spartan")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    command = (f"cd {workspace} && mkdir -p data && /opt/spartan/bin/spartan schedule {REPO / 'params' / 'schedule.yaml'}"
               " --run-due")
    assert lines == ["CRON_TZ=America/New_York", f"SPARTAN_HOME={workspace}",
                     f"30 13,16 * * 1-5 {command} research >> data/schedule-cron.log 2>&1",
                     f"45 12,15 * * 1-5 {command} trade >> data/schedule-cron.log 2>&1"]
    assert "early closes" in text and "holidays" in text


def test_run_due_runs_a_job_only_just_after_one_of_its_calendar_times(workspace):
    config = load_schedule(schedule(workspace))
    assert run_due(config, "trade", now=at(2024, 11, 29, 15, 45)) == 0  # the regular-close line on an early close
    assert run_due(config, "trade", now=at(2024, 7, 4, 15, 45)) == 0  # a holiday
    assert run_due(config, "research", now=at(2024, 11, 27, 16, 30 + CRON_WINDOW_SECONDS // 60 + 1)) == 0  # too late
    assert CALLS == [] and not (paths.reports_dir() / "schedule.json").exists()
    assert run_due(config, "trade", now=at(2024, 11, 29, 12, 45, 30)) == 0  # the early-close line
    assert [name for name, _ in CALLS] == ["trade", "index"]
    assert job("trade")["last_run"] == "2024-11-29T12:45:30-05:00"
    assert job("trade")["next_run"] == "2024-12-02T15:45:00-05:00"
    with pytest.raises(ConfigError, match=r"Unknown job 'nope'; the schedule's jobs are \['research', 'trade', 'index'\]"):
        run_due(config, "nope")


# ---------------------------------------------------------------- the job functions


def test_the_research_job_runs_the_pipeline_on_the_workspace_params_and_does_not_alert_twice(workspace, monkeypatch):
    """The pipeline itself takes a minute (tested elsewhere): here it is replaced by a fake."""
    import research_lib.pipeline as pipeline
    from research_lib.scheduler import JobFailed, research_job

    asked = []

    def fake_pipeline(params, echo=print):
        asked.append(params)
        run_dir = workspace / "reports" / "runs" / "20241127T213000Z-smoke-abcd"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "manifest.json").write_text(json.dumps({"validation": {"passed": False}}))
        if len(asked) > 1:
            raise pipeline.StageFailed("Stage 06_validate failed: boom")
        return run_dir

    monkeypatch.setattr(pipeline, "run_pipeline", fake_pipeline)
    assert research_job("params/smoke.yaml") == "run 20241127T213000Z-smoke-abcd, gate failed"
    assert asked == [workspace / "params" / "smoke.yaml"]
    with pytest.raises(JobFailed, match="Stage 06_validate failed: boom") as failed:
        research_job("params/smoke.yaml")
    assert failed.value.alerted, "run_pipeline raised the run_failed alert already"


# ---------------------------------------------------------------- the real trade job


def test_the_real_trade_job_trades_a_promoted_strategy_one_sim_session_per_scheduled_cycle(workspace):
    from research_lib.paths import state_db
    from research_lib.trading import Ledger
    from tests.test_paper import SIM_START_ROW, promote_by_hand

    made = promote_by_hand(workspace, "trend")
    config = load_schedule(schedule(workspace, jobs={
        "research": {"enabled": False}, "trade": {"call": "research_lib.scheduler:trade_job"},
        "index": {"call": "research_lib.scheduler:index_job"}}))
    assert run_scheduler(config, clock=FakeClock(at(2024, 11, 26, 9)), stop_after_sessions=3) == 0
    sessions = [f"{d:%Y-%m-%d}" for d in made["sessions"][SIM_START_ROW:SIM_START_ROW + 3]]
    cycles = Ledger(state_db()).cycles("trend")
    assert [c["session"] for c in cycles] == sessions and all(c["finished_at"] for c in cycles)
    trades = events("trade")
    assert [h["status"] for h in trades] == ["succeeded"] * 3
    assert [h["detail"].split(" (")[0] for h in trades] == [f"trend {s} {c['status']}" for s, c in zip(sessions, cycles)]
    assert all((workspace / "reports" / "paper" / "trend" / s / "cycle.json").is_file() for s in sessions)
    assert (workspace / "reports" / "index.html").is_file() and job("index")["last_status"] == "succeeded"
    assert [j["id"] for j in record()["jobs"]] == ["trade", "index"], "a disabled job is not listed"


def test_the_trade_job_is_skipped_when_nothing_is_promoted(workspace):
    config = load_schedule(schedule(workspace, jobs={"trade": {"call": "research_lib.scheduler:trade_job"}}))
    assert run_due(config, "trade", now=at(2024, 11, 26, 15, 45)) == 0
    assert job("trade")["last_status"] == "skipped" and CALLS == [], "nothing ran, so no index either"
    assert events("trade")[0]["detail"].startswith("no promoted strategy to trade (spartan promote")


# ---------------------------------------------------------------- the command, in the background


def test_spartan_schedule_in_the_background_runs_the_jobs_on_an_accelerated_clock_and_the_dashboard_shows_them(
        workspace):
    """Issue 8's acceptance: `spartan schedule` as a background process on a fake clock runs
    research (a stand-in), real paper-trading cycles of a promoted strategy, and the index."""
    from tests.test_paper import promote_by_hand

    made = promote_by_hand(workspace)
    start = made["sessions"][20]  # the sim's first session
    path = schedule(workspace, jobs={"trade": {"call": "research_lib.scheduler:trade_job", "broker": "sim"},
                                     "index": {"call": "research_lib.scheduler:index_job"}})
    spartan = Path(sys.executable).with_name("spartan")
    env = {**os.environ, "SPARTAN_HOME": str(workspace), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([str(spartan), "schedule", str(path), "--fake-clock", f"{start:%Y-%m-%d}T09:00",
                                "--sessions", "3"], cwd=workspace, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.wait(120) == 0, process.communicate()[1][-3000:]
    jobs = {j["id"]: j for j in record()["jobs"]}
    assert jobs["trade"]["last_status"] == jobs["research"]["last_status"] == "succeeded"
    cycles = Ledger(workspace / "data" / "spartan.sqlite").cycles("trend")
    assert [c["session"] for c in cycles] == [f"{d:%Y-%m-%d}" for d in made["sessions"][20:23]]
    page = (workspace / "reports" / "index.html").read_text()
    assert "Next scheduled jobs" in page and "trend" in page and jobs["trade"]["next_run"][:10] in page


def test_a_failed_jobs_error_reaches_schedule_json_without_secrets(workspace, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-" + "canary-scheduler-0123456789")
    config = load_schedule(schedule(workspace, jobs={"research": {"call": f"{__name__}:leaky_stand_in"}}))
    run_due(config, "research", now=at(2024, 11, 26, 16, 31))
    text = (paths.reports_dir() / "schedule.json").read_text()
    assert "canary-scheduler" not in text and "***" in text


def test_a_second_scheduler_in_the_same_workspace_is_refused(workspace):
    from research_lib._io import flock
    from research_lib.scheduler import FakeClock, run_scheduler

    config = load_schedule(schedule(workspace))
    with flock(lock_path("scheduler"), blocking=False) as held:
        assert held is not None
        with pytest.raises(ConfigError, match="another `spartan schedule` is running"):
            run_scheduler(config, clock=FakeClock(at(2024, 11, 26, 9)), stop_after_sessions=1)


def test_an_accelerated_clock_keeps_its_own_job_store(workspace):
    from research_lib.scheduler import FAKE_STORE_FILE, STORE_FILE, FakeClock, run_scheduler

    config = load_schedule(schedule(workspace))
    assert run_scheduler(config, clock=FakeClock(at(2027, 3, 1, 9)), stop_after_sessions=1) == 0
    assert (paths.data_dir() / FAKE_STORE_FILE).is_file() and not (paths.data_dir() / STORE_FILE).exists()


def test_an_unreadable_job_store_is_a_clear_error(workspace):
    from research_lib.scheduler import STORE_FILE, run_scheduler

    paths.data_dir().mkdir(parents=True, exist_ok=True)
    (paths.data_dir() / STORE_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="unreadable.*move it aside"):
        run_scheduler(load_schedule(schedule(workspace)))
