"""``reports/index.html``: the dashboard of every run, rendered from a Jinja2 template.

It is a static page with relative links, so it opens from disk in a browser.
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from research_lib._io import atomic_write_bytes, now_utc

_HEADLINE = ("cagr", "sharpe", "max_drawdown", "win_rate")


def collect_runs(reports_dir: str | Path) -> list[dict]:
    """One summary per ``reports/runs/*/manifest.json``, newest first.

    A manifest that cannot be read is listed with status ``unreadable`` rather than hiding
    the run.
    """
    runs = []
    for manifest_path in sorted(Path(reports_dir).glob("runs/*/manifest.json")):
        folder = manifest_path.parent
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            runs.append({"run_id": folder.name, "status": "unreadable", "created_at": "", "links": [],
                         "metrics": dict.fromkeys(_HEADLINE), "ml": {}, "llm": {}, "gate": {}})
            continue
        strategy = (manifest.get("metrics") or {}).get("strategy", {})
        ml = manifest.get("ml") or {}
        links = [(label, f"runs/{folder.name}/{name}") for label, name in
                 (("tearsheet", "tearsheet.html"), ("validation", "validation.html")) if (folder / name).is_file()]
        links += [(s["name"], f"runs/{folder.name}/{s['html']}") for s in manifest.get("stages", []) if s.get("html")]
        links.append(("manifest", f"runs/{folder.name}/manifest.json"))
        runs.append({
            "run_id": manifest.get("run_id", folder.name),
            "created_at": manifest.get("created_at", ""),
            "scenario": manifest.get("scenario", ""),
            "description": manifest.get("description", ""),
            "status": manifest.get("status", "unknown"),
            "error": manifest.get("error"),
            "commit": ((manifest.get("code") or {}).get("commit") or "")[:8],
            "metrics": {k: strategy.get(k) for k in _HEADLINE},
            "ml": ml,
            "llm": manifest.get("llm") or {},
            "gate": manifest.get("validation") or {},
            "links": links,
        })
    return sorted(runs, key=lambda r: r["created_at"], reverse=True)


def build_index(reports_dir: str | Path) -> Path:
    """Render ``reports_dir/index.html`` from the runs found there; return its path."""
    reports_dir = Path(reports_dir)
    env = Environment(loader=PackageLoader("research_lib.reports", "templates"), autoescape=select_autoescape())
    env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.1f}%"
    env.filters["num"] = lambda v: "" if v is None else f"{v:.2f}"
    from research_lib.promotion import promoted_strategies

    html = env.get_template("index.html.j2").render(runs=collect_runs(reports_dir), built_at=now_utc(),
                                                    promoted=promoted_strategies())
    target = reports_dir / "index.html"
    atomic_write_bytes(target, html.encode())
    return target
