"""Where a session's report lives, and which finished cycles still need theirs written.

A session's report goes to ``reports/paper/<strategy>/<session>/`` (``<session>-dry-run/`` for
a dry run), or to the ``report_dir`` asked for; the ledger records the folder with the cycle
(`REPORT_DIR`, relative to the workspace when inside it, so the workspace may move) and, once
the report is written, when (`REPORT_WRITTEN`). A cycle whose command was killed between the
ledger's record and its report is found here (`unreported_cycles`) and reported by the next
trade. Whether a session is done depends on its report being there or makeable
(`reportable`), which is why this is part of trading and not of the report pages.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from research_lib import paths
from research_lib._io import now_utc
from research_lib.trading._errors import ReportUnwritable
from research_lib.trading._ledger import Ledger

CYCLE_FILE = "cycle.json"  # the report's record of its cycle, in the session's report folder
REPORT_DIR, REPORT_WRITTEN = "report_dir", "report_written_at"  # in a cycle's record in the ledger


def session_report_dir(strategy: str, session: dt.date, dry_run: bool = False) -> Path:
    return paths.reports_dir() / "paper" / strategy / (f"{session:%Y-%m-%d}" + ("-dry-run" if dry_run else ""))


def report_dir_of(strategy: str, cycle: dict) -> Path:
    """Where the report of a finished cycle is: as recorded (relative to the workspace root when
    recorded inside it, `recorded_dir`), else (a cycle recorded by an older version) the
    session's folder."""
    recorded = cycle["summary"].get(REPORT_DIR)
    if not (isinstance(recorded, str) and recorded):
        return session_report_dir(strategy, dt.date.fromisoformat(cycle["session"]))
    return paths.workspace_root() / recorded  # an absolute ``recorded`` stands as it is


def recorded_dir(folder: Path) -> str:
    """``folder`` as the ledger records it: relative to the workspace root when inside it (the
    workspace may move), else absolute."""
    absolute = Path(os.path.abspath(folder))
    try:
        return str(absolute.relative_to(os.path.abspath(paths.workspace_root())))
    except ValueError:
        return str(absolute)


def usable_report_dir(folder: Path) -> Path:
    """``folder``, made if missing, once it is known to be a folder this user can write (checked
    before the cycle runs: a report that cannot be written must not follow orders sent).

    Raises
    ------
    ReportUnwritable
        it is a file, cannot be made or is not writable; nothing was run.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder} is not writable by this user")
    except (OSError, ValueError) as err:
        raise ReportUnwritable(f"report_dir {str(folder)!r} cannot hold the session's report ({type(err).__name__}: "
                               f"{getattr(err, 'strerror', None) or err}); pass a folder this user can write, or leave "
                               "report_dir out (reports/paper/<strategy>/<session>/). Nothing was run.") from None
    return folder


def finished(cycle: dict) -> bool:
    """A cycle that ran to its end: finished, not failed, not a dry run (it has a report)."""
    return (bool(cycle["finished_at"]) and not cycle["status"].startswith("failed")
            and not cycle["summary"].get("dry_run"))


def report_rebuildable(cycle: dict) -> bool:
    """Whether the ledger recorded what the report of ``cycle`` needs (a cycle recorded by an
    older version did not: its report is its ``cycle.json``, or the session is traded again)."""
    return "cycle" in cycle["summary"]


def reportable(strategy: str, cycle: dict) -> bool:
    """Whether the report of a finished cycle can be returned: written (or writable) from the
    ledger, or, for a cycle recorded by an older version, its ``cycle.json`` is there."""
    return report_rebuildable(cycle) or (report_dir_of(strategy, cycle) / CYCLE_FILE).is_file()


def unreported_cycles(ledger: Ledger, strategy: str) -> list[dict]:
    """The finished cycles of ``strategy`` whose command was killed before writing their report
    (the ledger has no `REPORT_WRITTEN` for them), each the latest of its session (its report is
    the session's), and whose report the ledger can make."""
    cycles = ledger.cycles(strategy)
    latest = {c["session"]: c["id"] for c in cycles if not c["summary"].get("dry_run")}
    return [c for c in cycles if finished(c) and report_rebuildable(c) and not c["summary"].get(REPORT_WRITTEN)
            and latest.get(c["session"]) == c["id"]]


def mark_reported(ledger: Ledger, cycle: dict) -> None:
    """Record that the report of ``cycle`` is written, for a cycle that counts (not a dry run,
    not failed): `unreported_cycles` leaves it out from then on."""
    if finished(cycle):
        ledger.finish_cycle(cycle["id"], cycle["status"], {REPORT_WRITTEN: now_utc()})
