"""Report writers: the quantstats tearsheet, metrics.json, the paper-session report
(``paper``: a traded session's cycle.json and summary.html) and the reports/index.html dashboard
(``index``, its paper-trading section in ``dashboard_paper``).

Names load on first use, so a research stage writing its validation page does not load the
dashboard's trading and broker code.
"""

from research_lib._lazy import lazy_exports

_WHERE = {"build_index": "index", "collect_runs": "index", "write_metrics": "tearsheet", "write_tearsheet": "tearsheet",
          "gate_table": "tables", "metrics_table": "tables", "stress_table": "tables"}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
