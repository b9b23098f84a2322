"""The jobs: the functions a schedule's ``call`` names, and the configured jobs with their triggers.

``research_job``, ``trade_job`` and ``index_job`` are module-level functions that users' schedule
files name as ``research_lib.scheduler:<name>``; the job store keeps that text, not the function.
A job function returns a line for the record, raises `JobSkipped` when it has nothing to do and
`JobFailed` (or anything else) when it did not do all its work.

The trade job trades each strategy under its trade lock (taken by the paper session, as
`spartan trade` does): while a `spartan trade` of a strategy runs, the job's cycle of that
strategy is refused (the job fails and alerts) rather than run beside it.

The stages the jobs run are imported when a job runs: reading a schedule or printing a crontab
does not load the pipeline (papermill, Jupyter) or the trading and reporting code.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Callable

from research_lib import paths
from research_lib.errors import SpartanError
from research_lib.scheduler.settings import ScheduleConfig, in_workspace
from research_lib.scheduler.trigger import SessionTrigger

log = logging.getLogger("spartan.scheduler")


class JobSkipped(Exception):
    """Raised by a job function that has nothing to do; recorded ``skipped`` with its message."""


class JobFailed(SpartanError):
    """A job did not do all its work. ``alerted``: an alert was already raised for it."""

    def __init__(self, message: str, *, alerted: bool = False):
        super().__init__(message)
        self.alerted = alerted


def research_job(params: str) -> str:
    """The research pipeline on ``params``; returns the run id (and the gate's verdict)."""
    from research_lib.pipeline import StageFailed, load_manifest, run_pipeline

    try:
        run_dir = run_pipeline(in_workspace(params), echo=log.debug)  # the pipeline logs its stages itself
    except StageFailed as err:  # run_pipeline has raised its own run_failed alert
        raise JobFailed(str(err), alerted=True) from err
    gate = load_manifest(run_dir).get("validation")
    return f"run {run_dir.name}" + (f", gate {'passed' if gate['passed'] else 'failed'}" if gate else "")


def paper_session() -> Callable[..., dict]:
    """The runner of one paper-trading session, ``(strategy, broker) -> {"session", "status", ...}``.

    The only place the scheduler imports it from.
    """
    from research_lib.stages.paper import trade_session

    return trade_session


def trade_job(strategy: list[str] | None = None, broker: str | None = None) -> str:
    """One paper-trading cycle of each strategy (None: every promoted one) on ``broker``, each
    under the strategy's trade lock (as `spartan trade`)."""
    from research_lib.validation.promotion import promoted_names

    names = strategy or promoted_names()
    if not names:
        raise JobSkipped("no promoted strategy to trade (spartan promote reports/runs/<run_id>)")
    trade_session = paper_session()
    done, failed = [], []
    for name in names:
        try:
            result = trade_session(name, broker)
        except Exception as err:  # one strategy's failure must not keep the others from trading
            failed.append(f"{name}: {type(err).__name__}: {err}")
            continue
        done.append(f"{name} {result['session']} {result['status']}")
    if failed:
        raise JobFailed("; ".join(failed) + (f" (traded: {'; '.join(done)})" if done else ""))
    return "; ".join(done)


def index_job() -> str:
    """Rebuild ``reports/index.html``."""
    from research_lib.reports import build_index

    return f"{build_index(paths.reports_dir()).name} rebuilt"


@dataclass(frozen=True)
class JobSpec:
    """A configured job: what runs (``call`` with ``kwargs``) and when (``trigger``; None: after others)."""

    job_id: str
    name: str
    call: str
    kwargs: dict
    trigger: SessionTrigger | None
    grace_seconds: int


def job_specs(config: ScheduleConfig) -> dict[str, JobSpec]:
    """The enabled jobs of ``config``, by id."""
    research, trade, index = config.jobs.research, config.jobs.trade, config.jobs.index
    grace = lambda job: job.misfire_grace_seconds or config.misfire_grace_seconds  # noqa: E731
    at_close = lambda minutes: SessionTrigger(config.exchange, minutes, config.timezone)  # noqa: E731
    specs = {}
    if research.enabled:
        specs["research"] = JobSpec(
            "research", f"research pipeline on {research.params}, {research.minutes_after_close} min after the close",
            research.call, {"params": research.params}, at_close(research.minutes_after_close), grace(research))
    if trade.enabled:
        who = ", ".join(trade.strategy) if trade.strategy else "every promoted strategy"
        specs["trade"] = JobSpec(
            "trade", f"paper trading of {who} on {trade.broker or 'its own broker'}, "
                     f"{trade.minutes_before_close} min before the close",
            trade.call, {"strategy": trade.strategy, "broker": trade.broker}, at_close(-trade.minutes_before_close),
            grace(trade))
    if index.enabled:
        specs["index"] = JobSpec("index", f"dashboard rebuild after {' and '.join(index.after)}", index.call, {},
                                 None, grace(index))
    return specs


def next_runs(config: ScheduleConfig, after: dt.datetime, count: int = 10) -> list[tuple[str, dt.datetime]]:
    """The next ``count`` scheduled runs strictly after ``after`` (naive: in the schedule's time
    zone), as ``(job_id, time)`` in time order, from the calendar alone. The index job is not
    listed: it runs after the jobs it follows."""
    after = after if after.tzinfo else after.replace(tzinfo=config.tz)
    triggers = {s.job_id: s.trigger for s in job_specs(config).values() if s.trigger is not None}
    upcoming = {job_id: trigger.get_next_fire_time(after, after) for job_id, trigger in triggers.items()}
    runs = []
    while len(runs) < count and any(upcoming.values()):
        job_id = min((j for j in upcoming if upcoming[j]), key=lambda j: (upcoming[j], j))
        runs.append((job_id, upcoming[job_id]))
        upcoming[job_id] = triggers[job_id].get_next_fire_time(upcoming[job_id], upcoming[job_id])
    return runs


def with_index(runs: dict[str, dt.datetime | None], config: ScheduleConfig) -> dict[str, dt.datetime | None]:
    """``runs`` plus the index's next run: the earliest of the jobs it follows."""
    if config.jobs.index.enabled:
        followed = [runs[j] for j in config.jobs.index.after if runs.get(j)]
        runs = {**runs, "index": min(followed) if followed else None}
    return runs
