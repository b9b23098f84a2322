"""Running one session of a promoted strategy: its targets, its market and its cycle.

- **Targets** are the run's decisions: the latest ``weights.parquet`` row at or before the
  session (a row dated ``d`` was decided with data up to ``d``'s close, so nothing later is
  used). Like the backtest, the book trades when a new decision is in force and otherwise
  holds and drifts with prices; a decision older than ``paper.max_target_age_sessions`` is
  refused (re-run the research and promote again).
- `run_session` runs the cycle (`run_cycle`) and returns the ledger's record of it; writing
  the session's report from that record is the caller's (the paper-trading stage).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from research_lib.trading._cycle import run_cycle
from research_lib.trading._inputs import CycleInputs
from research_lib.trading._errors import TradingRefused
from research_lib.trading._ledger import Ledger
from research_lib.trading._market import market, reference_prices
from research_lib.trading._report_dirs import REPORT_DIR, recorded_dir, usable_report_dir
from research_lib.validation.promotion import Promoted


def run_session(promoted: Promoted, broker: str, session: dt.date, ledger: Ledger, report_dir: Path, *,
                dry_run: bool) -> tuple[dict, pd.DataFrame]:
    """Run the cycle of ``promoted``'s ``session`` on ``broker``; return the ledger's record of
    the cycle (`Ledger.cycle`) and the prices it traded on.

    ``report_dir`` is where the session's report will go: made (or refused, `ReportUnwritable`)
    before the market is touched, and recorded with the cycle. Raises `TradingRefused` (nothing
    sent) or a `research_lib.broker.BrokerError` (the ledger records what is known).
    """
    config = promoted.config
    max_age = config.paper.max_target_age_sessions
    decided = targets = None
    if broker == "sim":  # the decision first: a refusal must leave the simulated market where it stands
        decided, targets = decision_at(promoted.weights, session, promoted.prices.index, max_age)
    folder = usable_report_dir(report_dir)
    with market(promoted, broker, session, ledger, dry_run) as (live, prices, price_time):
        if decided is None:  # at Alpaca, on its bars
            decided, targets = decision_at(promoted.weights, session, prices.index, max_age)
        close, adv, adv_checked = reference_prices(prices, session, config.paper.adv_sessions,
                                                   unknown_volume_passes=broker == "sim")
        targets = with_cash_buffer(targets, config.paper.cash_buffer)
        applied, applied_in = applied_decision(ledger, promoted.name)
        rebalance = applied != f"{decided:%Y-%m-%d}" or applied_in == f"{session:%Y-%m-%d}"
        inputs = CycleInputs(promoted.name, session, targets if rebalance else None, close, price_time, config.risk,
                             adv=adv, min_trade_value=config.paper.min_trade_value, decision=decided.date(),
                             execution=config.execution)
        report = run_cycle(live, ledger, inputs, dry_run=dry_run,
                           notes={REPORT_DIR: recorded_dir(folder), "adv_checked": adv_checked})
    return ledger.cycle(report.cycle_id), prices


def decision_at(weights: pd.DataFrame, session: dt.date, sessions: pd.DatetimeIndex,
                max_age_sessions: int) -> tuple[pd.Timestamp, pd.Series]:
    """The latest decision at or before ``session`` and its non-zero target weights.

    Raises `TradingRefused` when there is none or it is more than ``max_age_sessions``
    sessions old (counted on ``sessions``, or on weekdays beyond them).
    """
    day = pd.Timestamp(session)
    known = weights.loc[weights.index <= day]
    if known.empty:
        raise TradingRefused(f"the promoted run has no decision at or before {day:%Y-%m-%d} (its first is "
                             f"{weights.index[0]:%Y-%m-%d}); trade a later session.")
    decided = known.index[-1]
    if day <= sessions[-1]:
        age = int(sessions.searchsorted(day, side="right") - sessions.searchsorted(decided, side="right"))
    else:
        age = int(np.busday_count(decided.date(), day.date()))
    if age > max_age_sessions:
        raise TradingRefused(f"the latest decision of the promoted run ({decided:%Y-%m-%d}) is {age} sessions old at "
                             f"{day:%Y-%m-%d} (paper.max_target_age_sessions: {max_age_sessions}); run the research "
                             "again up to this date and promote the new run.")
    row = known.iloc[-1].fillna(0.0)
    return decided, row[row != 0.0]


def with_cash_buffer(targets: pd.Series, cash_buffer: float) -> pd.Series:
    """Scale the long targets down so that they sum to at most ``1 - cash_buffer`` (buys must be
    paid for with their costs, at a price that moves before the fill)."""
    longs = float(targets[targets > 0].sum())
    scale = min(1.0, (1.0 - cash_buffer) / longs) if longs > 0 else 1.0
    return targets.where(targets <= 0, targets * scale)


def applied_decision(ledger: Ledger, strategy: str) -> tuple[str | None, str | None]:
    """``(decision, session)`` of the last cycle that rebalanced to a decision in full (ACTIVE,
    not a dry run, finished); ``(None, None)`` when none did or its orders were then cancelled
    or expired (by a halt, say): the decision in force is still to be traded."""
    for cycle in reversed(ledger.cycles(strategy)):
        summary = cycle["summary"]
        if cycle["status"] in ("traded", "nothing_to_do") and summary.get("rebalance") and summary.get("decision"):
            if any(i.status in ("canceled", "expired", "withdrawn") for i in ledger.intents(strategy, cycle["session"])):
                return None, None
            return summary["decision"], cycle["session"]
    return None, None
