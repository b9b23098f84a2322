"""The paper-trading section of the dashboard, per strategy: the latest
``reports/paper/<strategy>/<session>/cycle.json`` (positions, account, drift against the
backtest) and the ledger in ``data/spartan.sqlite`` (equity history, recent orders, kill
switch), against the promoted ``risk`` limits. Fractions stay fractions (0.25 is 25 %).
"""

from __future__ import annotations

import json
from pathlib import Path

from research_lib import paths
from research_lib._io import load_yaml
from research_lib.reports._reading import PROBLEMS, href, number, problem
from research_lib.trading import Ledger

RECENT_ORDERS = 15
SLIPPAGE_TARGET_BPS = 10.0  # the roadmap's line: average slippage under 0.1 %
# (label, promoted risk key, how the current value is found) of the limits the dashboard shows
LIMITS = (("Largest position", "max_weight", "|weight| of the largest position"),
          ("Gross exposure", "max_gross_exposure", "sum of |weights|"),
          ("Net exposure", "max_net_exposure", "|sum of weights|"),
          ("Daily loss", "daily_loss_limit", "loss since the previous cycle / its equity"),
          ("Drawdown", "drawdown_stop", "below the peak equity since the last resume"),
          ("Open orders", "max_open_orders", "open at the broker after the latest cycle"),
          ("Orders today", "max_daily_orders", "orders sent in the latest session"))


def paper_trading(reports_dir: str | Path, promoted: list[dict]) -> list[dict]:
    """One entry per promoted strategy (and per strategy with paper reports): the latest cycle,
    equity against the backtest, positions, recent orders, kill switch and limit usage."""
    reports_dir = Path(reports_dir)
    names = {Path(p["file"]).stem for p in promoted}
    names |= {d.name for d in (reports_dir / "paper").glob("*") if d.is_dir()}
    entries = []
    for name in sorted(names):
        try:
            entries.append(_strategy_paper(reports_dir, name, paths.state_db()))
        except PROBLEMS as err:  # a file of an unexpected shape: the strategy says so, the page stands
            entries.append({"strategy": name, "sessions": [], "latest": None, "cycle": None, "kill_switch": None,
                            "equity": {"sessions": [], "paper": [], "expected": []}, "orders": [], "limits": [],
                            "problems": [f"unreadable: the paper-trading files of {name} "
                                         f"({type(err).__name__}: {str(err)[:160]})"]})
    return entries


def _strategy_paper(reports_dir: Path, name: str, db: Path) -> dict:
    problems: list[str] = []
    risk = _promoted_risk(name, problems)
    sessions, latest, cycle = _session_reports(reports_dir, name, problems)
    state = _ledger_view(name, db, problems)
    if state is None:  # what the latest cycle.json recorded instead
        if cycle and not db.is_file():
            problems.append(f"no ledger: {db} is missing, so the kill switch and equity are the latest cycle.json's")
        switch = cycle.get("kill_switch") or {}
        state = {"kill_switch": {"state": str(switch.get("state") or "unknown"),
                                 "reason": f"{switch.get('reason')} (as of the latest cycle.json)"} if switch else None,
                 "equity": [(str(p.get("session")), number(p.get("equity"))) for p in cycle.get("pnl") or []],
                 "intents": [o for o in cycle.get("session_orders") or [] if isinstance(o, dict)]}
    sent_today = sum(o.get("session") == latest and o.get("status") not in ("not_sent", "rejected")
                     for o in state["intents"])
    equity = state["equity"]
    drift = cycle.get("drift") or {}
    return {"strategy": name, "problems": problems, "sessions": sessions, "latest": latest,
            "cycle": _cycle_view(cycle) if cycle else None, "kill_switch": state["kill_switch"],
            "equity": {"sessions": [s for s, _ in equity], "paper": [e for _, e in equity],
                       "expected": expected_equity(equity, drift.get("by_session") or [])},
            "orders": [_order_view(o) for o in reversed(state["intents"][-RECENT_ORDERS:])],
            "limits": limit_usage(risk, cycle, sent_today) if risk and cycle else []}


def _cycle_view(cycle: dict) -> dict:
    """What the page shows of a cycle.json, numbers as floats or None (a corrupt file shows n/a)."""
    account, drift, slipped = cycle.get("account") or {}, cycle.get("drift") or {}, cycle.get("slippage") or {}
    return {"broker": str(cycle.get("broker") or ""), "status": str(cycle.get("status") or ""),
            "decision": str(cycle.get("decision") or ""), "rebalance": bool(cycle.get("rebalance")),
            "account": {k: number(account.get(k)) for k in ("equity", "cash", "pnl_total", "daily_pnl")},
            "slippage": {"mean_bps": number(slipped.get("mean_bps")), "fills": int(number(slipped.get("fills")) or 0)},
            "drift": {"sessions": int(number(drift.get("sessions")) or 0), "flagged": bool(drift.get("flagged")),
                      **{k: number(drift.get(k)) for k in ("paper_return", "expected_return", "tracking_error")}},
            "positions": [{"symbol": str(p.get("symbol")),
                           **{k: number(p.get(k)) for k in ("quantity", "price", "value", "weight", "target")}}
                          for p in cycle.get("positions") or []]}


def _order_view(order: dict) -> dict:
    return {**{k: str(order.get(k) or "") for k in ("session", "client_order_id", "side", "symbol", "status",
                                                     "reason")},
            **{k: number(order.get(k)) for k in ("quantity", "filled_quantity", "filled_avg_price")}}


def _promoted_risk(name: str, problems: list[str]) -> dict | None:
    """The promoted ``params.risk`` limits of `LIMITS` (None, with a note, when unknown)."""
    path = paths.promoted_dir() / f"{name}.yaml"
    if not path.is_file():
        problems.append(f"not promoted (no params/promoted/{name}.yaml): its risk limits are unknown")
        return None
    try:
        risk = (load_yaml(path.read_text()) or {})["params"]["risk"]
        return {key: number(risk.get(key)) for _, key, _ in LIMITS}
    except PROBLEMS as err:
        problems.append(problem(path, paths.workspace_root(), err))
        return None


def _session_reports(reports_dir: Path, name: str, problems: list[str]) -> tuple[list[dict], str | None, dict]:
    """The strategy's session reports, newest first, and the latest readable cycle.json that
    is not a dry run (``(sessions, its session, its content)``)."""
    sessions, latest, cycle = [], None, {}
    folders = sorted((d for d in (reports_dir / "paper" / name).glob("*") if d.is_dir()), key=lambda d: d.name,
                     reverse=True)
    for folder in folders:
        summary = href(reports_dir, "paper", name, folder.name, "summary.html")
        if summary:
            sessions.append({"session": folder.name, "href": summary,
                             "notebook": href(reports_dir, "paper", name, folder.name, "07_paper_trade.html")})
        if latest is None and not folder.name.endswith("-dry-run") and (folder / "cycle.json").is_file():
            try:
                content = json.loads((folder / "cycle.json").read_text())
                if not isinstance(content, dict):
                    raise ValueError(f"a cycle.json is a JSON object, not {type(content).__name__}")
                latest, cycle = folder.name, content
            except PROBLEMS as err:
                problems.append(problem(folder / "cycle.json", reports_dir, err))
    return sessions, latest, cycle


def _ledger_view(name: str, db: Path, problems: list[str]) -> dict | None:
    """Kill switch, equity history and order intents of ``name`` from the ledger (None when there
    is no ledger yet; None with a note when it cannot be read)."""
    if not db.is_file():
        return None
    try:
        ledger = Ledger(db)
        state, why = ledger.kill_switch(name)
        return {"kill_switch": {"state": state.value, "reason": why},
                "equity": [(session, number(equity)) for session, equity in ledger.equity_history(name)],
                "intents": [vars(i) for i in ledger.intents(name)]}
    except PROBLEMS as err:
        problems.append(problem(db, db.parent.parent, err))
        return None


def expected_equity(equity: list[tuple[str, float | None]], by_session: list[dict]) -> list[float | None]:
    """The backtest's equity over the paper sessions, aligned with ``equity``: it starts at the
    paper equity of the first compared session and compounds the backtest's ``expected``
    return of each later one (``cycle.json["drift"]["by_session"]``); None elsewhere."""
    expected = {str(row.get("session")): row.get("expected") for row in by_session if isinstance(row, dict)}
    out, level = [], None
    for session, value in equity:
        if session in expected:
            level = value if level is None else level * (1.0 + (number(expected[session]) or 0.0))
        out.append(level if session in expected else None)
    return out


def limit_usage(risk: dict, cycle: dict, sent_today: int) -> list[dict]:
    """Each risk limit of `LIMITS` with its current value and ``fraction`` = value / limit (None
    when either is unknown or the limit is 0), from the latest cycle's positions and account."""
    weights = [w for w in (number(p.get("weight")) for p in cycle.get("positions") or []) if w is not None]
    report = cycle.get("cycle") or {}
    daily = number(report.get("daily_pnl"))
    current = {"max_weight": max((abs(w) for w in weights), default=0.0),
               "max_gross_exposure": sum(abs(w) for w in weights),
               "max_net_exposure": abs(sum(weights)),
               "daily_loss_limit": None if daily is None else max(0.0, -daily),
               "drawdown_stop": number(report.get("drawdown")),
               "max_open_orders": float(len(cycle.get("open_orders") or [])),
               "max_daily_orders": float(sent_today)}
    rows = []
    for label, key, meaning in LIMITS:
        value, limit = current[key], risk.get(key)
        rows.append({"label": label, "key": key, "meaning": meaning, "value": value, "limit": limit,
                     "count": key in ("max_open_orders", "max_daily_orders"),
                     "fraction": value / limit if value is not None and limit else None})
    return rows
