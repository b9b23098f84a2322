"""Execution algorithms: how a parent order is worked through a session (issue 18).

- ``schedule``: `ExecutionConfig` (``params: execution``) and `plan_schedule`, which splits a parent
  order into child slices (market, TWAP, VWAP, iceberg) that sum to it exactly, each within the
  participation cap of its bar's expected volume and with a limit price inside the band, each with
  a client order id derived from the parent's (`child_order_id`), so a crash mid-schedule can resume
  without sending any slice twice.
- ``intraday``: the intraday market the simulated broker executes on when no minute bars exist:
  a seeded path of bars consistent with the session's open, high, low, close and volume
  (`intraday_bars`), and the point-in-time intraday volume profile VWAP follows
  (`volume_profile`: past sessions only).
- ``simulate``: `simulate_execution` fills a schedule on those bars with a spread and the backtest's
  square-root impact, and measures its implementation shortfall against the arrival price.

Everything here is simulated or planned; nothing is sent. The trading cycle sends the slices.
"""

from research_lib.execution.intraday import BARS_PER_SESSION, intraday_bars, modelled_daily_bars, volume_profile
from research_lib.execution.schedule import (ALGORITHMS, ChildSlice, ExecutionConfig, child_order_id,
                                             plan_schedule)
from research_lib.execution.simulate import ExecutionResult, MarketModel, simulate_execution

__all__ = ["ALGORITHMS", "BARS_PER_SESSION", "ChildSlice", "ExecutionConfig", "ExecutionResult", "MarketModel",
           "child_order_id", "intraday_bars", "modelled_daily_bars", "plan_schedule", "simulate_execution", "volume_profile"]
