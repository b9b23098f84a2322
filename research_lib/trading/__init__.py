"""Paper trading of a promoted strategy, one session at a time: the ledger, one crash-safe
trading cycle, and the session `spartan trade` runs.

- ``_ledger``: the SQLite ledger (intents before orders, cycles, equity, the kill switch);
- ``_cycle``: one crash-safe cycle (`run_cycle`): reconcile, risk checks, orders; its inputs and
  report (``_inputs``), sending and cancelling (``_orders``), orders worked by an execution
  algorithm (``_working``);
- ``_tracking``: daily P&L, slippage and drift against the backtest;
- ``_quality``: the execution report per parent order (`execution_quality`);
- ``_lock``: one trade of a strategy at a time (`trade_lock`);
- ``_market``: the sim and Alpaca markets a session trades in (`open_sim`);
- ``_report_dirs``: where a session's report lives and which cycles still need theirs;
- ``_session``: which session a trade runs, and whether a session is done (`resolve_session`);
- ``_run``: one session's targets and cycle (`run_session`);
- ``_status``: `status`, `halt`, `resume` and their text.

The promoted record (`Promoted`, `load_promoted`) is `research_lib.validation.promotion`'s;
the session's report is `research_lib.reports.paper`'s, and `research_lib.stages.paper` trades
a session and writes its report. Nothing here imports the reports.
"""

import warnings
from importlib import import_module

from research_lib.trading._cycle import run_cycle
from research_lib.trading._inputs import CycleInputs, CycleReport
from research_lib.trading._orders import CommandGone, client_order_id, command_gone
from research_lib.trading._errors import InvalidSession, ReportUnwritable, TradeLocked, TradeLockUnusable, TradingRefused
from research_lib.trading._ledger import ALL_STRATEGIES, FINAL_STATUSES, INTERRUPTED, Intent, Ledger
from research_lib.trading._lock import trade_lock
from research_lib.trading._market import legacy_cost_note, traded_prices
from research_lib.trading._report_dirs import (CYCLE_FILE, mark_reported, report_dir_of, report_rebuildable,
                                               session_report_dir, unreported_cycles)
from research_lib.trading._run import run_session
from research_lib.trading._session import parse_asof, resolve_session, session_cycle, session_done, session_refusal
from research_lib.trading._status import describe_session, describe_status, halt, resume, status
from research_lib.trading._quality import execution_quality
from research_lib.trading._tracking import daily_pnl, drift, expected_backtest, mean_slippage_bps, slippage

__all__ = ["ALL_STRATEGIES", "CYCLE_FILE", "FINAL_STATUSES", "INTERRUPTED", "CommandGone", "CycleInputs",
           "CycleReport", "Intent", "InvalidSession", "Ledger", "ReportUnwritable", "TradeLockUnusable",
           "TradeLocked", "TradingRefused", "client_order_id", "command_gone", "daily_pnl", "describe_session",
           "describe_status", "drift", "execution_quality", "expected_backtest", "halt", "legacy_cost_note", "mark_reported",
           "mean_slippage_bps", "parse_asof", "report_dir_of", "report_rebuildable", "resolve_session", "resume",
           "run_cycle", "run_session", "session_cycle", "session_done", "session_refusal", "session_report_dir",
           "slippage", "status", "trade_lock", "traded_prices", "unreported_cycles"]

# Names this package had before issue 14. The promoted record and the state database moved
# below trading: they still resolve, with a DeprecationWarning. The session runner moved above it
# (it also writes the report): asking for it here says where it is.
_MOVED_DOWN = {**dict.fromkeys(("Promoted", "NotPromoted", "load_promoted", "promoted_names", "promoted_strategy"),
                               "research_lib.validation.promotion"), "state_db": "research_lib.paths"}
_MOVED_UP = dict.fromkeys(("trade_session", "plan_session", "SessionPlan", "finish_reports"), "research_lib.stages.paper")


def __getattr__(name: str):
    if name in _MOVED_DOWN:
        warnings.warn(f"research_lib.trading.{name} moved to {_MOVED_DOWN[name]}.{name}; import it from there",
                      DeprecationWarning, stacklevel=2)
        return getattr(import_module(_MOVED_DOWN[name]), name)
    if name in _MOVED_UP:
        raise AttributeError(f"research_lib.trading.{name} moved to {_MOVED_UP[name]}.{name}; import it from there")
    raise AttributeError(f"module 'research_lib.trading' has no attribute {name!r}")
