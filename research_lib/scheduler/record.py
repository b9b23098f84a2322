"""Running one job: its lock, the record ``reports/schedule.json``, the log lines and the alert.

One run per job at a time
    A run holds ``data/locks/<job>.lock`` (``fcntl.flock``, not blocking); a run that finds it
    held (a second scheduler, a cron run, an overlapping run) is recorded ``skipped`` ("locked:
    ..."). Jobs run one after another in the caller's main thread (``max_instances`` is 1).

The record: ``reports/schedule.json``, rewritten after every change (the dashboard reads it)
    ``{"updated_at", "exchange", "timezone", "jobs": [{"id", "name", "next_run", "last_run",
    "last_status", "last_error"}], "history": [{"job", "at", "status", "detail"}]}``, the last
    `HISTORY_LENGTH` events. Each change is read, merged and written under a lock, so several
    processes add to one record. A failed run is logged at ERROR with the job id and the
    exception, recorded, and raises a ``run_failed`` alert (`research_lib.alerts`, when present);
    it never stops the scheduler.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from typing import Any, Callable

from apscheduler.util import ref_to_obj

from research_lib import paths
from research_lib._io import atomic_write_bytes, flock, lock_path
from research_lib.logs import redact
from research_lib.scheduler.clock import Clock, Stopper, iso
from research_lib.scheduler.jobs import JobSkipped, job_specs
from research_lib.scheduler.settings import JOB_IDS, ScheduleConfig

log = logging.getLogger("spartan.scheduler")

STATUS_FILE = "schedule.json"  # under reports/
HISTORY_LENGTH = 50


class Record:
    """``reports/schedule.json`` (see the module docstring). ``next_runs`` gives each job's next
    run time (from the job store, or from the calendar for a cron run)."""

    def __init__(self, config: ScheduleConfig, clock: Clock,
                 next_runs: Callable[[], dict[str, dt.datetime | None]]):
        self.config, self.clock, self.next_runs = config, clock, next_runs
        self.path = paths.reports_dir() / STATUS_FILE

    def read(self) -> dict:
        try:
            state = json.loads(self.path.read_text())
            return state if isinstance(state, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.warning("%s could not be read (%s); starting a new record", self.path, err)
            return {}

    def update(self, job_id: str | None = None, *, status: str | None = None, at: dt.datetime | None = None,
               detail: str = "", error: str | None = None, history_only: bool = False) -> None:
        """Record ``status`` of ``job_id`` (``at``: when the run started or the event happened), or
        only refresh the next runs; then rewrite the file. Every status but ``running`` adds to the
        history; ``history_only`` leaves the job's last run as it is (another process's, say)."""
        tz = self.config.tz
        detail, error = redact(detail), None if error is None else redact(error)  # the dashboard shows these
        with flock(lock_path("schedule.json"), blocking=True):
            state = self.read()
            known = {j.get("id"): j for j in state.get("jobs", []) if isinstance(j, dict)}
            history = [h for h in state.get("history", []) if isinstance(h, dict)]
            if job_id is not None:
                entry = known.setdefault(job_id, {})
                if not history_only:
                    entry.update(last_status=status, last_error=error)
                if status in ("running", "succeeded", "failed"):
                    entry["last_run"] = iso(at, tz)
                if status != "running":
                    history.append({"job": job_id, "at": iso(at, tz), "status": status, "detail": detail})
            upcoming = self.next_runs()
            jobs = [{"id": spec.job_id, "name": spec.name, "next_run": iso(upcoming.get(spec.job_id), tz),
                     **{k: known.get(spec.job_id, {}).get(k) for k in ("last_run", "last_status", "last_error")}}
                    for spec in job_specs(self.config).values()]
            state = {"updated_at": iso(self.clock.now(), tz), "exchange": self.config.exchange,
                     "timezone": self.config.timezone, "jobs": jobs, "history": history[-HISTORY_LENGTH:]}
            atomic_write_bytes(self.path, json.dumps(state, indent=2).encode())

    def settle_abandoned(self) -> None:
        """Jobs recorded ``running`` whose lock nobody holds: their process died during the run."""
        for entry in self.read().get("jobs", []):
            if isinstance(entry, dict) and entry.get("last_status") == "running" and entry.get("id") in JOB_IDS:
                with flock(lock_path(entry["id"]), blocking=False) as fd:
                    if fd is not None:
                        error = f"the process running it since {entry.get('last_run')} stopped before it finished"
                        self.update(entry["id"], status="failed", at=self.clock.now(), detail=error, error=error)


def alert_job_failed(job_id: str, error: str, at: str | None) -> None:
    """A ``run_failed`` alert through `research_lib.alerts`, if that module is installed."""
    try:  # looked up at each alert, so that a missing (or replaced) alerts module is honoured
        from research_lib.alerts import alert
    except ImportError:
        return
    try:
        alert("run_failed", f"Scheduled job {job_id} failed: {error}", key=f"schedule:{job_id}", job=job_id, at=at)
    except Exception:  # an alert that cannot be raised must not stop the scheduler
        log.exception("the run_failed alert for job %s could not be raised", job_id)


def fallback_logging() -> None:
    """INFO lines on stderr when nothing else configured logging (research_lib.logs does)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class Runner:
    """Runs one job: under its lock, recorded before and after; a failure is caught, logged,
    recorded and alerted. Only a stop (`SchedulerStopped`, KeyboardInterrupt) propagates."""

    def __init__(self, config: ScheduleConfig, record: Record, clock: Clock, stopper: Stopper):
        self.config, self.record, self.clock, self.stopper = config, record, clock, stopper

    def run(self, job_id: str, func: Callable[..., Any], kwargs: dict, scheduled: dt.datetime | None = None, *,
            announce: bool = True) -> str:
        """Run ``func(**kwargs)`` as ``job_id``; return its status. ``announce``: record it
        ``running`` while it runs."""
        started, tz = self.clock.now(), self.config.tz
        with flock(lock_path(job_id), blocking=False, holder=f"pid {os.getpid()} since {iso(started, tz)}") as fd:
            if fd is None:
                holder = lock_path(job_id).read_text().strip() or "another process"
                detail = f"locked: another run of {job_id} holds {lock_path(job_id)} ({holder})"
                log.warning("%s skipped: %s", job_id, detail, extra={"job": job_id})
                self.record.update(job_id, status="skipped", at=started, detail=detail, history_only=True)
                return "skipped"
            if announce:
                self.record.update(job_id, status="running", at=started)
            log.info("%s started%s", job_id, f" (due {iso(scheduled, tz)})" if scheduled else "", extra={"job": job_id})
            timer = time.perf_counter()
            try:
                with self.stopper.interruptible():
                    outcome = func(**kwargs)
            except JobSkipped as why:
                status, detail, error = "skipped", str(why), None
            except KeyboardInterrupt:
                error = f"interrupted by {self.stopper.signal or 'KeyboardInterrupt'}: the run was abandoned"
                log.warning("%s %s", job_id, error, extra={"job": job_id})
                self.record.update(job_id, status="failed", at=started, detail=error, error=error)
                raise
            except Exception as err:  # whatever a job raises is recorded; the scheduler goes on
                status, error = "failed", f"{type(err).__name__}: {err}"
                detail = error
                log.error("job %s failed: %s", job_id, error, exc_info=True, extra={"job": job_id})
                if not getattr(err, "alerted", False):
                    alert_job_failed(job_id, error, iso(started, tz))
            else:
                status, detail, error = "succeeded", str(outcome or "done"), None
            detail = f"{detail} ({time.perf_counter() - timer:.1f} s)"
            log.info("%s %s: %s", job_id, status, detail, extra={"job": job_id, "status": status})
            self.record.update(job_id, status=status, at=started, detail=detail, error=error)
            return status

    def missed(self, job_id: str, times: list[dt.datetime], *, running: int, grace_seconds: float | None,
               upcoming: dt.datetime | None) -> None:
        """Record the runs of ``times`` as missed; ``running`` of them are about to run late."""
        tz = self.config.tz
        if running:
            then = "coalesced into one run now" if running < len(times) else "run now, late"
        else:
            then = f"later than misfire_grace_seconds ({grace_seconds} s), not run; next run {iso(upcoming, tz)}"
        detail = (f"missed {len(times)} run(s) at {', '.join(iso(t, tz) for t in times)} (the scheduler was "
                  f"stopped or busy); {then}")
        log.warning("%s %s", job_id, detail, extra={"job": job_id, "status": "missed"})
        self.record.update(job_id, status="missed", at=self.clock.now(), detail=detail)

    def follow_up(self, ran: set[str]) -> None:
        """The index job, after a run of a job it follows."""
        index = self.config.jobs.index
        if index.enabled and ran & set(index.after):
            # not announced: the dashboard it renders would always show the index job running
            self.run("index", ref_to_obj(index.call), {}, announce=False)
