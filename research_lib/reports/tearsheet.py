"""The run's tearsheet (quantstats HTML) and its headline numbers (metrics.json)."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pandas as pd

from research_lib._io import atomic_path, write_json
from research_lib.reports._charts import grouped_bars, percent
from research_lib.validation.statistics import breakdown_by_year


def write_tearsheet(returns: pd.Series, benchmark: pd.Series, path: str | Path, title: str,
                    periods_per_year: int = 252) -> Path:
    """Write quantstats' full HTML report of ``returns`` against ``benchmark`` to ``path``.

    Both series are daily simple returns; the benchmark is aligned to the strategy's
    dates; ``periods_per_year`` annualizes (the run's calendar: 252 New York, 365 crypto).
    The file appears only when complete.
    """
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import quantstats as qs

    path = Path(path)
    benchmark_title = str(benchmark.name or "Benchmark")
    benchmark = benchmark.reindex(returns.index).fillna(0.0)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qs.reports.html(returns.rename("Strategy"), benchmark=benchmark, output=str(tmp), title=title,
                        benchmark_title=benchmark_title, periods_per_year=periods_per_year)
        html = Path(tmp).read_text(encoding="utf-8")
        html = _NETWORK_ICON.sub("", replace_yearly_chart(html, returns, benchmark, benchmark_title))
        html = html.replace('<body onload="save()">', "<body>", 1)  # save() exists only in quantstats' download mode
        Path(tmp).write_text(html, encoding="utf-8")
    return path


# quantstats 0.0.86's page fetches its favicon from the network and calls an undefined save() on load:
# both are taken out, so that the page opens offline without a script error.
_NETWORK_ICON = re.compile(r'<link rel="shortcut icon" href="https?://[^"]*"[^>]*>')
_EOY_CHART = re.compile(r'(<div id="eoy_returns">)(.*?)(</div>)', re.S)


def replace_yearly_chart(html: str, returns: pd.Series, benchmark: pd.Series, benchmark_title: str) -> str:
    """quantstats' "EOY Returns vs Benchmark" chart (0.0.86 draws its year labels bunched at the
    left of bars drawn on the right) replaced by our own: the compounded return of each calendar
    year, the strategy beside the benchmark, as inline SVG."""
    names = ["Strategy", benchmark_title if benchmark_title != "Strategy" else "Strategy (benchmark)"]
    yearly = pd.DataFrame({name: breakdown_by_year(series.dropna())["return"]  # a year without returns: no bar
                           for name, series in zip(names, (returns, benchmark.reindex(returns.index)))})
    chart = grouped_bars([str(y) for y in yearly.index], {c: yearly[c].tolist() for c in yearly},
                         title="Returns by calendar year, strategy against benchmark", fmt=percent(0),
                         y_label="compounded within each year", width=620, height=260)
    replaced, count = _EOY_CHART.subn(lambda m: m.group(1) + str(chart) + m.group(3), html, count=1)
    return replaced if count else html


def write_metrics(metrics: dict, path: str | Path) -> Path:
    """Write ``metrics`` as indented JSON, atomically."""
    return write_json(Path(path), metrics)
