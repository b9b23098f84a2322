"""Report writers: the quantstats tearsheet, metrics.json, the paper-session report
(``paper``: a traded session's cycle.json and summary.html) and the reports/index.html dashboard
(``index``, its paper-trading section in ``dashboard_paper``)."""

from research_lib.reports.index import build_index, collect_runs
from research_lib.reports.tearsheet import write_metrics, write_tearsheet

__all__ = ["build_index", "collect_runs", "write_metrics", "write_tearsheet"]
