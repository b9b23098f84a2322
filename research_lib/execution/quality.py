"""Execution quality of one parent order: implementation shortfall against the arrival price, and the
window's TWAP and VWAP as benchmarks it beat or missed.

Implementation shortfall (Perold), in basis points of the parent's value at the arrival price,
positive when it cost money, in parts that add up to the total:

- ``delay``: the move from the arrival (decision) price to the session's open, over the filled
  quantity;
- ``timing``: the fills' reference prices (the TWAP of each child's bars) against the open, over the
  filled quantity: the drift while the order was worked;
- ``spread`` and ``impact``: what the fills paid above (a sell: below) their reference prices, the
  half-spread and the rest;
- ``opportunity``: the unfilled quantity valued at the session's close against the arrival price.

Commissions are charged apart from the price and are not in these parts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.execution.fills import typical_prices

PARTS = ("delay", "timing", "spread", "impact", "opportunity")


def shortfall_bps(fills: pd.DataFrame, side: str, quantity: float, arrival: float, close: float,
                  open_: float | None = None) -> dict[str, float]:
    """The parts and ``total`` of the shortfall (see the module docstring). ``fills`` has a row per
    child: ``filled`` (shares), ``reference`` (price), ``spread`` and ``impact`` (fractions of the
    reference paid); ``open_`` None: no delay measured (the open is taken as the arrival price)."""
    sign = 1.0 if side == "buy" else -1.0
    value = quantity * arrival
    if not value > 0:
        return {**dict.fromkeys(PARTS, 0.0), "total": 0.0}
    start = arrival if open_ is None else open_
    q, ref = fills["filled"].to_numpy(dtype=float), fills["reference"].to_numpy(dtype=float)
    parts = {"delay": sign * q.sum() * (start - arrival),
             "timing": sign * float((q * (ref - start)).sum()),
             "spread": float((q * ref * fills["spread"].to_numpy(dtype=float)).sum()),
             "impact": float((q * ref * fills["impact"].to_numpy(dtype=float)).sum()),
             "opportunity": sign * (quantity - q.sum()) * (close - arrival)}
    out = {k: float(1e4 * v / value) for k, v in parts.items()}
    out["total"] = float(sum(out.values()))
    return out


def window_benchmarks(bars: pd.DataFrame, start: int, end: int) -> dict[str, float | None]:
    """TWAP (mean typical price) and VWAP (volume-weighted typical price; None without volume) of
    bars ``start`` to ``end - 1``."""
    inside = bars.iloc[start:end]
    typical = typical_prices(inside)
    volume = inside["volume"].to_numpy(dtype=float)
    return {"twap": float(typical.mean()) if len(typical) else None,
            "vwap": float((typical * volume).sum() / volume.sum()) if volume.sum() > 0 else None}


def average_price(fills: pd.DataFrame) -> float | None:
    """The fills' quantity-weighted average price (None: nothing filled)."""
    filled = fills["filled"].to_numpy(dtype=float)
    return float((filled * fills["price"].to_numpy(dtype=float)).sum() / filled.sum()) if filled.sum() > 0 else None


EVEN_BPS = 0.1  # an average fill within this of a benchmark neither beat nor missed it


def beat(side: str, average: float | None, benchmark: float | None) -> str | None:
    """``beat`` when an average fill is better than a benchmark price (bought below it, sold above
    it) by more than `EVEN_BPS`, ``missed`` when worse by more, else ``even``; None when either is
    unknown."""
    if average is None or benchmark is None or not benchmark > 0:
        return None
    better = 1e4 * (benchmark - average) / benchmark * (1.0 if side == "buy" else -1.0)
    return "beat" if better > EVEN_BPS else "missed" if better < -EVEN_BPS else "even"
