"""`make bench`: time the default research pipeline end to end and per stage.

Runs `spartan run params/daily.yaml` in a scratch workspace (so reports/ keeps only real
runs): once cold (no data snapshot yet) and twice warm. In the same run it times two
reference costs the pipeline cannot avoid, papermill executing an empty notebook and
quantstats writing one HTML report, so that the figures can be compared across noisy
machines as ratios. Prints a table and saves JSON under reports/bench/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]
SPARTAN = Path(sys.executable).with_name("spartan")
TARGET_S = 60.0


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_pipeline(home: Path) -> dict:
    env = {**os.environ, "SPARTAN_HOME": str(home)}
    start = time.perf_counter()
    subprocess.run([str(SPARTAN), "run", str(home / "params" / "daily.yaml")], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    newest = max((home / "reports" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    manifest = json.loads((newest / "manifest.json").read_text())
    return {"wall_s": round(wall, 2), "stages_s": {s["name"]: s["duration_s"] for s in manifest["stages"]}}


def papermill_empty_notebook(scratch: Path) -> float:
    import papermill as pm

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, scratch / "empty.ipynb")
    return timed(lambda: pm.execute_notebook(str(scratch / "empty.ipynb"), str(scratch / "out.ipynb"),
                                             kernel_name="python3", progress_bar=False,
                                             kernel_manager_class="research_lib.pipeline._IPCKernelManager"))


def quantstats_report(scratch: Path) -> float:
    from research_lib.data import load_prices
    from research_lib.reports import write_tearsheet

    close = load_prices("bundled", ["AAPL", "SP500"], "1993-01-01", snapshot_dir=scratch / "snap")["close"]
    returns = close.pct_change().dropna()
    return timed(lambda: write_tearsheet(returns["AAPL"], returns["SP500"], scratch / "qs.html", "bench"))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="spartan-bench-") as tmp:
        home = Path(tmp)
        (home / "params").symlink_to(REPO / "params")
        (home / "notebooks").symlink_to(REPO / "notebooks")
        print("timing the default pipeline (1 cold run, 2 warm runs) ...", flush=True)
        cold = run_pipeline(home)
        warm = [run_pipeline(home) for _ in range(2)]
        print("timing reference costs (papermill empty notebook, quantstats report) ...", flush=True)
        empty_nb = papermill_empty_notebook(home)
        qs_html = quantstats_report(home)

    warm_wall = statistics.median(w["wall_s"] for w in warm)
    result = {
        "benchmark": "pipeline_daily",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "cold": cold,
        "warm": warm,
        "warm_wall_median_s": warm_wall,
        "target_s": TARGET_S,
        "meets_target": warm_wall < TARGET_S,
        "reference": {"papermill_empty_notebook_s": round(empty_nb, 2), "quantstats_html_s": round(qs_html, 2)},
        "ratios": {
            "warm_wall_over_papermill_empty": round(warm_wall / empty_nb, 2),
            "warm_wall_over_unavoidable": round(warm_wall / (2 * empty_nb + qs_html), 2),
        },
    }
    out_dir = REPO / "reports" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"pipeline-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))

    print(f"\n{'measure':42s} {'seconds':>8s}")
    print(f"{'pipeline, cold (fresh snapshot)':42s} {cold['wall_s']:8.2f}")
    for i, w in enumerate(warm, 1):
        print(f"{f'pipeline, warm run {i}':42s} {w['wall_s']:8.2f}")
    for name, seconds in cold["stages_s"].items():
        print(f"{'  cold stage ' + name:42s} {seconds:8.2f}")
    for name, seconds in warm[-1]["stages_s"].items():
        print(f"{'  warm stage ' + name:42s} {seconds:8.2f}")
    print(f"{'reference: papermill, empty notebook':42s} {empty_nb:8.2f}")
    print(f"{'reference: quantstats HTML report':42s} {qs_html:8.2f}")
    print(f"\nwarm pipeline {warm_wall:.1f} s vs target {TARGET_S:.0f} s: {'OK' if result['meets_target'] else 'MISSED'}; "
          f"{result['ratios']['warm_wall_over_unavoidable']}x the unavoidable cost (2 empty notebooks + 1 quantstats report)")
    print(f"saved {out}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
