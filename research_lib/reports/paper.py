"""The paper-session report: a traded session's page, made from the ledger's record of its cycle.

A session's report (``cycle.json``, ``summary.html``, in the folder the ledger recorded:
`research_lib.trading.report_dir_of`) and its alerts are made from what the
ledger recorded when the cycle finished (`research_lib.trading.run_cycle`: what it did,
the positions it reconciled, the targets and reference prices), from the ledger's history up
to that cycle and from the orders of the session it recorded, never from the broker nor from a
later run. So a report written again after its command was killed (between the ledger's record
and the report) states what that cycle did; the same function writes it the first time.
Tracking uses the price history the cycle traded on.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from research_lib._io import now_utc, read_json, write_json
from research_lib.alerts import alert
from research_lib.reports._templates import render_to
from research_lib.reports.dashboard_paper import expected_equity
from research_lib.risk import KillSwitch
from research_lib.trading import (CYCLE_FILE, Ledger, daily_pnl, drift, execution_quality, expected_backtest,
                                  mean_slippage_bps, slippage)
from research_lib.validation.promotion import Promoted

SUMMARY_FILE = "summary.html"  # the page, beside CYCLE_FILE (the record, whose name trading owns)
OPEN = ("sent", "adopted")  # the ledger's statuses of an order last seen open at the broker


def session_report(promoted: Promoted, ledger: Ledger, cycle: dict, prices: pd.DataFrame) -> dict:
    """The report of the finished ``cycle`` (a `Ledger.cycles` entry written by `run_cycle` with
    the notes ``adv_checked`` and ``report_dir``) of ``promoted``, traded on ``prices``."""
    name, session, record = promoted.name, cycle["session"], cycle["summary"]
    report = record["cycle"]
    equity = pd.Series({s: e for s, e in ledger.equity_history(name) if s <= session}, dtype=float)
    equity.index = pd.DatetimeIndex(pd.to_datetime(equity.index))
    cycles = [c for c in ledger.cycles(name)
              if c["id"] <= cycle["id"] and c["finished_at"] and not c["summary"].get("dry_run")]
    first = pd.Timestamp(cycles[0]["session"]) if cycles else pd.Timestamp(session)
    starting_cash = (promoted.starting_cash if cycle["broker"] == "sim"
                     else float(equity.iloc[0]) if len(equity) else 0.0)
    pnl = daily_pnl(equity, starting_cash)
    intents = ledger.intents(name)  # every order of the strategy, in the ledger's order
    fills = slippage([i for i in intents if i.session <= session])
    expected, holdings = expected_backtest(promoted.weights, prices, first,
                                           promoted.config.backtest_model(capital=promoted.starting_cash))
    weights_by_session = {c["session"]: c["summary"].get("weights") or {} for c in cycles}
    tracking = drift(pnl, weights_by_session, expected, holdings, promoted.config.paper.max_tracking_error,
                     promoted.config.sessions_per_year)
    orders = [dataclasses.asdict(i) for i in intents if i.session == session]
    manifest = read_json(promoted.run_dir / "manifest.json") or {}
    return {
        "strategy": name, "broker": cycle["broker"], "session": session, "written_at": now_utc(),
        "status": cycle["status"], "decision": record["decision"], "rebalance": record["targets"] is not None,
        "kill_switch": {"state": report["kill_switch"], "reason": report["kill_switch_reason"]},
        "cycle": report,
        "account": {"equity": report["equity"], "cash": report["cash"], "starting_cash": starting_cash,
                    "pnl_total": None if report["equity"] is None else report["equity"] - starting_cash,
                    "daily_pnl": _num(pnl["pnl"].iloc[-1]) if len(pnl) else None},
        "positions": _positions_table(report["positions"], record["prices"], record["targets"], report["equity"]),
        "open_orders": [o for o in orders if o["status"] in OPEN],
        "session_orders": orders,
        "pnl": [{"session": f"{d:%Y-%m-%d}", **{k: _num(v) for k, v in row.items()}} for d, row in pnl.iterrows()],
        "slippage": {"mean_bps": mean_slippage_bps(fills), "fills": len(fills),
                     "recent": fills.tail(20).to_dict(orient="records")},
        "drift": tracking,
        "execution": _execution(promoted, ledger, cycle, prices),
        "equity_chart": _equity_chart(pnl, tracking),
        "book_vs_targets": book_vs_targets(cycles),
        "adv_checked": record["adv_checked"],
        "promoted": {"run_id": promoted.record.get("run_id"), "promoted_at": promoted.record.get("promoted_at"),
                     "override_reason": promoted.record.get("override_reason"),
                     "gate_passed": (promoted.record.get("gate") or {}).get("passed")},
        "analyst": (manifest.get("llm") or {}).get("analyst") or "unknown: the promoted run's manifest has no analyst",
    }


EXECUTION_ROWS = 20  # the latest parent orders shown


def _execution(promoted: Promoted, ledger: Ledger, cycle: dict, prices: pd.DataFrame) -> dict:
    """The execution report: how the strategy's orders are worked and, per parent order filled by
    this cycle's session, its shortfall and benchmarks (`research_lib.trading.execution_quality`;
    its parts and benchmarks on the simulated broker only, whose intraday market can be made again)."""
    config, simulated = promoted.config.execution, cycle["broker"] == "sim"
    half_spread = promoted.config.backtest.spread_bps / 1e4 if simulated else None
    orders = execution_quality(ledger, promoted.name, prices, half_spread, up_to=cycle["session"],
                               latest=EXECUTION_ROWS)
    return {"algorithm": config.algorithm, "config": config.model_dump(), "orders": orders, "simulated": simulated}


def _equity_chart(pnl: pd.DataFrame, tracking: dict) -> dict:
    """Paper equity per session and the backtest's expectation over the compared sessions."""
    equity = [(f"{d:%Y-%m-%d}", _num(e)) for d, e in pnl["equity"].items()] if len(pnl) else []
    return {"sessions": [s for s, _ in equity], "paper": [e for _, e in equity],
            "expected": expected_equity(equity, tracking.get("by_session") or [])}


def book_vs_targets(cycles: list[dict]) -> dict:
    """Per finished cycle (oldest first): the book's gross exposure at the cycle, the targets' gross
    exposure, and the share of the book off target, half the sum of ``|weight - target|`` over
    the symbols of either (0: on target; 0.5: in cash against a fully invested target; 1: two fully
    invested books with nothing in common). A cycle that holds (no new targets) is compared with
    the targets in force, the latest earlier ones; sessions before any targets have None. A cycle
    that never read its account (it failed first: no equity) is left out rather than drawn as an
    empty book; a missing weight or target counts as 0."""
    out = {"sessions": [], "held_gross": [], "target_gross": [], "off_target": []}
    targets = None
    for c in cycles:
        if c["summary"].get("targets") is not None:  # {} is a decision too: all cash
            targets = {s: _num(w) or 0.0 for s, w in c["summary"]["targets"].items()}
        if _num(c["summary"].get("equity")) is None:
            continue
        weights = {s: _num(w) or 0.0 for s, w in (c["summary"].get("weights") or {}).items()}
        out["sessions"].append(c["session"])
        out["held_gross"].append(sum(abs(w) for w in weights.values()))
        if targets is None:
            out["target_gross"].append(None)
            out["off_target"].append(None)
            continue
        symbols = set(weights) | set(targets)
        out["target_gross"].append(sum(abs(t) for t in targets.values()))
        out["off_target"].append(0.5 * sum(abs(weights.get(s, 0.0) - targets.get(s, 0.0)) for s in symbols))
    return out


def _positions_table(positions: dict[str, float], prices: dict[str, float], targets: dict[str, float] | None,
                     equity: float | None) -> list[dict]:
    """The positions the cycle reconciled, valued at the reference prices, beside the targets."""
    rows = []
    for symbol, quantity in sorted(positions.items()):
        price = _num(prices.get(symbol))
        value = None if price is None else quantity * price
        rows.append({"symbol": symbol, "quantity": quantity, "price": price, "value": value,
                     "weight": value / equity if value is not None and equity else None,
                     "target": None if targets is None else _num(targets.get(symbol, 0.0))})
    return rows


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def write_session_report(result: dict, folder: Path) -> Path:
    """``cycle.json``, then ``summary.html``, in ``folder`` (each written atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / CYCLE_FILE, result)
    render_to(folder / SUMMARY_FILE, "paper.html.j2", r=result)
    return folder


def raise_session_alerts(result: dict, folder: Path) -> None:
    """Alert on what a person must look at: a reconciliation mismatch, a kill switch tightened by
    the cycle, drift beyond tolerance (`research_lib.alerts`; delivery never raises, and a repeat
    within the de-duplication window is not sent again)."""
    name, session, cycle = result["strategy"], result["session"], result["cycle"]
    common = {"strategy": name, "session": session, "report": str(folder / SUMMARY_FILE)}
    before, after = KillSwitch(cycle["kill_switch_before"]), KillSwitch(cycle["kill_switch"])
    if cycle["mismatches"]:
        alert("reconciliation_mismatch", f"{name} {session}: broker positions differ from the recorded fills; "
              f"HALTED. {result['kill_switch']['reason']}", key=name, mismatches=cycle["mismatches"], **common)
    elif after.rank > before.rank:
        alert("kill_switch", f"{name} {session}: kill switch {before.name} -> {after.name}: "
              f"{result['kill_switch']['reason']}", key=f"{name}:{after.value}", **common)
    if result["drift"]["flagged"]:
        d = result["drift"]
        alert("drift", f"{name} {session}: paper tracks its backtest with a tracking error of "
              f"{d['tracking_error']:.2%} over {d['sessions']} sessions (tolerance {d['max_tracking_error']:.2%})",
              key=name, tracking_error=d["tracking_error"], tolerance=d["max_tracking_error"], **common)
