"""Scale benchmark (`make bench scale`): the default scenario on synthetic universes of 20, 100 and
500 names x 25 years, then the Dask backend's speed-up.

- Universes: `spartan run params/synthetic.yaml` (the default scenario's stages on the synthetic
  market, offline analyst) with ``data.synthetic.n_symbols`` = 20, 100, 500 and 25 years of
  sessions, each in its own scratch workspace (cold: no snapshot, no GARCH cache). Per stage:
  seconds (the run's manifest) and peak RSS (the stage's kernel and every process under it,
  sampled every 0.2 s). Targets for 500 names: <= 10 minutes, <= 8 GB. The growth exponent of
  time in the number of names is the slope of log(seconds) against log(names) (goal <= 1.1).
- Dask: the same walk-forward fit and a 2,000-configuration sweep with 1 and 2 workers on a
  LocalCluster: the speed-up (target >= 1.7x) and the results' equality with the local backend.

``python tests/bench/scale.py [universes] [dask]`` prints the rows and the verdict; `bench_scale()`
returns ``{"result", "rows", "verdict"}`` like the benchmarks of run_bench.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
SPARTAN = Path(sys.executable).with_name("spartan")
UNIVERSES = (20, 100, 500)
YEARS = ("1998-01-02", "2022-12-30")  # 25 years of sessions
TARGET_500 = {"seconds": 600.0, "peak_rss_gb": 8.0}
GOAL_EXPONENT = 1.1
TARGET_SPEEDUP = 1.7


class _TreeSampler(threading.Thread):
    """Peak RSS of each kernel `spartan run` starts (with every process under it), in order of start."""

    def __init__(self, root: psutil.Process, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.every_s = root, every_s
        self.kernels: list[int] = []  # kernel pids in the order they appeared: the executed stages' order
        self.peak: dict[int, int] = {}
        self.parent_peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.parent_peak = max(self.parent_peak, self.root.memory_info().rss)
                for child in self.root.children():
                    if child.pid not in self.peak:
                        self.kernels.append(child.pid)
                        self.peak[child.pid] = 0
                    tree = [child, *child.children(recursive=True)]
                    rss = sum(_rss(p) for p in tree)
                    self.peak[child.pid] = max(self.peak[child.pid], rss)
            except psutil.Error:
                pass
            self.done.wait(self.every_s)


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def run_universe(n_symbols: int) -> dict:
    """One cold `spartan run` of the synthetic scenario with ``n_symbols`` names in a scratch workspace."""
    with tempfile.TemporaryDirectory(prefix=f"spartan-bench-scale-{n_symbols}-") as tmp:
        home = Path(tmp)
        (home / "params").symlink_to(REPO / "params")
        (home / "notebooks").symlink_to(REPO / "notebooks")
        env = {**os.environ, "SPARTAN_HOME": str(home), "SPARTAN_PROGRESS": "0"}
        command = [str(SPARTAN), "run", str(home / "params" / "synthetic.yaml"),
                   "--set", f"data.synthetic.n_symbols={n_symbols}",
                   "--set", f"data.start={YEARS[0]}", "--set", f"data.end={YEARS[1]}"]
        print(f"scale: {n_symbols} names x 25 years ...", flush=True)
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sampler = _TreeSampler(psutil.Process(process.pid))
        sampler.start()
        _, stderr = process.communicate()
        wall = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        if process.returncode != 0:
            raise RuntimeError(f"spartan run with {n_symbols} names exited {process.returncode}:\n{stderr[-3000:]}")
        run_dir = max((home / "reports" / "runs").iterdir(), key=lambda p: (p / "manifest.json").stat().st_mtime)
        manifest = json.loads((run_dir / "manifest.json").read_text())
    executed = [s for s in manifest["stages"] if s["status"] == "succeeded"]
    stages = {}
    for i, stage in enumerate(executed):
        pid = sampler.kernels[i] if i < len(sampler.kernels) else None
        stages[stage["name"]] = {"seconds": stage["duration_s"],
                                 "peak_rss_gb": round(sampler.peak.get(pid, 0) / 2**30, 2) if pid else None}
    peak = max([s["peak_rss_gb"] or 0 for s in stages.values()] + [sampler.parent_peak / 2**30])
    return {"n_symbols": n_symbols, "wall_s": round(wall, 1), "peak_rss_gb": round(peak, 2), "stages": stages,
            "spartan_process_peak_rss_gb": round(sampler.parent_peak / 2**30, 2)}


def growth_exponent(names: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(names)."""
    x = [math.log(n) for n in names]
    y = [math.log(s) for s in seconds]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def bench_universes() -> dict:
    runs = [run_universe(n) for n in UNIVERSES]
    rows = []
    for run in runs:
        rows.append((f"{run['n_symbols']} names: whole run (peak RSS {run['peak_rss_gb']} GB)", run["wall_s"]))
        for name, stage in run["stages"].items():
            rows.append((f"  {name} (peak RSS {stage['peak_rss_gb']} GB)", stage["seconds"]))
    exponent = growth_exponent([r["n_symbols"] for r in runs], [r["wall_s"] for r in runs])
    top = {"seconds": runs[-1]["wall_s"], "peak_rss_gb": runs[-1]["peak_rss_gb"]}
    per_stage = {name: round(growth_exponent([r["n_symbols"] for r in runs],
                                             [r["stages"][name]["seconds"] for r in runs]), 2)
                 for name in runs[-1]["stages"] if all(name in r["stages"] for r in runs)}
    ok = {k: top[k] <= TARGET_500[k] for k in TARGET_500}
    verdict = (f"500 names: {top['seconds']:.0f} s (target {TARGET_500['seconds']:.0f}: "
               f"{'OK' if ok['seconds'] else 'MISSED'}), peak RSS {top['peak_rss_gb']:.2f} GB (target "
               f"{TARGET_500['peak_rss_gb']:.0f}: {'OK' if ok['peak_rss_gb'] else 'MISSED'}); time grows as "
               f"names^{exponent:.2f} (goal <= {GOAL_EXPONENT}); per stage {per_stage}")
    return {"result": {"universes": runs, "growth_exponent": round(exponent, 3), "stage_exponents": per_stage,
                       "targets_500": TARGET_500},
            "rows": rows, "verdict": verdict}


def bench_scale(parts: tuple[str, ...] = ("universes", "dask")) -> dict:
    reports = {}
    if "universes" in parts:
        reports["universes"] = bench_universes()
    if "dask" in parts:
        from tests.bench.scale_dask import bench_dask

        reports["dask"] = bench_dask()
    return {"result": {name: report["result"] for name, report in reports.items()},
            "rows": [row for report in reports.values() for row in report["rows"]],
            "verdict": "; ".join(report["verdict"] for report in reports.values())}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    report = bench_scale(tuple(sys.argv[1:]) or ("universes", "dask"))
    for label, seconds in report["rows"]:
        print(f"{label:75s} {seconds:8.2f} s")
    print(report["verdict"])
