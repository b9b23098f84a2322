"""The run's tearsheet (quantstats HTML) and its headline numbers (metrics.json)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd

from research_lib._io import atomic_path, write_json


def write_tearsheet(returns: pd.Series, benchmark: pd.Series, path: str | Path, title: str) -> Path:
    """Write quantstats' full HTML report of ``returns`` against ``benchmark`` to ``path``.

    Both series are daily simple returns; the benchmark is aligned to the strategy's
    dates. The file appears only when complete.
    """
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import quantstats as qs

    path = Path(path)
    benchmark_title = str(benchmark.name or "Benchmark")
    benchmark = benchmark.reindex(returns.index).fillna(0.0)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qs.reports.html(returns.rename("Strategy"), benchmark=benchmark, output=str(tmp), title=title,
                        benchmark_title=benchmark_title)
    return path


def write_metrics(metrics: dict, path: str | Path) -> Path:
    """Write ``metrics`` as indented JSON, atomically."""
    return write_json(Path(path), metrics)
