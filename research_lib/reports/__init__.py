"""Report writers: the quantstats tearsheet, metrics.json and the reports/index.html dashboard."""

from research_lib.reports.index import build_index, collect_runs
from research_lib.reports.tearsheet import write_metrics, write_tearsheet

__all__ = ["build_index", "collect_runs", "write_metrics", "write_tearsheet"]
