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
- ``fills``: how one child fills (`fill_slice`), the rule the simulator and the simulated broker share.
- ``quality``: a parent's implementation shortfall in parts and the TWAP/VWAP benchmarks it beat or missed.
- ``simulate``: `simulate_execution` fills a schedule on those bars with a spread and the backtest's
  square-root impact, and measures its implementation shortfall against the arrival price.

Everything here is simulated or planned; nothing is sent. The trading cycle sends the slices.
"""

from research_lib._lazy import lazy_exports

# Loaded on first use: the brokers take the intraday market, the fill rule and the id rules
# (`intraday`, `fills`, `ids`) without loading the scheduler and its parameters.
_WHERE = {
    **dict.fromkeys(["BARS_PER_SESSION", "intraday_bars", "modelled_daily_bars", "session_bars", "volume_profile"],
                    "intraday"),
    **dict.fromkeys(["ALGORITHMS", "ChildSlice", "ExecutionConfig", "child_order_id", "plan_schedule"], "schedule"),
    **dict.fromkeys(["MAX_CLIENT_ORDER_ID", "check_client_order_id"], "ids"),
    **dict.fromkeys(["SliceFill", "fill_slice", "span_reference"], "fills"),
    **dict.fromkeys(["ExecutionResult", "MarketModel", "simulate_execution"], "simulate"),
    **dict.fromkeys(["average_price", "beat", "shortfall_bps", "window_benchmarks"], "quality"),
}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
