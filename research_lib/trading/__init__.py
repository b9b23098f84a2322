"""Paper trading: the ledger, one crash-safe trading cycle, and the session of a promoted
strategy that `spartan trade` runs (`research_lib.trading._paper`), with its report made from
the ledger's record of its cycle (`research_lib.trading._report`)."""

from research_lib.trading._cycle import CommandGone, CycleInputs, CycleReport, client_order_id, command_gone, run_cycle
from research_lib.trading._ledger import ALL_STRATEGIES, FINAL_STATUSES, INTERRUPTED, Intent, Ledger
from research_lib.trading._paper import (InvalidSession, NotPromoted, Promoted, SessionPlan, TradeLocked,
                                         TradingRefused, describe_session, describe_status, finish_reports, halt,
                                         load_promoted, parse_asof, plan_session, promoted_names, promoted_strategy,
                                         resolve_session, resume, session_done, session_refusal, session_report_dir,
                                         state_db, status, trade_lock, trade_session)

__all__ = ["ALL_STRATEGIES", "FINAL_STATUSES", "INTERRUPTED", "CommandGone", "CycleInputs", "CycleReport", "Intent",
           "InvalidSession", "Ledger", "NotPromoted", "Promoted", "SessionPlan", "TradeLocked", "TradingRefused",
           "client_order_id", "command_gone", "describe_session", "describe_status", "finish_reports", "halt",
           "load_promoted", "parse_asof", "plan_session", "promoted_names", "promoted_strategy", "resolve_session",
           "resume", "run_cycle", "session_done", "session_refusal", "session_report_dir", "state_db", "status",
           "trade_lock", "trade_session"]
