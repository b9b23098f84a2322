"""The Jinja2 environment of the HTML reports, with their number filters (``pct``, ``num``, ``money``, ``usd``)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

from jinja2 import Environment, PackageLoader, Undefined, select_autoescape

from research_lib._io import atomic_write_bytes
from research_lib.reports import _charts as charts
from research_lib.risk import trading_state
from research_lib.units import few_sessions_caveat, format_drawdown, format_usd
from research_lib.validation.promotion import criterion_text


def _fmt(value, spec: str) -> str:
    if value is None or isinstance(value, Undefined) or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = format(value, spec)
    return text[1:] if text.startswith("-") and not text.strip("-0.,%") else text  # never "-0.0"


@functools.cache
def environment() -> Environment:
    """The one environment of the process: Jinja compiles each template once and keeps it (it
    re-reads a template whose file changed); a new environment per page compiled the dashboard's
    template again at every rebuild (0.1 s each, twice a scheduled session)."""
    # Templates are named *.html.j2: escaping must be on for ".j2" too (the default list misses it).
    env = Environment(loader=PackageLoader("research_lib.reports", "templates"),
                      autoescape=select_autoescape(["html", "htm", "xml", "j2"]))
    env.filters["pct"] = lambda v, digits=1: "n/a" if v is None or isinstance(v, Undefined) else \
        _fmt(100 * v, f".{digits}f") + "%"
    env.filters["num"] = lambda v, digits=2: _fmt(v, f".{digits}f")
    env.filters["money"] = lambda v: _fmt(v, ",.2f")
    env.filters["usd"] = format_usd  # dollars with enough digits to be true ($0.004, never $0.00)
    env.filters["drawdown"] = format_drawdown  # a loss in percent, -48.1%, on every page
    env.filters["trading_state"] = trading_state  # "trading: ACTIVE (kill switch not engaged)"
    env.filters["criterion"] = criterion_text  # a gate criterion's (value, requirement) as text
    env.filters["few_sessions"] = few_sessions_caveat
    env.globals["charts"] = charts  # inline SVG charts: no script, no network
    return env


def render_to(path: str | Path, template: str, **context) -> Path:
    """Render ``template`` with ``context`` to ``path``, atomically."""
    html = environment().get_template(template).render(**context)
    atomic_write_bytes(Path(path), html.encode())
    return Path(path)
