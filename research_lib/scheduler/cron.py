"""Cron instead of `spartan schedule`: the crontab (`crontab`) and the calendar check of each line (`run_due`).

cron knows neither holidays nor early closes. Each crontab line fires at every local time a
job can be due (regular and early closes) on trading weekdays and calls ``spartan schedule
--run-due JOB``, which asks the calendar and runs the job only within `CRON_WINDOW_SECONDS`
after one of its times, and exits quietly otherwise. The run is locked, recorded and alerted
as the scheduler's runs are.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from pathlib import Path

from apscheduler.util import ref_to_obj

from research_lib import paths
from research_lib.errors import ConfigError
from research_lib.scheduler.clock import FakeClock, Stopper, WallClock, elapsed, iso
from research_lib.scheduler.jobs import job_specs, with_index
from research_lib.scheduler.record import Record, Runner, fallback_logging
from research_lib.scheduler.settings import JOB_IDS, ScheduleConfig

log = logging.getLogger("spartan.scheduler")

CRON_WINDOW_SECONDS = 600  # `--run-due` runs a job only this long after one of its times


def run_due(config: ScheduleConfig, job_id: str, now: dt.datetime | None = None) -> int:
    """Run ``job_id`` if one of its calendar times lies within `CRON_WINDOW_SECONDS` before ``now``
    (default: the wall clock), then the index if it follows the job; otherwise log and do nothing.
    ``index`` runs whenever asked. Returns 0, or 1 if the run failed or was interrupted."""
    if job_id not in JOB_IDS:
        raise ConfigError(f"Unknown job {job_id!r}; the schedule's jobs are {list(JOB_IDS)}.")
    specs = job_specs(config)
    spec = specs.get(job_id)
    if spec is None:
        log.info("%s is disabled in the schedule (jobs.%s.enabled: false); nothing to do", job_id, job_id)
        return 0
    fallback_logging()
    clock = WallClock(config.tz) if now is None else FakeClock(now if now.tzinfo else now.replace(tzinfo=config.tz))
    now = clock.now()
    scheduled = None
    if spec.trigger is not None:
        scheduled = spec.trigger.previous_fire_time(now)
        if scheduled is None or elapsed(scheduled, now) > CRON_WINDOW_SECONDS:
            log.info("%s is not due at %s (next run %s); nothing to do", job_id, iso(now, config.tz),
                     iso(spec.trigger.get_next_fire_time(now, now), config.tz))
            return 0
    stopper = Stopper()
    triggers = {s.job_id: s.trigger for s in specs.values() if s.trigger is not None}
    record = Record(config, clock, lambda: with_index(
        {j: t.get_next_fire_time(clock.now(), clock.now()) for j, t in triggers.items()}, config))
    runner = Runner(config, record, clock, stopper)
    with stopper.installed():
        try:
            status = runner.run(job_id, ref_to_obj(spec.call), spec.kwargs, scheduled)
            if status in ("succeeded", "failed"):
                runner.follow_up({job_id})
        except KeyboardInterrupt:
            return 1
    return 1 if status == "failed" else 0


def crontab(config: ScheduleConfig, spartan_path: str | Path) -> str:
    """The crontab equivalent to the schedule: one line per job and minute of the hour, at every
    local time the job can be due (regular and early closes) on trading weekdays, each calling
    ``spartan schedule SCHEDULE --run-due JOB``, which checks the calendar (see `run_due`)."""
    root = paths.workspace_root()
    schedule = config.source or root / "params" / "schedule.yaml"
    around = dt.datetime.now(config.tz)
    tz = config.timezone
    lines = [
        f"# Spartan schedule for cron, from {schedule} (spartan schedule --print-crontab).",
        "# cron knows neither holidays nor early closes: each job has a line for every time it can be due on",
        f"# {config.exchange} (the earlier hour is for early closes), and `--run-due` asks the exchange calendar: it",
        f"# runs the job only within {CRON_WINDOW_SECONDS // 60} minutes after its time that day, and exits quietly "
        "on holidays",
        "# and on the line that does not apply that day. The index is rebuilt after each job. cron does not catch",
        "# up missed runs (the machine was off); `spartan schedule` does.",
        f"# Times are in {tz}: CRON_TZ is honoured by cronie; if your cron ignores it, run the machine",
        f"# in {tz} or convert the hours (mind daylight saving time).",
        f"CRON_TZ={tz}",
        f"SPARTAN_HOME={root}",
    ]
    command = (f"cd {shlex.quote(str(root))} && mkdir -p data && {shlex.quote(str(spartan_path))} schedule "
               f"{shlex.quote(str(schedule))} --run-due")
    for spec in job_specs(config).values():
        if spec.trigger is None:
            continue
        times, weekdays = spec.trigger.local_times(around)
        lines.append(f"# {spec.job_id}: {spec.name}")
        for minute in sorted({m for _, m in times}):
            hours = ",".join(str(h) for h in sorted(h for h, m in times if m == minute))
            lines.append(f"{minute} {hours} * * {_cron_days(weekdays)} {command} {spec.job_id} "
                         ">> data/schedule-cron.log 2>&1")
    return "\n".join(lines) + "\n"


def _cron_days(days: set[int]) -> str:
    """Cron weekdays (0 = Sunday) as ranges: {1, 2, 3, 4, 5} -> '1-5'."""
    ordered, parts = sorted(days), []
    for day in ordered:
        if parts and day == parts[-1][1] + 1:
            parts[-1][1] = day
        else:
            parts.append([day, day])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in parts) or "*"
