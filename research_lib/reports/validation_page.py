"""``validation.html``: the statistics behind a run's headline numbers and the gate's verdict,
rendered from a Jinja2 template beside the quantstats tearsheet."""

from __future__ import annotations

import math
from pathlib import Path

from jinja2 import Environment, PackageLoader, Undefined, select_autoescape

from research_lib._io import atomic_write_bytes, now_utc


def _fmt(value, spec: str) -> str:
    if value is None or isinstance(value, Undefined) or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def write_validation_page(report: dict, path: str | Path) -> Path:
    """Render ``report`` (the content of validation.json) to ``path``, atomically."""
    env = Environment(loader=PackageLoader("research_lib.reports", "templates"), autoescape=select_autoescape())
    env.filters["pct"] = lambda v: "n/a" if v is None or isinstance(v, Undefined) else _fmt(100 * v, ".1f") + "%"
    env.filters["num"] = lambda v, digits=2: _fmt(v, f".{digits}f")
    html = env.get_template("validation.html.j2").render(r=report, built_at=now_utc())
    atomic_write_bytes(Path(path), html.encode())
    return Path(path)
