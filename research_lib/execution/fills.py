"""How one child order fills on the intraday market: the rule the execution simulator and the
simulated broker share.

A child works evenly over its bars: its reference price is their mean typical price ((open + high +
low + close) / 4, the TWAP of its span), it pays the half-spread and the square-root impact of the
quantity it trades in each bar, and it never fills beyond its limit: when the price its whole
quantity would pay passes the limit, it fills the whole lots that keep it inside (none if even the
first would not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SliceFill:
    """What a child filled and at what price; ``reference`` is its span's TWAP, ``spread`` and
    ``impact`` the fractions of it the fill paid."""

    filled: float
    price: float
    reference: float
    spread: float
    impact: float


def span_reference(bars: pd.DataFrame, first: int, count: int) -> float:
    """The mean typical price of ``count`` bars from ``first`` (what a child working evenly over them
    trades at before costs)."""
    if not (0 <= first and count >= 1 and first + count <= len(bars)):
        raise ValueError(f"bars {first} to {first + count - 1} are outside the session's {len(bars)} bars")
    span = bars.iloc[first:first + count]
    return float(span[["open", "high", "low", "close"]].to_numpy(dtype=float).mean())


def fill_slice(side: str, quantity: float, lot_size: float, limit_price: float | None, reference: float,
               half_spread: float, impact_per_share: float, bars: int = 1) -> SliceFill:
    """Fill ``quantity`` (whole lots of ``lot_size``) worked evenly over ``bars`` bars at ``reference``.

    ``impact_per_share`` is the impact rate of one share traded in one bar (`backtest.impact_rate` of
    one share's value): ``q`` shares a bar pay ``impact_per_share * sqrt(q)``. ``limit_price`` None:
    no limit.
    """
    sign = 1.0 if side == "buy" else -1.0
    per_bar = quantity / bars

    def rate(q_per_bar: float) -> float:
        return impact_per_share * math.sqrt(q_per_bar) if q_per_bar > 0 else 0.0

    filled = quantity
    if limit_price is not None:
        room = sign * (limit_price / reference - 1.0) - half_spread  # what impact may add before the limit binds
        if room <= 0:
            filled = 0.0
        elif rate(per_bar) > room:
            fits = bars * (room / impact_per_share) ** 2  # sqrt(q / bars) * per_share <= room
            filled = min(quantity, math.floor(fits / lot_size + 1e-9) * lot_size)
    impact = rate(filled / bars)
    return SliceFill(filled, reference * (1.0 + sign * (half_spread + impact)), reference, half_spread, impact)


def typical_prices(bars: pd.DataFrame) -> np.ndarray:
    """Each bar's typical price, (open + high + low + close) / 4."""
    return bars[["open", "high", "low", "close"]].mean(axis=1).to_numpy()
