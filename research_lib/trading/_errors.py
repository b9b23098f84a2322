"""The refusals of paper trading: each says what to do, and each means nothing was sent."""

from __future__ import annotations

from research_lib.errors import ConfigError, SpartanError


class TradingRefused(SpartanError):
    """The session cannot be traded as asked (stale targets, a date the sim cannot reach...);
    nothing was sent."""


class InvalidSession(ConfigError, TradingRefused):
    """The session asked for cannot be traded by this strategy on this broker: not a date, not a
    session of its calendar, or before the last session it traded. Found before anything runs:
    a bad argument (`spartan trade` exits 2), and a refusal that sent nothing."""


class TradeLocked(TradingRefused):
    """Another trade of the strategy is running (`trade_lock`); this one ran and sent nothing."""


class TradeLockUnusable(TradingRefused):
    """The strategy's lock file cannot be opened (a folder in its place, no permission); nothing
    was run."""


class ReportUnwritable(SpartanError):
    """A session's report folder cannot hold its report (``report_dir`` a file, not writable)."""
