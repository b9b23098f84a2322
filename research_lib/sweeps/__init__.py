"""Sweeps: any strategy written once, backtested over a grid of configurations together.

- ``engine``: `entry_exit` and `target_weights` mark a strategy function; `run_sweep` evaluates
  a grid of its configurations in batches with exactly run_backtest's semantics.
- ``indicators``: `Indicators`, the memoized indicators every configuration shares.
- ``families``: five example strategies written with the same API (moving-average crossover,
  RSI thresholds, Bollinger bands, time-series momentum, cross-sectional momentum top-N).

Example::

    from research_lib.sweeps import entry_exit, run_sweep

    @entry_exit
    def rsi_thresholds(ind, window, lower, upper):
        rsi = ind.rsi(window)
        return rsi < lower, rsi > upper

    result = run_sweep(rsi_thresholds, {"window": [7, 14], "lower": [25, 30], "upper": [70, 75]}, prices, cost_bps=10)
"""

from research_lib.sweeps import families
from research_lib.sweeps.engine import METRICS, Strategy, SweepResult, entry_exit, run_sweep, target_weights
from research_lib.sweeps.indicators import Indicators

__all__ = ["METRICS", "Indicators", "Strategy", "SweepResult", "entry_exit", "families", "run_sweep",
           "target_weights"]
