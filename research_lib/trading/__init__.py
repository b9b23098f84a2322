"""Paper trading: the ledger and one crash-safe trading cycle (issue 7, in progress)."""

from research_lib.trading._cycle import CycleInputs, CycleReport, client_order_id, run_cycle
from research_lib.trading._ledger import FINAL_STATUSES, Intent, Ledger

__all__ = ["FINAL_STATUSES", "CycleInputs", "CycleReport", "Intent", "Ledger", "client_order_id", "run_cycle"]
