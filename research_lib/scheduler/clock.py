"""The scheduler's clocks, the time helpers every part shares, and stopping on a signal.

The clock, and why an accelerated clock is honest
    APScheduler's own schedulers read the wall clock inside their loop (and its executors judge
    misfires against it), so they cannot run on a test clock. The scheduler's loop reads time only
    through a `Clock`: production passes `WallClock`; tests pass `FakeClock`, whose ``sleep`` moves
    its time forward at once, so 60 sessions take as long as their jobs (a job takes no clock time).
    Everything else is the code production runs.

Stopping
    SIGTERM or SIGINT abandons the running job (it sees a `SchedulerStopped`, a
    KeyboardInterrupt, so its own clean-up runs; it is recorded failed and due again at the next
    start), releases its lock, writes the record, shuts the scheduler down and returns 0.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Protocol

_UTC = dt.timezone.utc


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


def elapsed(since: dt.datetime, until: dt.datetime) -> float:
    """Seconds from ``since`` to ``until``, counted in UTC (same-zone datetimes subtract wall times)."""
    return (until.astimezone(_UTC) - since.astimezone(_UTC)).total_seconds()


def iso(when: dt.datetime | None, tz: dt.tzinfo) -> str | None:
    """``when`` in ``tz`` to the second, as the record and the log lines show times (None stays None)."""
    return None if when is None else when.astimezone(tz).isoformat(timespec="seconds")


class SchedulerStopped(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised in the main thread while the scheduler sleeps or runs a job.
    A KeyboardInterrupt, so that the job's own clean-up treats it as an interruption."""


class Stopper:
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
    def installed(self) -> Iterator[Stopper]:
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
