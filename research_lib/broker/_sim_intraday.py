"""The simulated broker's child orders: filled over their bars of the session on the intraday market.

A child order of an execution schedule is stored with its limit price, first bar and number of bars
(`SimBroker.submit_order`'s ``limit_price``, ``bar``, ``bars``). When the sim moves into the next
session, each works evenly over its bars of that session's intraday bars, modelled from the closes
(`research_lib.execution.session_bars`: seeded, the same on every run; SIMULATED), and fills by
`research_lib.execution.fill_slice` with the account's costs; what does not fill inside its limit
expires at its last bar, with the reason.
"""

from __future__ import annotations

import math
import numbers
import sqlite3
from typing import Callable

import numpy as np
import pandas as pd

from research_lib.broker._base import OrderRejected
from research_lib.broker._sim_store import QUANTITY_TOLERANCE, SimFill, SimStore
from research_lib.execution.fills import fill_slice, span_reference
from research_lib.execution.intraday import BARS_PER_SESSION, session_bars


def fill_worked_orders(conn: sqlite3.Connection, store: SimStore, row: int, *, sessions: pd.DatetimeIndex,
                       close: np.ndarray, volume: np.ndarray | None, column: dict[str, int],
                       impact: Callable[[str, float], float], spread: float, commission: float) -> None:
    """Fill each open child order over its bars of session ``row`` (see the module docstring).

    ``close`` and ``volume`` are sessions x symbols (``column`` maps a symbol to its column; volume
    None: the prices have none), ``impact(symbol, value)`` the impact in currency of trading
    ``value`` in one go at ``row``, ``spread`` and ``commission`` fractions of the value traded.
    """
    session, market = sessions[row], {}
    day = f"{session:%Y-%m-%d}"
    for broker_id, cid, symbol, side, quantity, limit, first, count in store.worked_order_rows(conn):
        j = column[symbol]
        if not np.isfinite(close[row, j]):
            store.close_order(conn, broker_id, "expired", f"{symbol} has no close on {day}, its fill session")
            continue
        if symbol not in market:
            market[symbol] = session_bars(pd.Series(close[: row + 1, j], sessions[: row + 1], name=symbol), session,
                                          volume=None if volume is None else volume[row, j])
        reference = span_reference(market[symbol], first, count)
        per_share = impact(symbol, reference) / reference  # the impact rate of one share; fill_slice applies the sqrt law
        fill = fill_slice(side, quantity, QUANTITY_TOLERANCE, limit, reference, spread, per_share, count)
        bars = f"bars {first} to {first + count - 1} of {day} (SIMULATED intraday market)"
        if fill.filled <= QUANTITY_TOLERANCE:
            store.close_order(conn, broker_id, "expired", f"nothing filled inside the limit {limit:g} in {bars}")
            continue
        rest = None if fill.filled >= quantity - QUANTITY_TOLERANCE else (
            f"{quantity - fill.filled:g} of {quantity:g} unfilled: the limit {limit:g} bound in {bars}")
        store.book_fill(conn, SimFill(broker_id, cid, session.date(), symbol, side, fill.filled, price=float(fill.price),
                                      commission=float(commission * fill.filled * reference)), rest)


def worked_order(limit_price: float | None, bar: int | None, bars: int) -> tuple[float, int, int] | None:
    """A child order's (limit price, first bar, bars), checked; None for a market-on-close order."""
    if limit_price is None and bar is None:
        return None
    if limit_price is None or bar is None:
        raise OrderRejected(f"limit_price {limit_price!r} and bar {bar!r}: the sim works a limit order only over bars "
                            "of the next session; give both (a child order of a schedule) or neither (market-on-close).")
    if not (isinstance(limit_price, numbers.Real) and math.isfinite(limit_price) and limit_price > 0):
        raise OrderRejected(f"limit_price {limit_price!r} must be a finite price > 0.")
    if not (isinstance(bar, numbers.Integral) and isinstance(bars, numbers.Integral)
            and 0 <= bar and bars >= 1 and bar + bars <= BARS_PER_SESSION):
        raise OrderRejected(f"bars {bar!r} to {bar!r} + {bars!r} - 1 are outside the session's {BARS_PER_SESSION} "
                            "5-minute bars (0 is 09:30).")
    return float(limit_price), int(bar), int(bars)
