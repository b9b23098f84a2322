"""Alpaca's order rules for a crypto pair, from the pair's asset record: the minimum order size, the
increment a quantity moves by and the increment a price moves by (``min_order_size``,
``min_trade_increment``, ``price_increment``; BTC/USD: 0.0001 BTC, 0.0001 BTC, $1 in Alpaca's example).

A quantity is rounded down to its increment (never more than the risk checks passed) and refused
below the minimum; a limit price is rounded to its increment towards the inside of the limit (a
buy's down, a sell's up). Decimal arithmetic: 0.3 is three steps of 0.1, not two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from research_lib.broker._base import OrderRejected

__all__ = ["PairRules", "pair_limit", "pair_quantity"]


@dataclass(frozen=True)
class PairRules:
    """A pair's rules as Alpaca lists them; ``None`` where the record gives none."""

    min_order_size: float | None = None
    quantity_step: float | None = None
    price_step: float | None = None


def _on_step(value: float, step: float | None, rounding: str) -> float:
    if not step or not math.isfinite(step) or step <= 0:
        return value
    unit = Decimal(str(step))
    return float((Decimal(str(value)) / unit).to_integral_value(rounding=rounding) * unit)


def pair_quantity(symbol: str, quantity: float, rules: PairRules) -> float:
    """``quantity`` rounded down to the pair's increment (to 1e-9, Alpaca's precision, when the record
    gives none); `OrderRejected` (nothing sent) below its minimum."""
    rounded = _on_step(float(quantity), rules.quantity_step or 1e-9, ROUND_FLOOR)
    if rounded <= 0 or (rules.min_order_size and rounded < rules.min_order_size):
        raise OrderRejected(f"quantity {quantity!r} of {symbol} is below Alpaca's minimum order (min_order_size "
                            f"{rules.min_order_size}, in steps of {rules.quantity_step}); nothing was sent: the "
                            "difference to the target is too small to trade.")
    return rounded


def pair_limit(symbol: str, limit_price: float, side: str, rules: PairRules) -> float:
    """A limit price on the pair's price increment, inside the limit asked for; `OrderRejected` if
    no such price is above zero."""
    if not (math.isfinite(limit_price) and limit_price > 0):
        raise OrderRejected(f"limit_price {limit_price!r} must be a finite price > 0; nothing was sent.")
    rounded = _on_step(float(limit_price), rules.price_step, ROUND_FLOOR if side == "buy" else ROUND_CEILING)
    if rounded <= 0:
        raise OrderRejected(f"limit_price {limit_price!r} of {symbol} is below its price increment "
                            f"({rules.price_step}); nothing was sent.")
    return rounded
