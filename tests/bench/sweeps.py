"""Benchmarks of the sweep engine (issue 15), for run_bench.py: each returns
``{"result": dict, "rows": [(label, seconds)], "verdict": str}``.

- `bench_sweep_families`: RSI thresholds, Bollinger bands, time-series momentum and the MA
  crossover, 144 configurations each on the 20 bundled stocks over their full history, 10 bps,
  next-session execution: ours and vectorbt (the same signals, from the same indicator code,
  shifted one session, ``Portfolio.from_signals`` with ``fees=0.001``), first call (cold) and
  warm (best of 2).
  Sharpe per configuration against run_backtest's (a sample, through run_backtest itself) and
  against vectorbt's daily returns over the same sessions (from our first trade on).
- `bench_sweep_10k`: 10,000 RSI configurations on the same data, in a fresh process: wall time
  and peak RSS of that process (VmHWM, else ``resource.getrusage``; imports and prices included).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
START = "1992-05-12"  # as run_bench.py's sweep: the earliest start the validator accepts for the 20 stocks
FEES = 0.001
TARGET_RATIO, GOAL_RATIO = 10.0, 25.0
GRIDS = {
    "rsi_thresholds": {"window": [5, 7, 10, 14, 21, 28], "lower": [20, 25, 30, 35],
                       "upper": [60, 65, 70, 75, 80, 85]},
    "bollinger_bands": {"window": [10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150],
                        "k": [0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0]},
    "time_series_momentum": {"lookback": list(range(21, 273, 21)),
                             "holding": [1, 2, 3, 5, 10, 15, 21, 42, 63, 84, 126, 252]},
    "ma_crossover": {"fast": list(range(5, 65, 5)), "slow": list(range(70, 310, 20))},
}


def load_stocks() -> pd.DataFrame:
    from research_lib.data import DEFAULT_UNIVERSE, load_prices

    with tempfile.TemporaryDirectory(prefix="spartan-bench-") as snap:
        return load_prices("bundled", list(DEFAULT_UNIVERSE), START, snapshot_dir=snap)


def configurations(grid: dict) -> list[dict]:
    from research_lib.sweeps.engine import configurations_of

    return configurations_of(grid)


def vectorbt_signals(name: str, prices: pd.DataFrame, configs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Entries and exits (sessions x configurations*symbols): exactly the signals our family
    decides (same indicators, computed once per call), so both engines trade the same rule."""
    from research_lib.sweeps import Indicators, families

    strategy, ind = getattr(families, name), Indicators(prices)
    entries, exits = [], []
    for params in configs:
        returned = strategy(ind, **params)
        if strategy.kind == "entry_exit":
            entries.append(returned[0].to_numpy())
            exits.append(returned[1].to_numpy())
        else:  # long/flat target weights on decision sessions
            weights = returned.to_numpy()
            entries.append(weights == 1.0)
            exits.append(weights == 0.0)
    return np.concatenate(entries, axis=1), np.concatenate(exits, axis=1)


def vectorbt_sweep(name: str, prices: pd.DataFrame, configs: list[dict]):
    """vectorbt end to end: our signals, shifted one session (decided at t, executed at the close of t + 1)."""
    import vectorbt as vbt

    close = prices["close"]
    entries, exits = vectorbt_signals(name, prices, configs)
    entries = np.vstack([np.zeros((1, entries.shape[1]), bool), entries[:-1]])
    exits = np.vstack([np.zeros((1, exits.shape[1]), bool), exits[:-1]])
    columns = pd.MultiIndex.from_tuples([(k, s) for k in range(len(configs)) for s in close.columns],
                                        names=["config", "symbol"])
    portfolio = vbt.Portfolio.from_signals(close, pd.DataFrame(entries, close.index, columns),
                                           pd.DataFrame(exits, close.index, columns), fees=FEES, freq="1D")
    portfolio.sharpe_ratio(year_freq="252 days")
    return portfolio


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sample_against_run_backtest(strategy, prices, configs, table, n_samples: int = 8) -> float:
    """Largest relative Sharpe difference between sampled rows and run_backtest on their decision rows."""
    from research_lib.backtest import run_backtest
    from research_lib.sweeps import Indicators
    from research_lib.validation import metrics

    ind, close = Indicators(prices), prices["close"]
    rng = np.random.default_rng(0)
    worst = 0.0
    for row in rng.choice(np.flatnonzero(table["reason"].isna()), n_samples, replace=False):
        params, symbol = configs[row // close.shape[1]], table.at[row, "symbol"]
        returned = strategy(ind, **params)
        if strategy.kind == "entry_exit":
            entries, exits = (frame[symbol] for frame in returned)
            position = pd.Series(np.where(entries & ~exits, 1.0, np.where(exits & ~entries, 0.0, np.nan)),
                                 close.index).ffill().fillna(0.0)
            rows = position[position.diff().fillna(position) != 0]
        else:
            rows = returned[symbol].dropna()
        traded_at = close.index.get_indexer(rows.index) + 1
        inside = traded_at < len(close)
        rows = rows[inside].where(close[symbol].to_numpy()[traded_at[inside]] == close[symbol].to_numpy()[traded_at[inside]], 0.0)
        expected = metrics.sharpe_ratio(run_backtest(rows.to_frame(symbol), prices, cost_bps=10.0).returns)
        worst = max(worst, abs(table.at[row, "sharpe"] - expected) / abs(expected))
    return worst


def against_vectorbt(table, returns: pd.DataFrame, portfolio) -> float:
    """Largest |Sharpe difference| with vectorbt's daily returns over our sessions (from our first trade)."""
    theirs = portfolio.returns().to_numpy()
    worst = 0.0
    for row in returns.columns:
        ours = returns[row].to_numpy()
        valid = ~np.isnan(ours)
        window = theirs[valid, row]
        sharpe = window.mean() / window.std(ddof=1) * np.sqrt(252) if window.std(ddof=1) > 0 else np.nan
        if np.isfinite(sharpe) or np.isfinite(table.at[row, "sharpe"]):
            worst = max(worst, abs(sharpe - table.at[row, "sharpe"]))
    return worst


def bench_sweep_families(names: list[str] | None = None) -> dict:
    """``names``: some of `GRIDS` (all by default)."""
    from research_lib.sweeps import families, run_sweep

    prices = load_stocks()
    close = prices["close"]
    print(f"sweep families: 4 x 144 configurations x {close.shape[1]} stocks x {len(close)} sessions ...", flush=True)
    import vectorbt as vbt  # noqa: F401  (its import is not a sweep's time)

    result, rows, ratios = {}, [], {}
    for name in names or list(GRIDS):
        strategy, configs = getattr(families, name), configurations(GRIDS[name])
        ours_s, vbt_s = [], []
        for _ in range(3):  # the first call of each is the cold one
            seconds, ours = timed(lambda: run_sweep(strategy, configs, prices, cost_bps=10.0))
            ours_s.append(seconds)  # returns not kept: over the default budget, as vectorbt's Sharpe alone
            portfolio = ours = None  # vectorbt holds GBs per sweep (2.9 GB peak for one): free before the next
            gc.collect()
            seconds, portfolio = timed(lambda: vectorbt_sweep(name, prices, configs))
            vbt_s.append(seconds)
        ours = run_sweep(strategy, configs, prices, cost_bps=10.0, keep_returns=True)  # for the comparisons
        ratio = min(vbt_s[1:]) / min(ours_s[1:])
        ratios[name] = ratio
        result[name] = {"configurations": len(configs), "books": len(ours.table), "seconds_ours": ours_s,
                        "seconds_vectorbt": vbt_s, "ratio_warm": ratio, "ratio_cold": vbt_s[0] / ours_s[0],
                        "max_rel_sharpe_diff_vs_run_backtest": sample_against_run_backtest(
                            strategy, prices, configs, ours.table),
                        "max_abs_sharpe_diff_vs_vectorbt": against_vectorbt(ours.table, ours.returns, portfolio),
                        "never_trade": int(ours.table["reason"].notna().sum())}
        portfolio = ours = None
        gc.collect()
        rows += [(f"{name}: ours cold", ours_s[0]), (f"{name}: ours warm", min(ours_s[1:])),
                 (f"{name}: vectorbt cold", vbt_s[0]), (f"{name}: vectorbt warm", min(vbt_s[1:]))]
        print(f"  {name}: {json.dumps(result[name], default=float)}", flush=True)
    ok = all(r >= TARGET_RATIO for r in ratios.values()) and all(
        r["max_rel_sharpe_diff_vs_run_backtest"] <= 1e-9 and r["max_abs_sharpe_diff_vs_vectorbt"] <= 0.01
        for r in result.values())
    verdict = ("sweep families vs vectorbt, warm: " + ", ".join(f"{n} {r:.1f}x" for n, r in ratios.items())
               + f" (target {TARGET_RATIO:.0f}x, goal {GOAL_RATIO:.0f}x): {'OK' if ok else 'MISSED'}")
    result["note"] = ("vectorbt's fee on a buy is fees/(1+fees) of the value, ours cost_bps of the value; vectorbt "
                      "Sharpe computed over our sessions (from our first trade)")
    return {"result": result, "rows": rows, "verdict": verdict}


TEN_K = """
import resource, time, json


def peak_rss_mb():
    # This process's peak resident memory: VmHWM on Linux (getrusage's ru_maxrss can carry the
    # peak of the process that started this one across fork and exec), else ru_maxrss.
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


from tests.bench.sweeps import load_stocks
prices = load_stocks()
from research_lib.sweeps import families, run_sweep
grid = {"window": list(range(4, 54, 2)), "lower": list(range(10, 50, 2)), "upper": list(range(52, 92, 2))}
start = time.perf_counter()
result = run_sweep(families.rsi_thresholds, grid, prices, cost_bps=10.0)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "configurations": len(result.table) // 20, "books": len(result.table),
                  "peak_rss_mb": peak_rss_mb(),
                  "returns_kept": result.returns is not None}))
"""


def bench_sweep_10k() -> dict:
    print("sweep: 10,000 RSI configurations x 20 stocks, full history, in a fresh process ...", flush=True)
    out = subprocess.run([sys.executable, "-c", TEN_K], cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ok = result["seconds"] <= 30 and result["peak_rss_mb"] <= 2048
    verdict = (f"10,000 configurations ({result['books']:,} books): {result['seconds']:.1f} s (target 30 s), peak RSS "
               f"{result['peak_rss_mb']:.0f} MB (target 2048 MB, whole process): {'OK' if ok else 'MISSED'}")
    return {"result": result, "rows": [("10,000 RSI configurations, 20 stocks", result["seconds"])], "verdict": verdict}


if __name__ == "__main__":  # python tests/bench/sweeps.py [family ...] [10k]
    chosen = [name for name in sys.argv[1:] if name in GRIDS]
    benches = [lambda: bench_sweep_families(chosen)] if chosen or len(sys.argv) == 1 else []
    benches += [bench_sweep_10k] if "10k" in sys.argv[1:] or len(sys.argv) == 1 else []
    for bench in benches:
        outcome = bench()
        for label, seconds in outcome["rows"]:
            print(f"{label:48s} {seconds:8.2f}")
        print(outcome["verdict"])
