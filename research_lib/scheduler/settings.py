"""``params/schedule.yaml``: the exchange whose sessions are followed, and the jobs.

What runs when (read by `load_schedule`)
    ``research``  `research_lib.pipeline.run_pipeline` on ``jobs.research.params``,
                  ``minutes_after_close`` after the close of every session;
    ``trade``     one paper-trading cycle (``asof`` None: the sim moves one session) of every
                  promoted strategy, or of the listed ones, ``minutes_before_close`` before the close;
    ``index``     `research_lib.reports.build_index`, after every run of the jobs it follows.
    Each job's ``call`` names a module-level function, ``module:function``; the defaults are
    this package's (``research_lib.scheduler:research_job``), and users' files spell them so.
    Times are tz-aware, shown in ``timezone``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.util import ref_to_obj
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from research_lib import paths
from research_lib.config import load_config
from research_lib.data import calendar_error
from research_lib.errors import ConfigError
from research_lib.params import StrictModel, describe_errors, read_mapping

JOB_IDS: tuple[str, ...] = ("research", "trade", "index")


class _Job(StrictModel):
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


class Jobs(StrictModel):
    research: ResearchJob = Field(default_factory=ResearchJob)
    trade: TradeJob = Field(default_factory=TradeJob)
    index: IndexJob = Field(default_factory=IndexJob)


class ScheduleConfig(StrictModel):
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
        reason = calendar_error(value, nullable=False)  # a schedule follows an exchange: null is no choice here
        if reason:
            raise ValueError(reason)
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
    raw = read_mapping(path, "Schedule file")
    try:
        config = ScheduleConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe_errors(err, f"Invalid schedule in {path}:", ScheduleConfig)) from None
    research = config.jobs.research
    if research.enabled:
        try:
            load_config(in_workspace(research.params))
        except ConfigError as err:
            raise ConfigError(f"Invalid schedule in {path}: jobs.research.params {research.params!r}: {err}") from None
    config._source = path.resolve()
    return config


def in_workspace(path: str | Path) -> Path:
    """``path``, a relative one taken from the workspace root."""
    path = Path(path)
    return path if path.is_absolute() else paths.workspace_root() / path
