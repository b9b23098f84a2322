"""Structured logs: one JSON object per line, each carrying the run id and the stage.

Where lines go::

    reports/logs/spartan.jsonl            the workspace log, rotated (5 MB x 5 by default)
    reports/runs/<run_id>/run.log.jsonl   every line of one run, the notebook kernels' included

A line is ``{"ts", "level", "logger", "message", "run_id", "stage", ...extra fields[, "exc"]}``
with ``ts`` in UTC (ISO 8601, milliseconds); ``run_id`` and ``stage`` are ``"-"`` outside a run.
``run_logging`` and ``stage`` set them for the code they wrap, and export them (with the run
log's path) as ``SPARTAN_RUN_ID``, ``SPARTAN_STAGE`` and ``SPARTAN_RUN_LOG`` to the notebook
kernels the process starts; a kernel loads this module as an IPython extension
(``research_lib.pipeline.execute_notebook`` asks for it) and logs to the same files.

Secrets never reach a line: the values of the environment variables in ``REDACTED_NAMES``
are replaced by ``***`` in messages, exceptions and extra fields.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import logging.handlers
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from research_lib import paths
from research_lib.params import SECRET_NAMES

try:
    import fcntl
except ImportError:  # Windows: rotation is not serialized between processes
    fcntl = None

RUN_ID_ENV, STAGE_ENV, RUN_LOG_ENV = "SPARTAN_RUN_ID", "SPARTAN_STAGE", "SPARTAN_RUN_LOG"
RUN_LOG = "run.log.jsonl"
WORKSPACE_LOG = Path("logs") / "spartan.jsonl"  # under reports/
LIBRARY_LOGGERS = ("spartan", "research_lib")  # logged at INFO and above; other packages at WARNING
SMTP_PASSWORD_ENV, WEBHOOK_URL_ENV = "SPARTAN_SMTP_PASSWORD", "SPARTAN_ALERT_WEBHOOK_URL"
REDACTED = "***"
_MIN_SECRET_LEN = 8  # shorter values are not redacted (they would mangle ordinary words)

_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("spartan_run_id", default=None)
_stage: contextvars.ContextVar[str | None] = contextvars.ContextVar("spartan_stage", default=None)
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

for _name in LIBRARY_LOGGERS:  # a library's loggers never fall back to printing on stderr
    logging.getLogger(_name).addHandler(logging.NullHandler())


def redacted_names() -> tuple[str, ...]:
    """The environment variables whose values never appear in logs, alerts or reports."""
    return (*SECRET_NAMES, SMTP_PASSWORD_ENV, WEBHOOK_URL_ENV)


def redact(value: Any) -> Any:
    """``value`` with every secret from the environment replaced by ``***`` (strings, and the
    strings inside dicts, lists and tuples; anything else whose text holds a secret becomes
    that text, redacted)."""
    secrets = [os.environ[n] for n in redacted_names() if len(os.environ.get(n, "")) >= _MIN_SECRET_LEN]
    return _redact(value, secrets) if secrets else value


def _redact(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = str(value)
    return _redact(text, secrets) if any(s in text for s in secrets) else value


class RedactSecrets(logging.Filter):
    """Replace secrets in a record's message, exception text and extra fields (in place, so
    every handler after this one sees the redacted record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key in _extra_keys(record):
            record.__dict__[key] = redact(record.__dict__[key])
        return True


class RunContext(logging.Filter):
    """Stamp each record with ``run_id`` and ``stage``: set by ``run_logging`` / ``stage`` in
    this context, else inherited from the environment (a notebook kernel), else ``"-"``.
    A record logged with ``extra={"run_id": ...}`` keeps its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "run_id"):
            record.run_id = _run_id.get() or os.environ.get(RUN_ID_ENV) or "-"
        if not hasattr(record, "stage"):
            record.stage = _stage.get() or os.environ.get(STAGE_ENV) or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, run_id, stage, the extra fields
    and, for an exception, its traceback as ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "run_id": getattr(record, "run_id", "-"), "stage": getattr(record, "stage", "-"),
        }
        line.update((key, record.__dict__[key]) for key in _extra_keys(record) if key not in line)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def _extra_keys(record: logging.LogRecord) -> list[str]:
    return [key for key in record.__dict__ if key not in _STANDARD_ATTRS]


class SharedFileHandler(logging.handlers.RotatingFileHandler):
    """A JSON-lines file that several processes append to (the pipeline and its notebook
    kernels): the file is opened for each record, so a rotation by one process never leaves
    another writing into the rotated file; rotations are serialized with a lock file.
    ``max_bytes=0`` never rotates."""

    def __init__(self, path: str | Path, max_bytes: int = 0, backup_count: int = 0):
        super().__init__(path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True)
        for extra in (RunContext(), RedactSecrets()):
            self.addFilter(extra)
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            with _locked(self.baseFilename + ".lock" if self.maxBytes > 0 else None):
                super().emit(record)
        except Exception:
            self.handleError(record)
        finally:
            if self.stream is not None:
                self.stream.close()
                self.stream = None


@contextmanager
def _locked(lock_path: str | None) -> Iterator[None]:
    if lock_path is None or fcntl is None:
        yield
        return
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def configure(workspace_log: bool = True, *, max_bytes: int = 5_000_000, backup_count: int = 5) -> None:
    """Set up logging for this process; calling it again changes nothing (or re-points the
    workspace log at the current workspace).

    Parameters
    ----------
    workspace_log : also write ``reports/logs/spartan.jsonl``, rotated at ``max_bytes``
        (bytes) keeping ``backup_count`` old files (``spartan.jsonl.1`` is the newest).

    ``spartan`` and ``research_lib`` loggers log at INFO (unless given a level already),
    other packages at the root logger's level (WARNING by default). In a notebook kernel
    started inside ``run_logging`` (``SPARTAN_RUN_LOG`` is set), lines also go to the run's
    ``run.log.jsonl``.
    """
    _library_levels()
    wanted = {}
    if workspace_log:
        wanted["workspace"] = (os.path.abspath(paths.reports_dir() / WORKSPACE_LOG), max_bytes, backup_count)
    if os.environ.get(RUN_LOG_ENV) and not _handlers("run"):  # a kernel started inside run_logging
        wanted["kernel_run"] = (os.path.abspath(os.environ[RUN_LOG_ENV]), 0, 0)
    for role in ("workspace", "kernel_run"):
        for handler in _handlers(role):
            if wanted.get(role) == (handler.baseFilename, handler.maxBytes, handler.backupCount):
                wanted.pop(role)
            else:
                _remove(handler)
    for role, (path, size, count) in wanted.items():
        _add(SharedFileHandler(path, size, count), role)


def _library_levels() -> None:
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


@contextmanager
def run_logging(run_dir: str | Path, run_id: str) -> Iterator[Path]:
    """Within the block, every line carries ``run_id`` and also goes to
    ``run_dir/run.log.jsonl`` (yielded), as do the lines of notebook kernels started inside."""
    log_path = Path(run_dir) / RUN_LOG
    _library_levels()
    handler = _add(SharedFileHandler(log_path), "run")
    token = _run_id.set(run_id)
    try:
        with _environment({RUN_ID_ENV: run_id, RUN_LOG_ENV: str(log_path.absolute())}):
            yield log_path
    finally:
        _run_id.reset(token)
        _remove(handler)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Within the block, every line (a kernel's included) carries ``stage=name``."""
    token = _stage.set(name)
    try:
        with _environment({STAGE_ENV: name}):
            yield
    finally:
        _stage.reset(token)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _add(handler: logging.Handler, role: str) -> logging.Handler:
    handler.spartan_role = role
    logging.getLogger().addHandler(handler)
    return handler


def _remove(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()


def _handlers(role: str) -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "spartan_role", None) == role]


def load_ipython_extension(ipython) -> None:
    """``%load_ext research_lib.logs``; the pipeline loads it in every kernel it starts:
    JSON logs as in the ``spartan`` process (run id and stage from its environment), and
    warnings still shown in the notebook's output."""
    configure()
    if not _handlers("notebook"):
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.WARNING)
        console.addFilter(RedactSecrets())
        _add(console, "notebook")


__all__ = ["JsonFormatter", "RedactSecrets", "RunContext", "SharedFileHandler", "configure",
           "redact", "redacted_names", "run_logging", "stage"]
