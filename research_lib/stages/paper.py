"""The paper-trading stage: trade one session of a promoted strategy, then write its report.

What `spartan trade`, notebook ``07_paper_trade`` and the scheduler's trade job run. Trading
(`research_lib.trading`) runs the session and records its cycle in the ledger; the report
(`research_lib.reports.paper`) is made from that record. This stage joins them:

- **Reports**: ``reports/paper/<strategy>/<session>/`` (or ``report_dir``) holds ``cycle.json``
  (what the cycle did, positions, P&L, slippage, drift against the backtest) and
  ``summary.html``; `spartan trade` adds the executed notebook. A dry run writes to
  ``<session>-dry-run/``. A trade first writes the report and raises the alerts of any
  finished cycle whose command was killed before it could (`finish_reports`), and a session
  that is done is not run again: its report stands and is returned.
- **One trade of a strategy at a time**: a trade holds the strategy's `trade_lock` from the
  choice of its session to its report; another one meanwhile is refused (`TradeLocked`). A dry
  run takes no lock: it sends nothing, moves no market and marks no intent ``not_sent``.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from research_lib import paths
from research_lib._io import read_json
from research_lib.reports.paper import CYCLE_FILE, raise_session_alerts, session_report, write_session_report
from research_lib.trading import (Ledger, ReportUnwritable, mark_reported, report_dir_of, report_rebuildable,
                                  resolve_session, run_session, session_cycle, session_report_dir, trade_lock,
                                  traded_prices, unreported_cycles)
from research_lib.validation.promotion import Promoted, promoted_strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionPlan:
    """What a `trade` runs (`plan_session`): the strategy, broker and session, the reports just
    written for earlier cycles whose command was killed before writing them, and this
    session's report when it was already traded (then nothing more runs)."""

    promoted: Promoted
    broker: str
    session: dt.date
    dry_run: bool
    recovered: list[dict]
    report: dict | None
    report_dir: Path | None  # where ``report`` is


def plan_session(strategy: str | None = None, broker: str | None = None, asof: str | dt.date | None = None,
                 dry_run: bool = False) -> SessionPlan:
    """`resolve_session`, then (not for a dry run) write the missing reports of finished cycles
    (`finish_reports`) and find this session's report if it was traded already. Hold the
    strategy's `trade_lock` around it and the trade that follows."""
    promoted, kind, session = resolve_session(strategy, broker, asof, dry_run)
    if dry_run:
        return SessionPlan(promoted, kind, session, True, [], None, None)
    ledger = Ledger(paths.state_db())
    recovered = finish_reports(promoted, ledger)
    traded = session_cycle(ledger, promoted.name, session)
    report = None if traded is None else _stored_report(promoted, ledger, traded)
    return SessionPlan(promoted, kind, session, False, recovered, report,
                       None if report is None else report_dir_of(promoted.name, traded))


def trade_session(strategy: str | None = None, broker: str | None = None, asof: str | dt.date | None = None,
                  dry_run: bool = False, report_dir: str | Path | None = None) -> dict:
    """Run one cycle of the promoted ``strategy`` and write its report; return the report.

    Under the strategy's `trade_lock`, first the reports of finished cycles whose command was
    killed before writing them are written (`finish_reports`). A session already traded is not
    run again: its report is returned as it stands.

    Raises `NotPromoted`, `TradingRefused` (nothing sent; `TradeLocked` while another trade of
    the strategy runs) or a `research_lib.broker.BrokerError` (the ledger records what is known;
    the next run resolves the rest).
    """
    # A dry run sends nothing and moves nothing: it never waits for nor blocks a trade.
    with nullcontext() if dry_run else trade_lock(promoted_strategy(strategy)):
        plan = plan_session(strategy, broker, asof, dry_run)
        if plan.report is not None:
            log.info("%s %s was traded already; its report stands, nothing was run", plan.promoted.name, plan.session)
            return plan.report
        return _trade(plan, report_dir)


def _trade(plan: SessionPlan, report_dir: str | Path | None) -> dict:
    """Run the cycle of ``plan``'s session, then write its report and raise its alerts."""
    promoted, session, dry_run = plan.promoted, plan.session, plan.dry_run
    ledger = Ledger(paths.state_db())
    folder = Path(report_dir) if report_dir else session_report_dir(promoted.name, session, dry_run)
    cycle, prices = run_session(promoted, plan.broker, session, ledger, folder, dry_run=dry_run)
    return _publish(promoted, ledger, cycle, prices, alerts=not dry_run)


def finish_reports(promoted: Promoted, ledger: Ledger) -> list[dict]:
    """Write the report, and raise the alerts, of each finished cycle of ``promoted`` whose
    command was killed before it could (`unreported_cycles`); return those reports. Each is
    made from the ledger's record of its cycle (`session_report`)."""
    written = []
    for cycle in unreported_cycles(ledger, promoted.name):
        log.warning("%s %s: the cycle finished but its report was not written (its command was stopped); "
                    "writing it from the ledger", promoted.name, cycle["session"])
        written.append(_publish(promoted, ledger, cycle, traded_prices(promoted, cycle, ledger), alerts=True))
    return written


def _publish(promoted: Promoted, ledger: Ledger, cycle: dict, prices: pd.DataFrame, *, alerts: bool) -> dict:
    """Write the report of ``cycle`` where its record says and raise its alerts (``alerts``);
    then, for a cycle that counts (not a dry run, not failed), record in the ledger that its
    report is done. Killed before that, the next trade does it all again (alerts de-duplicate)."""
    result = session_report(promoted, ledger, cycle, prices)
    folder = report_dir_of(promoted.name, cycle)
    try:
        write_session_report(result, folder)
    except OSError as err:
        raise ReportUnwritable(f"the report of {promoted.name} {cycle['session']} cannot be written to {folder} "
                               f"({type(err).__name__}: {err.strerror or err}); make it a folder this user can "
                               "write, then run spartan trade again: the ledger keeps the cycle and its report is "
                               "written then.") from None
    if alerts:
        raise_session_alerts(result, folder)
    mark_reported(ledger, cycle)
    return result


def _stored_report(promoted: Promoted, ledger: Ledger, cycle: dict) -> dict | None:
    """The report of a session traded already, as written (written again from the ledger if its
    ``cycle.json`` was removed or damaged since; its alerts were raised then)."""
    folder = report_dir_of(promoted.name, cycle)
    try:
        stored = read_json(folder / CYCLE_FILE)
    except ValueError:
        stored = None
    if isinstance(stored, dict):
        return stored
    if not report_rebuildable(cycle):  # recorded before the ledger kept what a report needs
        return None
    return _publish(promoted, ledger, cycle, traded_prices(promoted, cycle, ledger), alerts=False)
