"""``validation.html``: the statistics behind a run's headline numbers and the gate's verdict,
rendered from a Jinja2 template beside the quantstats tearsheet."""

from __future__ import annotations

from pathlib import Path

from research_lib._io import now_utc
from research_lib.reports._templates import render_to


def write_validation_page(report: dict, path: str | Path) -> Path:
    """Render ``report`` (the content of validation.json) to ``path``, atomically."""
    return render_to(path, "validation.html.j2", r=report, built_at=now_utc())
