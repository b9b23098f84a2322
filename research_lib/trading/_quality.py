"""The execution report of paper trading on the simulated broker: per parent order, what it cost
against its arrival price and how it did against the TWAP and VWAP of its window.

A parent is either a schedule (`Ledger.schedules`: its children are the orders) or a market order
(one intent, filled at the next close). Its fills are the ledger's (filled quantity and average
price per child); the bars they are measured on are the session's intraday bars as the simulated
broker made them (`research_lib.execution.session_bars`: seeded, the same every time), so the
report is SIMULATED like the market it measures. The reference price of a child is the TWAP of its
bars, of a market order the session's close (where the sim fills it); what its fill paid beyond
that is the half-spread of the account's cost model and the rest, impact. Orders still open or
not sent yet are left out until they are final.

At Alpaca (``half_spread`` None) the orders fill in the session they are sent, and no intraday
bars are fetched: a row has the arrival price, the average fill, the total shortfall and its
unfilled part, but no delay, timing, spread or impact, and no benchmarks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.execution import (BARS_PER_SESSION, average_price, beat, session_bars, shortfall_bps,
                                    span_reference, window_benchmarks)
from research_lib.trading._ledger import FINAL_STATUSES, Intent, Ledger


def execution_quality(ledger: Ledger, strategy: str, prices: pd.DataFrame, half_spread: float | None,
                      up_to: str | None = None, latest: int | None = None) -> list[dict]:
    """One row per parent order of ``strategy`` (sessions up to ``up_to``; the ``latest`` ones
    only, if given) whose orders are all final and that filled something or was worked, oldest
    first: see the module docstring. ``half_spread`` None: not the simulated broker."""
    intents = [i for i in ledger.intents(strategy) if up_to is None or i.session <= up_to]
    schedules = [s for s in ledger.schedules(strategy) if up_to is None or s.session <= up_to]
    by_id = {i.client_order_id: i for i in intents}
    children = {c["client_order_id"] for s in schedules for c in s.slices}
    parents = []  # (session, symbol, side, quantity, arrival, algorithm, [(child or None, intent)])
    for schedule in schedules:
        kids = [(c, by_id[c["client_order_id"]]) for c in schedule.slices if c["client_order_id"] in by_id]
        if kids and all(i.status in FINAL_STATUSES for _, i in kids):
            parents.append((schedule.session, schedule.symbol, schedule.side, schedule.quantity,
                            schedule.arrival_price, schedule.algorithm, kids))
    parents += [(i.session, i.symbol, i.side, i.quantity, i.decision_price, "market", [(None, i)]) for i in intents
                if i.client_order_id not in children and i.status == "filled"]  # a delisting is not an order
    parents.sort(key=lambda parent: parent[0])
    rows = (_row(*parent, prices, half_spread) for parent in (parents[-latest:] if latest else parents))
    return [row for row in rows if row is not None]


def _row(session: str, symbol: str, side: str, quantity: float, arrival: float, algorithm: str,
         kids: list[tuple[dict | None, Intent]], prices: pd.DataFrame, half_spread: float | None) -> dict | None:
    close = prices["close"][symbol]
    simulated = half_spread is not None  # the sim fills in the next session, Alpaca in the session itself
    later = close.index[close.index > pd.Timestamp(session)] if simulated else close.index[close.index >= pd.Timestamp(session)]
    if not len(later) or not np.isfinite(close.loc[later[0]]):
        return None
    day = later[0]
    if not simulated:
        return _unmodelled_row(symbol, side, session, quantity, arrival, algorithm, kids, float(close.loc[day]), day)
    volume = float(prices["volume"][symbol].loc[day]) if "volume" in prices.columns.get_level_values(0) else None
    known_volume = volume is not None and np.isfinite(volume) and volume > 0
    bars = session_bars(close.loc[:day], day, volume=volume if known_volume else None)
    sign = 1.0 if side == "buy" else -1.0
    rows = []
    for child, intent in kids:
        reference = (span_reference(bars, child["bar"], child["bars"]) if child is not None
                     else float(bars["close"].iloc[-1]))
        filled, price = intent.filled_quantity or 0.0, intent.filled_avg_price
        paid = sign * (price / reference - 1.0) if filled and price else 0.0
        rows.append({"filled": filled, "price": price or 0.0, "reference": reference, "spread": half_spread if filled else 0.0,
                     "impact": paid - half_spread if filled else 0.0})
    fills = pd.DataFrame(rows)
    first = min((c["bar"] for c, _ in kids if c), default=0)
    end = max((c["bar"] + c["bars"] for c, _ in kids if c), default=BARS_PER_SESSION)
    bench = window_benchmarks(bars, first, end)
    avg = average_price(fills)
    filled = float(fills["filled"].sum())
    window_volume = float(bars["volume"].iloc[first:end].sum())
    return {"session": session, "fill_session": f"{day:%Y-%m-%d}", "symbol": symbol, "side": side,
            "algorithm": algorithm, "orders": len(kids), "quantity": quantity, "filled": filled,
            "arrival": arrival, "average_fill": avg,
            "shortfall_bps": shortfall_bps(fills, side, quantity, arrival, float(bars["close"].iloc[-1]),
                                           float(bars["open"].iloc[0])),
            "participation": filled / window_volume if known_volume and window_volume > 0 else None,
            "window": f"{bars.index[first]:%H:%M}-{bars.index[end - 1] + pd.Timedelta(minutes=5):%H:%M}",
            "twap": bench["twap"], "vwap": bench["vwap"] if known_volume else None,
            "beat_twap": beat(side, avg, bench["twap"]), "beat_vwap": beat(side, avg, bench["vwap"]) if known_volume else None}


def _unmodelled_row(symbol: str, side: str, session: str, quantity: float, arrival: float, algorithm: str,
                    kids: list[tuple[dict | None, Intent]], close: float, day: pd.Timestamp) -> dict:
    """A row without intraday bars: the total shortfall and its unfilled part only (the fills are
    their own reference, so the rest of the total is not split)."""
    fills = pd.DataFrame([{"filled": i.filled_quantity or 0.0, "price": i.filled_avg_price or 0.0,
                           "reference": i.filled_avg_price or 0.0, "spread": 0.0, "impact": 0.0} for _, i in kids])
    parts = shortfall_bps(fills, side, quantity, arrival, close)
    first = min((c["bar"] for c, _ in kids if c), default=None)
    end = max((c["bar"] + c["bars"] for c, _ in kids if c), default=None)
    return {"session": session, "fill_session": f"{day:%Y-%m-%d}", "symbol": symbol, "side": side,
            "algorithm": algorithm, "orders": len(kids), "quantity": quantity, "filled": float(fills["filled"].sum()),
            "arrival": arrival, "average_fill": average_price(fills),
            "shortfall_bps": {**dict.fromkeys(("delay", "timing", "spread", "impact"), None),
                              "opportunity": parts["opportunity"], "total": parts["total"]},
            "participation": None, "twap": None, "vwap": None, "beat_twap": None, "beat_vwap": None,
            "window": "at market" if first is None else f"bars {first}-{end - 1}"}
