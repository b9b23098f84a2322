"""`spartan schedule`: research after the close and paper trading before it, on the exchange calendar.

What runs when (``params/schedule.yaml``, read by `load_schedule`)
    ``research``  `research_lib.pipeline.run_pipeline` on ``jobs.research.params``,
                  ``minutes_after_close`` after the close of every session;
    ``trade``     one paper-trading cycle (`research_lib.trading.trade_session`, ``asof`` None:
                  the sim moves one session) of every promoted strategy, or of the listed ones,
                  ``minutes_before_close`` before the close;
    ``index``     `research_lib.reports.build_index`, after every run of the jobs it follows.
    Times come from the session closes of exchange_calendars: weekends and holidays have no
    session, and an early close moves the jobs with it (the day after Thanksgiving closes at
    13:00: research 13:30, trade 12:45). Times are tz-aware, shown in ``timezone``.

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

One run per job at a time
    A run holds ``data/locks/<job>.lock`` (``fcntl.flock``, not blocking); a run that finds it
    held (a second scheduler, a cron run, an overlapping run) is recorded ``skipped`` ("locked:
    ..."). Jobs run one after another in the scheduler's main thread (``max_instances`` is 1).
    The trade job trades each strategy under its trade lock (`research_lib.trading.trade_lock`,
    taken by `trade_session`): while a `spartan trade` of a strategy runs, the job's cycle of
    that strategy is refused (the job fails and alerts) rather than run beside it.

The record: ``reports/schedule.json``, rewritten after every change (the dashboard reads it)
    ``{"updated_at", "exchange", "timezone", "jobs": [{"id", "name", "next_run", "last_run",
    "last_status", "last_error"}], "history": [{"job", "at", "status", "detail"}]}``, the last
    `HISTORY_LENGTH` events. Each change is read, merged and written under a lock, so several
    processes add to one record. A failed run is logged at ERROR with the job id and the
    exception, recorded, and raises a ``run_failed`` alert (`research_lib.alerts`, when present);
    it never stops the scheduler.

Stopping
    SIGTERM or SIGINT abandons the running job (it sees a `SchedulerStopped`, a
    KeyboardInterrupt, so its own clean-up runs; it is recorded failed and due again at the next
    start), releases its lock, writes the record, shuts the scheduler down and returns 0.

The clock, and why an accelerated clock is honest
    APScheduler's own schedulers read the wall clock inside their loop (and its executors judge
    misfires against it), so they cannot run on a test clock. `SessionScheduler` is APScheduler's
    BaseScheduler (job store, jobs, triggers, add/modify/remove) with a short loop of ours: read
    the earliest next run time from the job store, ``clock.sleep`` until it, run what is due,
    repeat. Production passes `WallClock`; tests pass `FakeClock`, whose ``sleep`` moves its time
    forward at once, so 60 sessions take as long as their jobs (a job takes no clock time).
    Everything else is the code production runs: the job store, the calendar triggers, the
    due/missed/coalesce decisions, the locks, the record and the job functions.

Cron (`crontab`, `run_due`)
    cron knows neither holidays nor early closes. Each crontab line fires at every local time a
    job can be due (regular and early closes) on trading weekdays and calls ``spartan schedule
    --run-due JOB``, which asks the calendar and runs the job only within `CRON_WINDOW_SECONDS`
    after one of its times, and exits quietly otherwise.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import json
import logging
import os
import shlex
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import sqlalchemy.exc
from apscheduler.executors.debug import DebugExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import ref_to_obj
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from research_lib import paths
from research_lib._io import atomic_write_bytes, flock, lock_path
from research_lib.errors import ConfigError, SpartanError
from research_lib.logs import redact

log = logging.getLogger("spartan.scheduler")

JOB_IDS: tuple[str, ...] = ("research", "trade", "index")
STATUS_FILE = "schedule.json"  # under reports/
STORE_FILE = "scheduler.sqlite"  # under data/
FAKE_STORE_FILE = "scheduler-fake-clock.sqlite"  # an accelerated clock's job store, apart from the real one
HISTORY_LENGTH = 50
LATE_SECONDS = 60  # a run started later than this after its time is reported as missed at that time
CRON_WINDOW_SECONDS = 600  # `--run-due` runs a job only this long after one of its times
_UTC = dt.timezone.utc


# ---------------------------------------------------------------- params/schedule.yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Job(_Strict):
    enabled: bool = Field(True, description="false: the job is not scheduled")
    call: str = Field(description="the function run, 'module:function'; it receives the job's keyword arguments")
    misfire_grace_seconds: int | None = Field(None, ge=1, description="null: the top-level misfire_grace_seconds")

    @field_validator("call")
    @classmethod
    def _importable(cls, value: str) -> str:
        default = cls.model_fields["call"].default
        try:
            target = ref_to_obj(value)
        except (ValueError, LookupError, TypeError) as err:
            raise ValueError(f"cannot be imported ({err}); give 'module:function', e.g. {default!r}") from None
        if not callable(target):
            raise ValueError(f"names {type(target).__name__}, not a function; e.g. {default!r}")
        return value


class ResearchJob(_Job):
    """The research pipeline after each session's close."""

    call: str = "research_lib.scheduler:research_job"
    params: str = Field("params/daily.yaml", description="parameter file of each run (relative: to the workspace)")
    minutes_after_close: int = Field(30, ge=0, le=720)


class TradeJob(_Job):
    """One paper-trading cycle per strategy before each session's close."""

    call: str = "research_lib.scheduler:trade_job"
    strategy: list[str] | None = Field(None, description="strategies to trade; null: every promoted strategy")
    broker: Literal["sim", "alpaca"] | None = Field("sim", description="null: each strategy's paper.broker")
    minutes_before_close: int = Field(15, ge=0, le=390)

    @field_validator("strategy", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class IndexJob(_Job):
    """The dashboard, rebuilt after the jobs it follows."""

    call: str = "research_lib.scheduler:index_job"
    after: list[Literal["research", "trade"]] = Field(["research", "trade"], description="rebuilt after these jobs")


class Jobs(_Strict):
    research: ResearchJob = Field(default_factory=ResearchJob)
    trade: TradeJob = Field(default_factory=TradeJob)
    index: IndexJob = Field(default_factory=IndexJob)


class ScheduleConfig(_Strict):
    """``params/schedule.yaml``: the exchange whose sessions are followed and the jobs."""

    exchange: str = Field("XNYS", description="exchange_calendars code, e.g. XNYS, XLON")
    timezone: str = Field("America/New_York", description="time zone of the shown times and of the crontab")
    misfire_grace_seconds: int = Field(3600, ge=1, description="a run later than this is reported missed, not run")
    coalesce: bool = Field(True, description="several missed runs of a job become one run")
    jobs: Jobs = Field(default_factory=Jobs)
    _source: Path | None = PrivateAttr(None)

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, value: str) -> str:
        import exchange_calendars as xcals

        names = xcals.get_calendar_names(include_aliases=True)
        if value not in names:
            hint = difflib.get_close_matches(value.upper(), names, n=1)
            raise ValueError("is not an exchange_calendars code; use e.g. XNYS (New York), XLON, XTKS"
                             + (f". Did you mean {hint[0]!r}?" if hint else ""))
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA time zone; use e.g. America/New_York") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def source(self) -> Path | None:
        """The file the schedule was read from (None when built in code)."""
        return self._source


def load_schedule(path: str | Path = "params/schedule.yaml") -> ScheduleConfig:
    """Read and validate a schedule file (a relative path not found here is looked up in the workspace).

    Raises
    ------
    ConfigError
        naming the file, the key, the value and the fix; also when ``jobs.research.params`` is
        not a valid parameter file.
    """
    path = Path(path)
    if not path.is_absolute() and not path.is_file():
        path = paths.workspace_root() / path
    if not path.is_file():
        raise ConfigError(f"Schedule file {path} does not exist; pass a file such as params/schedule.yaml "
                          "(the repository has one to copy).")
    from research_lib.config import read_mapping

    raw = read_mapping(path, "Schedule file")
    try:
        config = ScheduleConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, path)) from None
    research = config.jobs.research
    if research.enabled:
        from research_lib.config import load_config

        try:
            load_config(_in_workspace(research.params))
        except ConfigError as err:
            raise ConfigError(f"Invalid schedule in {path}: jobs.research.params {research.params!r}: {err}") from None
    config._source = path.resolve()
    return config


def _describe(err: ValidationError, path: Path) -> str:
    lines = [f"Invalid schedule in {path}:"]
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            model: type[BaseModel] = ScheduleConfig
            for name in problem["loc"][:-1]:
                model = model.model_fields[str(name)].annotation
            hint = difflib.get_close_matches(str(problem["loc"][-1]), list(model.model_fields), n=1)
            lines.append(f"- {where}: unknown key; valid keys here: {sorted(model.model_fields)}."
                         + (f" Did you mean {hint[0]!r}?" if hint else ""))
        else:
            lines.append(f"- {where}: {problem['msg']} (got {problem.get('input')!r}).")
    return "\n".join(lines)


def _in_workspace(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else paths.workspace_root() / path


# ---------------------------------------------------------------- the calendar trigger


@functools.lru_cache(maxsize=32)
def _fire_table(exchange: str, minutes: int, decade: int) -> pd.Series:
    """Fire times (UTC, ascending; session close + ``minutes``) -> session, for the sessions of
    ``exchange`` in the 30 years around ``decade``."""
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange_calendars' own pandas deprecation warnings
        warnings.simplefilter("ignore")
        closes = xcals.get_calendar(exchange, start=f"{decade - 10}-01-01", end=f"{decade + 19}-12-31").closes
    return pd.Series(closes.index, index=pd.DatetimeIndex(closes.array) + pd.Timedelta(minutes=minutes))


class SessionTrigger(BaseTrigger):
    """An APScheduler trigger firing ``minutes`` after (negative: before) every session close of
    ``exchange``, early closes included; fire times are given in ``timezone``.

    Stored (pickled) in the job store with the job; the calendar itself is not stored.
    """

    def __init__(self, exchange: str, minutes: int, timezone: str):
        self.exchange, self.minutes, self.timezone = exchange, int(minutes), timezone

    def __eq__(self, other: object) -> bool:  # is the stored schedule the configured one?
        return isinstance(other, SessionTrigger) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"SessionTrigger({self.exchange!r}, {self.minutes:+d} min from the close, {self.timezone!r})"

    def _fires(self, when: dt.datetime) -> pd.Series:
        """Fire times (UTC, ascending) -> session, for the sessions around ``when``."""
        return _fire_table(self.exchange, self.minutes, when.astimezone(_UTC).year // 10 * 10)

    def _local(self, stamp: pd.Timestamp) -> dt.datetime:
        return stamp.tz_convert(ZoneInfo(self.timezone)).to_pydatetime()

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        """The first fire time after ``previous_fire_time``, or at or after ``now`` when there is none."""
        start = previous_fire_time + dt.timedelta(microseconds=1) if previous_fire_time else now
        fires = self._fires(start)
        i = fires.index.searchsorted(pd.Timestamp(start).tz_convert(_UTC), side="left")
        return self._local(fires.index[i]) if i < len(fires) else None

    def previous_fire_time(self, now: dt.datetime) -> dt.datetime | None:
        """The last fire time at or before ``now``."""
        fires = self._fires(now)
        i = fires.index.searchsorted(pd.Timestamp(now).tz_convert(_UTC), side="right")
        return self._local(fires.index[i - 1]) if i > 0 else None

    def session_of(self, fire_time: dt.datetime) -> dt.date:
        """The session of ``fire_time`` (of the first fire time at or after it)."""
        fires = self._fires(fire_time)
        i = fires.index.searchsorted(pd.Timestamp(fire_time).tz_convert(_UTC), side="left")
        return fires.iloc[min(i, len(fires) - 1)].date()

    def local_times(self, around: dt.datetime, days: int = 400) -> tuple[set[tuple[int, int]], set[int]]:
        """The (hour, minute) pairs in ``timezone`` and the cron weekdays (0 = Sunday) of the fire
        times within ``days`` of ``around``: what a crontab must cover."""
        fires = self._fires(around)
        window = abs(fires.index - pd.Timestamp(around).tz_convert(_UTC)) <= pd.Timedelta(days=days)
        local = fires.index[window].tz_convert(ZoneInfo(self.timezone))
        return set(zip(local.hour, local.minute)), set(local.day_of_week.map(lambda d: (d + 1) % 7))


# ---------------------------------------------------------------- the jobs


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
        run_dir = run_pipeline(_in_workspace(params), echo=log.debug)  # the pipeline logs its stages itself
    except StageFailed as err:  # run_pipeline has raised its own run_failed alert
        raise JobFailed(str(err), alerted=True) from err
    gate = load_manifest(run_dir).get("validation")
    return f"run {run_dir.name}" + (f", gate {'passed' if gate['passed'] else 'failed'}" if gate else "")


def trade_job(strategy: list[str] | None = None, broker: str | None = None) -> str:
    """One paper-trading cycle of each strategy (None: every promoted one) on ``broker``, each
    under the strategy's trade lock (as `spartan trade`)."""
    from research_lib.trading import promoted_names, trade_session

    names = strategy or promoted_names()
    if not names:
        raise JobSkipped("no promoted strategy to trade (spartan promote reports/runs/<run_id>)")
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
class _Spec:
    """A configured job: what runs (``call`` with ``kwargs``) and when (``trigger``; None: after others)."""

    job_id: str
    name: str
    call: str
    kwargs: dict
    trigger: SessionTrigger | None
    grace_seconds: int


def _specs(config: ScheduleConfig) -> dict[str, _Spec]:
    """The enabled jobs of ``config``, by id."""
    research, trade, index = config.jobs.research, config.jobs.trade, config.jobs.index
    grace = lambda job: job.misfire_grace_seconds or config.misfire_grace_seconds  # noqa: E731
    at_close = lambda minutes: SessionTrigger(config.exchange, minutes, config.timezone)  # noqa: E731
    specs = {}
    if research.enabled:
        specs["research"] = _Spec(
            "research", f"research pipeline on {research.params}, {research.minutes_after_close} min after the close",
            research.call, {"params": research.params}, at_close(research.minutes_after_close), grace(research))
    if trade.enabled:
        who = ", ".join(trade.strategy) if trade.strategy else "every promoted strategy"
        specs["trade"] = _Spec(
            "trade", f"paper trading of {who} on {trade.broker or 'its own broker'}, "
                     f"{trade.minutes_before_close} min before the close",
            trade.call, {"strategy": trade.strategy, "broker": trade.broker}, at_close(-trade.minutes_before_close),
            grace(trade))
    if index.enabled:
        specs["index"] = _Spec("index", f"dashboard rebuild after {' and '.join(index.after)}", index.call, {}, None,
                               grace(index))
    return specs


def next_runs(config: ScheduleConfig, after: dt.datetime, count: int = 10) -> list[tuple[str, dt.datetime]]:
    """The next ``count`` scheduled runs strictly after ``after`` (naive: in the schedule's time
    zone), as ``(job_id, time)`` in time order, from the calendar alone. The index job is not
    listed: it runs after the jobs it follows."""
    after = after if after.tzinfo else after.replace(tzinfo=config.tz)
    triggers = {s.job_id: s.trigger for s in _specs(config).values() if s.trigger is not None}
    upcoming = {job_id: trigger.get_next_fire_time(after, after) for job_id, trigger in triggers.items()}
    runs = []
    while len(runs) < count and any(upcoming.values()):
        job_id = min((j for j in upcoming if upcoming[j]), key=lambda j: (upcoming[j], j))
        runs.append((job_id, upcoming[job_id]))
        upcoming[job_id] = triggers[job_id].get_next_fire_time(upcoming[job_id], upcoming[job_id])
    return runs


def _with_index(runs: dict[str, dt.datetime | None], config: ScheduleConfig) -> dict[str, dt.datetime | None]:
    """``runs`` plus the index's next run: the earliest of the jobs it follows."""
    if config.jobs.index.enabled:
        followed = [runs[j] for j in config.jobs.index.after if runs.get(j)]
        runs = {**runs, "index": min(followed) if followed else None}
    return runs


def split_due(times: list[dt.datetime], now: dt.datetime, *, coalesce: bool,
              grace_seconds: float | None) -> tuple[list[dt.datetime], list[dt.datetime]]:
    """``(to_run, missed)`` of a job's due fire times ``times`` (ascending, all at or before ``now``).

    With ``coalesce`` only the latest may run; a time more than ``grace_seconds`` old does not
    run. Missed: the times that do not run, and those that run more than `LATE_SECONDS` late.
    """
    candidates = times[-1:] if coalesce else times
    to_run = [t for t in candidates if grace_seconds is None or _elapsed(t, now) <= grace_seconds]
    missed = [t for t in times if t not in to_run or _elapsed(t, now) > LATE_SECONDS]
    return to_run, missed


# ---------------------------------------------------------------- clocks and stopping


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    def sleep(self, seconds: float) -> None: ...


class WallClock:
    """The real time in ``tz``. Sleeps at most a minute at a time: the loop then re-reads the job
    store, so a suspended machine or a changed system clock cannot make it oversleep."""

    def __init__(self, tz: dt.tzinfo):
        self.tz = tz

    def now(self) -> dt.datetime:
        return dt.datetime.now(self.tz)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(max(seconds, 0.0), 60.0))


class FakeClock:
    """A test clock: its time stands still until the scheduler sleeps, and ``sleep`` moves it
    forward at once. Kept in UTC (adding seconds to a local time would slip across daylight saving)."""

    def __init__(self, start: dt.datetime):
        if start.tzinfo is None:
            raise ValueError(f"FakeClock needs a tz-aware start, got {start!r}; e.g. "
                             "datetime(2024, 11, 25, 9, tzinfo=ZoneInfo('America/New_York'))")
        self.tz, self._utc = start.tzinfo, start.astimezone(_UTC)

    def now(self) -> dt.datetime:
        return self._utc.astimezone(self.tz)

    def sleep(self, seconds: float) -> None:
        self._utc += dt.timedelta(seconds=max(seconds, 0.0))


def _elapsed(since: dt.datetime, until: dt.datetime) -> float:
    """Seconds from ``since`` to ``until``, counted in UTC (same-zone datetimes subtract wall times)."""
    return (until.astimezone(_UTC) - since.astimezone(_UTC)).total_seconds()


def _iso(when: dt.datetime | None, tz: dt.tzinfo) -> str | None:
    return None if when is None else when.astimezone(tz).isoformat(timespec="seconds")


class SchedulerStopped(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised in the main thread while the scheduler sleeps or runs a job.
    A KeyboardInterrupt, so that the job's own clean-up treats it as an interruption."""


class _Stopper:
    """Turns SIGTERM and SIGINT into a stop request; raises `SchedulerStopped` only inside
    `interruptible` blocks (sleeping, a job), never while the record or the job store is written."""

    def __init__(self):
        self.signal: str | None = None
        self._interruptible = False

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name
        if self._interruptible:
            self._interruptible = False
            raise SchedulerStopped(self.signal)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.requested:
            raise SchedulerStopped(self.signal)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    @contextmanager
    def installed(self) -> Iterator[_Stopper]:
        """Handle SIGTERM and SIGINT for the block (main thread only), then restore the handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


# ---------------------------------------------------------------- locks and the record


class _Record:
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
                    entry["last_run"] = _iso(at, tz)
                if status != "running":
                    history.append({"job": job_id, "at": _iso(at, tz), "status": status, "detail": detail})
            upcoming = self.next_runs()
            jobs = [{"id": spec.job_id, "name": spec.name, "next_run": _iso(upcoming.get(spec.job_id), tz),
                     **{k: known.get(spec.job_id, {}).get(k) for k in ("last_run", "last_status", "last_error")}}
                    for spec in _specs(self.config).values()]
            state = {"updated_at": _iso(self.clock.now(), tz), "exchange": self.config.exchange,
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


def _alert(job_id: str, error: str, at: str | None) -> None:
    """A ``run_failed`` alert through `research_lib.alerts`, if that module is installed."""
    try:
        from research_lib.alerts import alert
    except ImportError:
        return
    try:
        alert("run_failed", f"Scheduled job {job_id} failed: {error}", key=f"schedule:{job_id}", job=job_id, at=at)
    except Exception:  # an alert that cannot be raised must not stop the scheduler
        log.exception("the run_failed alert for job %s could not be raised", job_id)


class _Runner:
    """Runs one job: under its lock, recorded before and after; a failure is caught, logged,
    recorded and alerted. Only a stop (`SchedulerStopped`, KeyboardInterrupt) propagates."""

    def __init__(self, config: ScheduleConfig, record: _Record, clock: Clock, stopper: _Stopper):
        self.config, self.record, self.clock, self.stopper = config, record, clock, stopper

    def run(self, job_id: str, func: Callable[..., Any], kwargs: dict, scheduled: dt.datetime | None = None, *,
            announce: bool = True) -> str:
        """Run ``func(**kwargs)`` as ``job_id``; return its status. ``announce``: record it
        ``running`` while it runs."""
        started, tz = self.clock.now(), self.config.tz
        with flock(lock_path(job_id), blocking=False, holder=f"pid {os.getpid()} since {_iso(started, tz)}") as fd:
            if fd is None:
                holder = lock_path(job_id).read_text().strip() or "another process"
                detail = f"locked: another run of {job_id} holds {lock_path(job_id)} ({holder})"
                log.warning("%s skipped: %s", job_id, detail, extra={"job": job_id})
                self.record.update(job_id, status="skipped", at=started, detail=detail, history_only=True)
                return "skipped"
            if announce:
                self.record.update(job_id, status="running", at=started)
            log.info("%s started%s", job_id, f" (due {_iso(scheduled, tz)})" if scheduled else "", extra={"job": job_id})
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
                    _alert(job_id, error, _iso(started, tz))
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
            then = f"later than misfire_grace_seconds ({grace_seconds} s), not run; next run {_iso(upcoming, tz)}"
        detail = (f"missed {len(times)} run(s) at {', '.join(_iso(t, tz) for t in times)} (the scheduler was "
                  f"stopped or busy); {then}")
        log.warning("%s %s", job_id, detail, extra={"job": job_id, "status": "missed"})
        self.record.update(job_id, status="missed", at=self.clock.now(), detail=detail)

    def follow_up(self, ran: set[str]) -> None:
        """The index job, after a run of a job it follows."""
        index = self.config.jobs.index
        if index.enabled and ran & set(index.after):
            # not announced: the dashboard it renders would always show the index job running
            self.run("index", ref_to_obj(index.call), {}, announce=False)


# ---------------------------------------------------------------- the scheduler


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

    def serve(self, runner: _Runner, stopper: _Stopper, stop_after_sessions: int | None = None) -> None:
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
            wait = _elapsed(self.clock.now(), first.next_run_time)
            if wait > 0:
                with stopper.interruptible():
                    self.clock.sleep(wait)
                continue
            sessions.add(session)
            self._run_due(runner, stopper)

    def _run_due(self, runner: _Runner, stopper: _Stopper) -> None:
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
    wanted = {job_id: spec for job_id, spec in _specs(config).items() if spec.trigger is not None}
    for job_id, spec in wanted.items():
        old = stored.get(job_id)
        keep = old is not None and old.trigger == spec.trigger and old.next_run_time is not None
        next_run = old.next_run_time if keep else spec.trigger.get_next_fire_time(None, now)
        if old is not None and not keep:
            log.info("%s: the schedule changed (%r, was %r); next run %s", job_id, spec.trigger, old.trigger,
                     _iso(next_run, config.tz))
        scheduler.add_job(spec.call, spec.trigger, id=job_id, name=spec.name, kwargs=spec.kwargs,
                          replace_existing=True, next_run_time=next_run, misfire_grace_time=spec.grace_seconds,
                          coalesce=config.coalesce, max_instances=1)
    for job_id in stored.keys() - wanted.keys():
        scheduler.remove_job(job_id)


def _fallback_logging() -> None:
    """INFO lines on stderr when nothing else configured logging (research_lib.logs does)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
    _fallback_logging()
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
    stopper = _Stopper()
    record = _Record(config, clock, lambda: _with_index(scheduler.next_run_times(), config))
    runner = _Runner(config, record, clock, stopper)
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
                     ", ".join(f"{j} {_iso(t, config.tz)}" for j, t in scheduler.next_run_times().items()))
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


# ---------------------------------------------------------------- cron


def run_due(config: ScheduleConfig, job_id: str, now: dt.datetime | None = None) -> int:
    """Run ``job_id`` if one of its calendar times lies within `CRON_WINDOW_SECONDS` before ``now``
    (default: the wall clock), then the index if it follows the job; otherwise log and do nothing.
    ``index`` runs whenever asked. Returns 0, or 1 if the run failed or was interrupted."""
    if job_id not in JOB_IDS:
        raise ConfigError(f"Unknown job {job_id!r}; the schedule's jobs are {list(JOB_IDS)}.")
    specs = _specs(config)
    spec = specs.get(job_id)
    if spec is None:
        log.info("%s is disabled in the schedule (jobs.%s.enabled: false); nothing to do", job_id, job_id)
        return 0
    _fallback_logging()
    clock = WallClock(config.tz) if now is None else FakeClock(now if now.tzinfo else now.replace(tzinfo=config.tz))
    now = clock.now()
    scheduled = None
    if spec.trigger is not None:
        scheduled = spec.trigger.previous_fire_time(now)
        if scheduled is None or _elapsed(scheduled, now) > CRON_WINDOW_SECONDS:
            log.info("%s is not due at %s (next run %s); nothing to do", job_id, _iso(now, config.tz),
                     _iso(spec.trigger.get_next_fire_time(now, now), config.tz))
            return 0
    stopper = _Stopper()
    triggers = {s.job_id: s.trigger for s in specs.values() if s.trigger is not None}
    record = _Record(config, clock, lambda: _with_index(
        {j: t.get_next_fire_time(clock.now(), clock.now()) for j, t in triggers.items()}, config))
    runner = _Runner(config, record, clock, stopper)
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
    for spec in _specs(config).values():
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


__all__ = ["CRON_WINDOW_SECONDS", "HISTORY_LENGTH", "JOB_IDS", "LATE_SECONDS", "Clock", "FakeClock", "JobFailed",
           "JobSkipped", "ScheduleConfig", "SchedulerStopped", "SessionScheduler", "SessionTrigger", "WallClock",
           "crontab", "index_job", "load_schedule", "lock_path", "next_runs", "research_job", "run_due",
           "run_scheduler", "split_due", "trade_job"]
