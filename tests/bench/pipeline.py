"""Pipeline benchmark of incremental runs: `spartan run params/daily.yaml` in one scratch workspace.

Each figure is measured in the same run as the fixed cost it is compared with: papermill
executing an empty notebook, times the number of stages the run executed.

- cold: a full run with no snapshot, no GARCH cache and no earlier run;
- unchanged re-run: every stage reused (target <= 10 s);
- ``--set backtest.cost_bps=20``: only 06 runs (target <= 20 s);
- ``--fresh``, warm: every stage executed again (target <= 40 s).

For the re-run, where its seconds go: the pipeline's own timings (keys, look-up of earlier runs,
hashing, copying, HTML, index) from its manifest, and the rest (start-up, configuration).

``python tests/bench/pipeline.py`` prints the rows and the verdict; `bench_pipeline()` returns
``{"result", "rows", "verdict"}`` like the benchmarks of run_bench.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]
SPARTAN = Path(sys.executable).with_name("spartan")
TARGETS_S = {"unchanged re-run": 10.0, "backtest.cost_bps=20": 20.0, "fresh, warm": 40.0}


def spartan_run(home: Path, *args: str) -> dict:
    """One `spartan run params/daily.yaml ARGS` in workspace ``home``: wall seconds, stages executed
    and reused, the pipeline's own timings."""
    env = {**os.environ, "SPARTAN_HOME": str(home), "SPARTAN_PROGRESS": "0"}
    started = time.perf_counter()
    subprocess.run([str(SPARTAN), "run", str(home / "params" / "daily.yaml"), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    newest = max((home / "reports" / "runs").iterdir(), key=lambda p: (p / "manifest.json").stat().st_mtime)
    manifest = json.loads((newest / "manifest.json").read_text())
    executed = [s["name"] for s in manifest["stages"] if s["status"] == "succeeded"]
    return {"wall_s": round(wall, 2), "executed": executed,
            "reused": [s["name"] for s in manifest["stages"] if s["status"] == "reused"],
            "stages_s": {s["name"]: s["duration_s"] for s in manifest["stages"]},
            "timings_s": manifest.get("timings", {})}


def empty_notebook_s(scratch: Path) -> float:
    """papermill executing a one-cell notebook: the fixed cost of one executed stage."""
    import papermill as pm

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, scratch / "empty.ipynb")
    started = time.perf_counter()
    pm.execute_notebook(str(scratch / "empty.ipynb"), str(scratch / "out.ipynb"), kernel_name="python3",
                        progress_bar=False, kernel_manager_class="research_lib.pipeline._IPCKernelManager")
    return time.perf_counter() - started


def bench_pipeline() -> dict:
    with tempfile.TemporaryDirectory(prefix="spartan-bench-reuse-") as tmp:
        home = Path(tmp)
        (home / "params").symlink_to(REPO / "params")
        (home / "notebooks").symlink_to(REPO / "notebooks")
        print("pipeline (incremental): cold, unchanged re-run, cost_bps=20, --fresh ...", flush=True)
        runs = {"cold": spartan_run(home)}
        runs["unchanged re-run"] = spartan_run(home)
        runs["backtest.cost_bps=20"] = spartan_run(home, "--set", "backtest.cost_bps=20")
        runs["fresh, warm"] = spartan_run(home, "--fresh")
        empty = empty_notebook_s(home)

    rows, verdicts = [], []
    for label, run in runs.items():
        fixed = empty * len(run["executed"])
        rows.append((f"{label}: {len(run['executed'])} executed, {len(run['reused'])} reused", run["wall_s"]))
        rows.append((f"  fixed cost: {len(run['executed'])} empty notebooks", round(fixed, 2)))
        if label in TARGETS_S:
            ok = run["wall_s"] <= TARGETS_S[label]
            verdicts.append(f"{label} {run['wall_s']:.1f} s (target {TARGETS_S[label]:.0f} s: {'OK' if ok else 'MISSED'})")
    rerun = runs["unchanged re-run"]
    ours = sum(rerun["timings_s"].values())
    rows += [(f"  re-run, pipeline's {kind}", seconds) for kind, seconds in rerun["timings_s"].items()]
    rows.append(("  re-run, the rest (interpreter, imports, configuration, manifest)", round(rerun["wall_s"] - ours, 2)))
    rows.append(("reference: papermill, empty notebook", round(empty, 2)))
    only_06 = runs["backtest.cost_bps=20"]["executed"] == ["06_validate_strategy"]
    verdict = "; ".join(verdicts) + f"; cost_bps=20 executed only 06: {only_06}; empty notebook {empty:.1f} s"
    return {"result": {"runs": runs, "papermill_empty_notebook_s": round(empty, 2), "targets_s": TARGETS_S,
                       "cost_change_runs_only_06": only_06},
            "rows": rows, "verdict": verdict}


if __name__ == "__main__":
    report = bench_pipeline()
    for label, seconds in report["rows"]:
        print(f"{label:75s} {seconds:8.2f} s")
    print(report["verdict"])
