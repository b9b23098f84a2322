"""The tables notebooks show, formatted as every page shows the same numbers: returns and
drawdowns in percent (a drawdown as a loss, ``-48.1%``), ratios with two decimals."""

from __future__ import annotations

import pandas as pd

from research_lib.units import format_drawdown
from research_lib.validation.promotion import criterion_text

_COLUMNS = {"cagr": ("CAGR", "{:.1%}"), "annual_volatility": ("volatility", "{:.1%}"), "sharpe": ("Sharpe", "{:.2f}"),
            "max_drawdown": ("max drawdown", format_drawdown), "win_rate": ("win rate", "{:.1%}"),
            "sessions": ("sessions", "{:,.0f}")}


def _formatted(rows: dict[str, dict]) -> pd.DataFrame:
    table = {}
    for name, stats in rows.items():
        row = {}
        for key, (label, spec) in _COLUMNS.items():
            value = stats.get(key)
            if value is None or value != value:
                row[label] = "n/a" if key in stats else None
            else:
                row[label] = spec(value) if callable(spec) else spec.format(value)
        table[name] = row
    return pd.DataFrame.from_dict(table, orient="index").dropna(axis=1, how="all")


def metrics_table(metrics: dict) -> pd.DataFrame:
    """metrics.json's headline strategy, its benchmark and the alternatives, one row each."""
    rows = {f"{metrics['strategy_name']} (headline)": metrics["strategy"], "benchmark": metrics.get("benchmark") or {}}
    rows.update(metrics.get("alternatives") or {})
    return _formatted(rows)


def stress_table(cost_stress: dict) -> pd.DataFrame:
    """validation.json's ``cost_stress``: the headline at each cost multiple."""
    return _formatted(cost_stress)


def gate_table(verdict: dict) -> pd.DataFrame:
    """The promotion gate, criterion by criterion: value and requirement as the validation page shows them."""
    rows = []
    for c in verdict["criteria"]:
        value, needs = criterion_text(c)
        rows.append({"criterion": c["name"], "value": value, "needs": needs, "result": "pass" if c["passed"] else "FAIL",
                     "meaning": c["meaning"]})
    return pd.DataFrame(rows).set_index("criterion")
