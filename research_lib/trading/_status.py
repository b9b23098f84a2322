"""`spartan status`, `halt` and `resume`, and the text the terminal and notebook 07 print.

Status reads the ledger and the simulated accounts and moves nothing; halt and resume move the
kill switch in the ledger (halt also cancels the open orders of the simulated accounts at once;
Alpaca's are cancelled at the next cycle).
"""

from __future__ import annotations

import dataclasses
import math

from research_lib import paths
from research_lib.broker import SimBroker
from research_lib.risk import KillSwitch, trading_state
from research_lib.trading._ledger import ALL_STRATEGIES, Ledger
from research_lib.trading._market import open_sim, sim_account
from research_lib.units import few_sessions_caveat
from research_lib.validation.promotion import load_promoted, promoted_names


def status(strategy: str | None = None) -> list[dict]:
    """Positions, cash, P&L, open orders and the kill switch of each promoted strategy (or one),
    from the ledger and the simulated account; nothing is moved or sent."""
    names = [strategy] if strategy else promoted_names()
    ledger = Ledger(paths.state_db())
    out = []
    for name in names:
        promoted = load_promoted(name)
        state, why = ledger.kill_switch(name)
        cycles = ledger.cycles(name)
        real = [c for c in cycles if not c["summary"].get("dry_run")]
        dry = [c for c in cycles if c["summary"].get("dry_run") and (not real or c["id"] > real[-1]["id"])]
        entry = {"strategy": name, "kill_switch": {"state": state.value, "reason": why},
                 "last_cycle": real[-1] if real else None, "last_dry_run": dry[-1] if dry else None,
                 "broker": promoted.config.paper.broker,
                 "account": None, "positions": [], "open_orders": []}
        if SimBroker.stored_account(paths.state_db(), sim_account(name)):
            sim = open_sim(promoted, paths.state_db())
            account, close = sim.account(), promoted.prices["close"].ffill().loc[sim.sim_date]
            entry["account"] = {"sim_date": f"{sim.sim_date:%Y-%m-%d}", "equity": account.equity,
                                "cash": account.cash, "pnl_total": account.equity - promoted.starting_cash}
            entry["positions"] = [{"symbol": s, "quantity": p.quantity, "value": p.quantity * float(close[s])}
                                  for s, p in sorted(sim.positions().items())]
            entry["open_orders"] = [dataclasses.asdict(o) for o in sim.open_orders()]
        out.append(entry)
    return out


def halt(strategy: str | None = None, reason: str = "halted by the user") -> list[str]:
    """Move the kill switch to HALTED for ``strategy`` (None: every strategy) and cancel the
    open orders of the affected simulated accounts at once (Alpaca's: at the next cycle).
    Returns the cancelled client_order_ids."""
    if strategy is not None:
        load_promoted(strategy)
    ledger = Ledger(paths.state_db())
    ledger.set_kill_switch(strategy or ALL_STRATEGIES, KillSwitch.HALTED, reason)
    cancelled = []
    for name in [strategy] if strategy else promoted_names():
        if not SimBroker.stored_account(paths.state_db(), sim_account(name)):
            continue
        sim = open_sim(load_promoted(name), paths.state_db())
        for order in sim.open_orders():
            sim.cancel_order(order.broker_id)  # the sim cancels at once; the ledger copies its answer
            after = sim.order_by_client_id(order.client_order_id)
            ledger.update_intent(order.client_order_id, after.status, reason=f"halted: {reason}")
            cancelled.append(order.client_order_id)
    return cancelled


def resume(strategy: str | None = None, reason: str = "resumed by the user") -> dict[str, tuple[KillSwitch, str]]:
    """Move the kill switch back to ACTIVE for ``strategy`` (None: the workspace-wide switch and
    every promoted strategy's own); return the state that now applies to each strategy concerned
    (the halt file, or the workspace-wide switch when resuming one strategy, may still hold it)."""
    if strategy is not None:
        load_promoted(strategy)
    ledger = Ledger(paths.state_db())
    names = [strategy] if strategy else promoted_names()
    for name in [strategy] if strategy else [ALL_STRATEGIES, *names]:
        if strategy or ledger.own_kill_switch(name)[0] is not KillSwitch.ACTIVE or name == ALL_STRATEGIES:
            ledger.set_kill_switch(name, KillSwitch.ACTIVE, reason)
    return {name: ledger.kill_switch(name) for name in names or [ALL_STRATEGIES]}


# ---------------------------------------------------------------- text for the terminal and notebook


def describe_session(result: dict) -> str:
    """A few lines on what a session did (printed by `spartan trade` and notebook 07)."""
    cycle, account, tracking = result["cycle"], result["account"], result["drift"]
    lines = [f"{result['strategy']} {result['session']} on {result['broker']}: {result['status']} "
             f"(decision {result['decision']}, {'rebalancing' if result['rebalance'] else 'holding'})",
             f"  {trading_state(result['kill_switch']['state'])}",
             f"  orders: {len(cycle['sent'])} sent, {len(cycle['adopted'])} adopted, {len(cycle['rejected'])} rejected, "
             f"{len(cycle['cancelled'])} cancelled; {len(result['open_orders'])} open at the broker",
             f"  equity {_money(account['equity'])}, cash {_money(account['cash'])}, P&L "
             f"{_money(account['daily_pnl'])} (since the previous cycle), since start {_money(account['pnl_total'])}"]
    if tracking["tracking_error"] is not None:
        lines.append(f"  against the backtest ({tracking['sessions']} sessions): tracking error "
                     f"{tracking['tracking_error']:.2%}{' (ABOVE TOLERANCE)' if tracking['flagged'] else ''}, "
                     f"book overlap {tracking['signal_agreement']:.0%}")
        if caveat := few_sessions_caveat(tracking["sessions"]):
            lines[-1] += f" ({caveat})"
    lines += [f"  rejected {r['side']} {r['symbol']}: {r['reason']}" for r in cycle["rejected"]]
    if result["kill_switch"]["state"] != "active":
        lines.append(f"  kill switch: {result['kill_switch']['reason']}")
    return "\n".join(lines)


def describe_status(entries: list[dict]) -> str:
    """`spartan status`'s text for `status`'s entries: per strategy its trading state, last real
    cycle (and a later dry run beside it), the simulated account, and positions and open orders
    as tables with headers."""
    if not entries:
        return "No promoted strategy. Promote a validated run with `spartan promote reports/runs/<run_id>`."
    out = []
    for e in entries:
        switch = e["kill_switch"]
        out.append(f"{e['strategy']}  {trading_state(switch['state'])}; last change: {switch['reason']}")
        last, dry = e["last_cycle"], e.get("last_dry_run")
        out.append(f"  last cycle:   {last['session']} on {last['broker']}, {last['status']}" if last else
                   "  never traded: spartan trade --strategy " + e["strategy"])
        if dry:
            out.append(f"  last dry run: {dry['session']} on {dry['broker']}, {dry['status']} (sent nothing)")
        if e["account"]:
            a = e["account"]
            out.append(f"  sim account at {a['sim_date']}: equity {_money(a['equity'])}, cash {_money(a['cash'])}, "
                       f"P&L since start {_money(a['pnl_total'])}")
        if e["positions"]:
            out += ["  positions:", *_table(("symbol", "quantity", "value"), (False, True, True),
                                            [(p["symbol"], _quantity(p["quantity"]), _money(p["value"]))
                                             for p in e["positions"]])]
        if e["open_orders"]:
            out += ["  open orders:", *_table(("side", "symbol", "quantity", "client order id"),
                                              (False, False, True, False), [(o["side"], o["symbol"], _quantity(o["quantity"]), o["client_order_id"])
                                               for o in e["open_orders"]])]
    return "\n".join(out)


def _table(headers: tuple[str, ...], numeric: tuple[bool, ...], rows: list[tuple[str, ...]],
           indent: str = "    ") -> list[str]:
    """Lines of a plain-text table: a header row, then rows; the ``numeric`` columns right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells) -> str:
        return indent + "  ".join(str(c).rjust(w) if n else str(c).ljust(w)
                                  for c, w, n in zip(cells, widths, numeric)).rstrip()
    return [line(headers), *(line(row) for row in rows)]


def _number(value, decimals: int) -> str:
    """``value`` with thousands separators and ``decimals``; "n/a" when missing or not finite."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return f"{value:,.{decimals}f}" if math.isfinite(value) else "n/a"


def _quantity(value) -> str:
    return _number(value, 4)  # shares


def _money(value) -> str:
    return _number(value, 2)
