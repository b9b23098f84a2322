"""The simulated fills of a schedule on a session's bars, and its implementation shortfall.

A slice fills by `fills.fill_slice`: at the mean typical price ``(open + high + low + close) / 4`` of
the bars it works over, plus (for a buy; minus for a sell) half the quoted spread and a temporary
square-root impact ``impact_coefficient * daily_volatility * sqrt(quantity per bar / daily_volume)``,
the backtest's impact law applied to each child: the whole parent sent at once pays exactly the
backtest's impact, a sliced parent pays it on smaller pieces but carries the price's drift over the
window. A slice whose price would pass its limit fills only the quantity that keeps it inside (none
if even the first share would not); the rest is unfilled.

Implementation shortfall against the arrival price is `quality.shortfall_bps` (the arrival price
is the session's open here, so ``delay`` is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from research_lib.backtest import impact_rate
from research_lib.execution.fills import fill_slice, span_reference
from research_lib.execution.quality import average_price, shortfall_bps, window_benchmarks
from research_lib.execution.schedule import ChildSlice


@dataclass(frozen=True)
class MarketModel:
    """The intraday market's costs: the quoted spread (a fill pays half) and temporary impact. The
    default coefficient, 0.5, is mid-range of published estimates of the square-root law's
    prefactor (about 0.5 to 1 for US large caps); the backtest's ``impact_coefficient`` is the
    same number when volume is known."""

    spread_bps: float = 5.0
    impact_coefficient: float = 0.5

    def __post_init__(self):
        for name in ("spread_bps", "impact_coefficient"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} is {value}; pass a finite number >= 0")


@dataclass
class ExecutionResult:
    """What a schedule did: per slice, and the parent's shortfall against the arrival price."""

    side: str
    quantity: float
    arrival_price: float
    close_price: float
    fills: pd.DataFrame  # client_order_id, bar, quantity, filled, price, reference
    shortfall_bps: dict[str, float] = field(default_factory=dict)
    benchmarks: dict[str, float] = field(default_factory=dict)

    @property
    def filled(self) -> float:
        return float(self.fills["filled"].sum())

    @property
    def average_price(self) -> float | None:
        return average_price(self.fills)


def simulate_execution(slices: list[ChildSlice], bars: pd.DataFrame, *, side: str, quantity: float,
                       arrival_price: float, daily_volatility: float, model: MarketModel,
                       window: tuple[int, int] | None = None) -> ExecutionResult:
    """Fill ``slices`` on ``bars`` (one session, `intraday.intraday_bars`'s columns) under ``model``.

    ``quantity`` is the parent's (the unfilled rest is what the slices did not fill, including what
    the schedule left unplanned); ``daily_volatility`` the daily standard deviation of returns
    (known before the session). ``window`` (first bar, bar after the last) sets the TWAP and VWAP
    benchmarks' bars (default: the whole session).
    """
    if side not in ("buy", "sell"):
        raise ValueError(f"side is {side!r}; pass 'buy' or 'sell'")
    if not (math.isfinite(daily_volatility) and daily_volatility >= 0):
        raise ValueError(f"daily_volatility is {daily_volatility}; pass a finite number >= 0")
    day_volume = float(bars["volume"].sum())
    half_spread = model.spread_bps / 2e4
    # The backtest's law, impact_rate(q) = coefficient * vol * sqrt(q / volume): its rate for one share,
    # times sqrt(q) for q shares (inverted below to find how much fits inside a limit).
    impact_per_share = (float(impact_rate(model.impact_coefficient, daily_volatility, 1.0, day_volume))
                        if day_volume else math.inf)
    rows = []
    for s in slices:
        if not (0 <= s.bar and s.bar + s.bars <= len(bars)):
            raise ValueError(f"slice {s.client_order_id} works in bars {s.bar} to {s.bar + s.bars - 1}, but the session "
                             f"has {len(bars)} bars")
        fill = fill_slice(side, s.quantity, s.lot_size, s.limit_price, span_reference(bars, s.bar, s.bars), half_spread,
                          impact_per_share, s.bars)
        rows.append({"client_order_id": s.client_order_id, "bar": s.bar, "quantity": s.quantity, "filled": fill.filled,
                     "price": fill.price, "reference": fill.reference, "spread": fill.spread, "impact": fill.impact})
    fills = pd.DataFrame(rows, columns=["client_order_id", "bar", "quantity", "filled", "price", "reference", "spread",
                                        "impact"])
    close = float(bars["close"].iloc[-1])
    result = ExecutionResult(side, quantity, arrival_price, close, fills)
    result.shortfall_bps = shortfall_bps(fills, side, quantity, arrival_price, close)
    result.benchmarks = {**window_benchmarks(bars, *(window or (0, len(bars)))), "arrival": arrival_price}
    return result
