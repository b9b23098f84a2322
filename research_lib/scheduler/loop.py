"""`run_scheduler`: the persistent job store and the loop that runs what is due, on a clock.

The job store
    The scheduled jobs live in APScheduler's persistent SQLAlchemyJobStore,
    ``data/scheduler.sqlite``: each holds a reference to a module-level function (the ``call``
    of its section, e.g. ``research_lib.scheduler:research_job``), its keyword arguments, its
    `SessionTrigger` and its next run time, so a restart resumes where the last process stopped.
    A job is due when its next run time has passed; its due runs are the trigger's fire times
    from there up to now. The next run time is moved past them before the job runs (as
    APScheduler does when it submits a job), so a second scheduler does not find it due again.

Missed runs
    Due runs started more than `LATE_SECONDS` after their time (the scheduler was not running,
    or busy with another job) are recorded as ``missed``, with their times. With ``coalesce``
    they become one run, started at once if the latest is at most ``misfire_grace_seconds`` late
    (per job, or the top-level value); otherwise nothing runs and the job waits for its next time.

The loop
    `SessionScheduler` is APScheduler's BaseScheduler (job store, jobs, triggers,
    add/modify/remove) with a short loop of ours: read the earliest next run time from the job
    store, ``clock.sleep`` until it, run what is due, repeat (see `research_lib.scheduler.clock`
    for why the clock is passed in). One scheduler per workspace: it holds ``data/locks/scheduler.lock``.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from apscheduler.executors.debug import DebugExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler

from research_lib import paths
from research_lib._io import flock, lock_path
from research_lib.errors import ConfigError
from research_lib.scheduler.clock import Clock, Stopper, WallClock, elapsed, iso
from research_lib.scheduler.jobs import job_specs, with_index
from research_lib.scheduler.record import Record, Runner, fallback_logging
from research_lib.scheduler.settings import ScheduleConfig

log = logging.getLogger("spartan.scheduler")

STORE_FILE = "scheduler.sqlite"  # under data/
FAKE_STORE_FILE = "scheduler-fake-clock.sqlite"  # an accelerated clock's job store, apart from the real one
LATE_SECONDS = 60  # a run started later than this after its time is reported as missed at that time


def split_due(times: list[dt.datetime], now: dt.datetime, *, coalesce: bool,
              grace_seconds: float | None) -> tuple[list[dt.datetime], list[dt.datetime]]:
    """``(to_run, missed)`` of a job's due fire times ``times`` (ascending, all at or before ``now``).

    With ``coalesce`` only the latest may run; a time more than ``grace_seconds`` old does not
    run. Missed: the times that do not run, and those that run more than `LATE_SECONDS` late.
    """
    candidates = times[-1:] if coalesce else times
    to_run = [t for t in candidates if grace_seconds is None or elapsed(t, now) <= grace_seconds]
    missed = [t for t in times if t not in to_run or elapsed(t, now) > LATE_SECONDS]
    return to_run, missed


class SessionScheduler(BaseScheduler):
    """APScheduler's BaseScheduler (job store, jobs, triggers) driven by `serve` on ``clock``
    rather than by a wall-clock loop; see the module docstring."""

    def __init__(self, clock: Clock, **options: Any):
        self.clock = clock
        super().__init__(**options)

    def shutdown(self, wait: bool = True) -> None:  # abstract in BaseScheduler
        super().shutdown(wait)

    def wakeup(self) -> None:
        """Nothing to wake: `serve` re-reads the job store after every sleep and every run."""

    def next_run_times(self) -> dict[str, dt.datetime | None]:
        return {job.id: job.next_run_time for job in self.get_jobs()}

    def serve(self, runner: Runner, stopper: Stopper, stop_after_sessions: int | None = None) -> None:
        """Sleep until the earliest next run, run what is due, repeat; until a stop is requested,
        no job is left, or the next run belongs to session ``stop_after_sessions + 1``."""
        sessions: set[dt.date] = set()
        while not stopper.requested:
            jobs = [job for job in self.get_jobs() if job.next_run_time is not None]
            if not jobs:
                log.warning("no job is scheduled (every job is disabled or paused); the scheduler stops")
                return
            first = min(jobs, key=lambda job: job.next_run_time)
            session = first.trigger.session_of(first.next_run_time)
            if stop_after_sessions is not None and session not in sessions and len(sessions) >= stop_after_sessions:
                return
            wait = elapsed(self.clock.now(), first.next_run_time)
            if wait > 0:
                with stopper.interruptible():
                    self.clock.sleep(wait)
                continue
            sessions.add(session)
            self._run_due(runner, stopper)

    def _run_due(self, runner: Runner, stopper: Stopper) -> None:
        now, ran = self.clock.now(), set()
        for job in [j for j in self.get_jobs() if j.next_run_time is not None and j.next_run_time <= now]:
            if stopper.requested:
                return
            times, upcoming = [], job.next_run_time
            while upcoming is not None and upcoming <= now:
                times.append(upcoming)
                upcoming = job.trigger.get_next_fire_time(upcoming, now)
            self.modify_job(job.id, next_run_time=upcoming)
            to_run, missed = split_due(times, now, coalesce=job.coalesce, grace_seconds=job.misfire_grace_time)
            if missed:
                runner.missed(job.id, missed, running=len(to_run), grace_seconds=job.misfire_grace_time,
                              upcoming=upcoming)
            for scheduled in to_run:
                try:
                    status = runner.run(job.id, job.func, job.kwargs, scheduled)
                except KeyboardInterrupt:
                    self.modify_job(job.id, next_run_time=scheduled)  # abandoned: due again at the next start
                    raise
                if status in ("succeeded", "failed"):
                    ran.add(job.id)
        runner.follow_up(ran)


def _install_jobs(scheduler: SessionScheduler, config: ScheduleConfig, now: dt.datetime) -> None:
    """Make the job store hold the configured jobs. A stored job whose trigger is unchanged keeps
    its next run time (in the past if runs were missed while no scheduler ran)."""
    stored = {job.id: job for job in scheduler.get_jobs()}
    wanted = {job_id: spec for job_id, spec in job_specs(config).items() if spec.trigger is not None}
    for job_id, spec in wanted.items():
        old = stored.get(job_id)
        keep = old is not None and old.trigger == spec.trigger and old.next_run_time is not None
        next_run = old.next_run_time if keep else spec.trigger.get_next_fire_time(None, now)
        if old is not None and not keep:
            log.info("%s: the schedule changed (%r, was %r); next run %s", job_id, spec.trigger, old.trigger,
                     iso(next_run, config.tz))
        scheduler.add_job(spec.call, spec.trigger, id=job_id, name=spec.name, kwargs=spec.kwargs,
                          replace_existing=True, next_run_time=next_run, misfire_grace_time=spec.grace_seconds,
                          coalesce=config.coalesce, max_instances=1)
    for job_id in stored.keys() - wanted.keys():
        scheduler.remove_job(job_id)


def run_scheduler(config: ScheduleConfig, *, clock: Clock | None = None, stop_after_sessions: int | None = None) -> int:
    """Run the schedule until SIGTERM/SIGINT (or ``stop_after_sessions`` sessions); return the exit
    code: 0 after a clean stop, 1 if the scheduler itself failed (a job's failure is recorded, not fatal).

    Parameters
    ----------
    config : from `load_schedule`.
    clock : default `WallClock` in the schedule's time zone; tests pass a `FakeClock`.
    stop_after_sessions : stop once the runs of this many sessions are done (counted from the
        first run this process makes); None: run until stopped.
    """
    fallback_logging()
    fake = clock is not None and not isinstance(clock, WallClock)
    clock = clock or WallClock(config.tz)
    paths.data_dir().mkdir(parents=True, exist_ok=True)
    with flock(lock_path("scheduler"), blocking=False) as held:
        if held is None:
            raise ConfigError(f"another `spartan schedule` is running in this workspace (it holds "
                              f"{lock_path('scheduler')}); stop it first (SIGTERM), or use cron's --run-due.")
        # A fake clock's times must never reach the real job store (a later real start would wait for them).
        store = paths.data_dir() / (FAKE_STORE_FILE if fake else STORE_FILE)
        return _serve_schedule(config, clock, store, stop_after_sessions)


def _serve_schedule(config: ScheduleConfig, clock: Clock, store: Path, stop_after_sessions: int | None) -> int:
    scheduler = SessionScheduler(
        clock, logger=log, timezone=config.tz,
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{store}")},
        executors={"default": DebugExecutor()},  # never used to run jobs: `serve` runs them in this thread
        job_defaults={"coalesce": config.coalesce, "misfire_grace_time": config.misfire_grace_seconds,
                      "max_instances": 1})
    stopper = Stopper()
    record = Record(config, clock, lambda: with_index(scheduler.next_run_times(), config))
    runner = Runner(config, record, clock, stopper)
    code = 0
    with stopper.installed():
        try:
            scheduler.start()
        except sqlalchemy.exc.DatabaseError as err:
            raise ConfigError(f"the job store {store} is unreadable ({err.orig}); move it aside: the jobs are "
                              "rebuilt from the schedule file at the next start") from None
        try:
            _install_jobs(scheduler, config, clock.now())
            record.settle_abandoned()
            record.update()
            log.info("scheduler started on %s (%s); next runs: %s", config.exchange, config.timezone,
                     ", ".join(f"{j} {iso(t, config.tz)}" for j, t in scheduler.next_run_times().items()))
            scheduler.serve(runner, stopper, stop_after_sessions)
        except KeyboardInterrupt:
            pass
        except Exception:
            log.exception("the scheduler stopped on an unexpected error")
            code = 1
        finally:
            try:
                record.update()  # next runs read from the job store before it closes
            finally:
                scheduler.shutdown(wait=False)
    log.info("scheduler stopped%s", f" by {stopper.signal}" if stopper.requested else "")
    return code
