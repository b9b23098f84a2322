"""The Dask backend's speed-up (part of `make bench scale`): the same walk-forward fit and a
2,000-configuration sweep on the local backend, then on a LocalCluster with 1 and with 2 worker
processes. Reported: seconds, the speed-up of 2 workers over 1 (target >= 1.7x), and whether each
Dask result equals the local backend's exactly.

Each LocalCluster is started here and closed before the next (never assumed running).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
TARGET_SPEEDUP = 1.7
SWEEP_GRID = {"window": list(range(4, 44, 2)), "lower": list(range(10, 50, 4)), "upper": list(range(52, 92, 4))}


def _walk_forward_inputs():
    from research_lib.config import load_config
    from research_lib.data._bundled import bundled_prices
    from research_lib.signals import labels_for
    from research_lib.stages import compute_features

    config = load_config(REPO / "params" / "daily.yaml")
    close = bundled_prices()["close"].loc[str(config.data.start):]
    with tempfile.TemporaryDirectory(prefix="spartan-garch-") as cache:
        os.environ["SPARTAN_HOME"] = cache
        features = compute_features(config, close)
    ml = config.ml.model_copy(update={"models": ["hgbr"], "signal_model": "hgbr", "n_jobs": 2})
    return features, labels_for(features, close, config.ml), ml


def _timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _equal(a, b) -> bool:
    if isinstance(a, pd.DataFrame):
        return a.equals(b)
    if isinstance(a, dict):  # fit_models: {name: WalkForwardModel}
        return a.keys() == b.keys() and all(a[k].predictions_.equals(b[k].predictions_) for k in a)
    if hasattr(a, "table"):  # a SweepResult
        return a.table.equals(b.table)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def bench_dask() -> dict:
    from research_lib.compute import ComputeConfig, use_backend
    from research_lib.signals import fit_models
    from research_lib.sweeps import families, run_sweep
    from tests.bench.sweeps import load_stocks

    features, labels, ml = _walk_forward_inputs()
    prices = load_stocks()
    jobs = {
        "walk-forward hgbr (daily scenario)": lambda: fit_models(features, labels, ml),
        "sweep, 2,000 RSI configurations x 20 stocks": lambda: run_sweep(families.rsi_thresholds, SWEEP_GRID, prices,
                                                                         cost_bps=10.0, batch_size=100),
    }
    print(f"dask: {len(jobs)} jobs on the local backend, then 1 and 2 Dask workers ...", flush=True)
    result, rows, verdicts = {}, [], []
    for label, job in jobs.items():
        seconds = {}
        local_s, reference = _timed(job)
        seconds["local"] = local_s
        identical = {}
        for workers in (1, 2):
            with use_backend(ComputeConfig(backend="dask", n_workers=workers)):
                job()  # warm the workers (imports, numba's cache) before the timed call
                seconds[f"dask {workers}"], out = _timed(job)
            identical[workers] = _equal(reference, out)
        speedup = seconds["dask 1"] / seconds["dask 2"]
        result[label] = {"seconds": seconds, "speedup_2_over_1": round(speedup, 2), "identical_to_local": identical}
        rows += [(f"{label}: {backend}", s) for backend, s in seconds.items()]
        verdicts.append(f"{label}: 2 workers {speedup:.2f}x over 1 (target {TARGET_SPEEDUP}x: "
                        f"{'OK' if speedup >= TARGET_SPEEDUP else 'MISSED'}), identical to local: "
                        f"{all(identical.values())}")
    return {"result": result, "rows": rows, "verdict": "; ".join(verdicts)}
