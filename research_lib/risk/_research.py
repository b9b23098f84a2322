"""The pre-trade checks applied to a research rebalance: from target weights to the weights
the risk layer would let through, with what it clamped or rejected and why.

A research book is a notional account of ``equity`` whose positions are the current
weights; moving it to the target weights takes orders sized in shares at the decision close
and checked by `check_orders` as paper trading checks real orders, with two differences:
research orders fill at once, so the open-order and daily order counts do not apply; and a
trade larger than ``max_order_notional`` is sent as several orders no larger than it (as an
execution algorithm would), rather than rejected. The reference prices are the decision
closes themselves, so they are always fresh.
"""

from __future__ import annotations

import datetime as dt
import math
import sys

import pandas as pd

from research_lib.risk._checks import check_orders
from research_lib.risk._kill_switch import KillSwitch
from research_lib.risk._limits import RiskInputError, RiskLimits
from research_lib.risk._orders import Order, ReferencePrice, Side

EVENT_COLUMNS = ["date", "symbol", "action", "proposed_weight", "final_weight", "reason"]
# Stands in for the average daily volume of a symbol whose data has no volume: the share of
# ADV check then never binds. Research only; paper trading gets volume from the broker and
# fails closed without it.
UNKNOWN_VOLUME = sys.float_info.max


def clamp_weights(current: pd.Series, target: pd.Series, prices: pd.Series, limits: RiskLimits, equity: float,
                  when: dt.datetime, adv: pd.Series | None = None,
                  min_trade: float = 1e-6) -> tuple[pd.Series, pd.DataFrame]:
    """The weights after the pre-trade checks of the orders from ``current`` to ``target``.

    Parameters
    ----------
    current, target : Series (symbols,)
        Weights now (after drift) and wanted, fractions of ``equity``; missing symbols are 0.
    prices : Series (symbols,)
        Decision closes, positive for every symbol held or traded.
    limits : RiskLimits
    equity : float
        Notional account value the weights are fractions of.
    when : datetime
        Decision time; the reference prices are dated then.
    adv : Series (symbols,), optional
        Average daily volume in shares; None or NaN: the ADV check is not applied (research
        data without volume).
    min_trade : float
        Weight changes smaller than this are not traded.

    Returns
    -------
    (Series, DataFrame)
        The weights once every order sent is filled, on the union of both indexes, and one
        row per clamped or rejected order (columns ``EVENT_COLUMNS``).
    """
    symbols = current.index.union(target.index)
    now = current.reindex(symbols, fill_value=0.0).astype(float)
    wanted = target.reindex(symbols, fill_value=0.0).astype(float)
    px = prices.reindex(symbols)
    involved = symbols[(now != 0) | (wanted != 0)]
    unpriced = [s for s in involved if not (px[s] > 0)]
    if unpriced:
        raise RiskInputError(f"no positive decision price on {when:%Y-%m-%d} for {unpriced}; give them weight 0 "
                             "(a symbol without a price cannot be held or traded)")
    shares = now * equity / px
    volume = (adv.reindex(symbols) if adv is not None else pd.Series(float("nan"), index=symbols)).fillna(UNKNOWN_VOLUME)
    orders = []
    for symbol in involved:
        delta = wanted[symbol] - now[symbol]
        if abs(delta) < min_trade:
            continue
        # A full exit sells exactly the shares held, so rounding never looks like a short.
        quantity = abs(shares[symbol]) if wanted[symbol] == 0 else abs(delta) * equity / px[symbol]
        pieces = max(1, math.ceil(quantity * px[symbol] / limits.max_order_notional - 1e-9))
        orders += [Order(symbol, Side.BUY if delta > 0 else Side.SELL, quantity=float(quantity / pieces))] * pieces
    unlimited = limits.model_copy(update={"max_open_orders": len(orders), "max_daily_orders": len(orders)})
    decision = check_orders(orders, {s: float(shares[s]) for s in involved},
                            {s: ReferencePrice(float(px[s]), when) for s in involved}, unlimited, KillSwitch.ACTIVE,
                            equity, when, adv={s: float(volume[s]) for s in involved})
    after = pd.Series(decision.positions_after, dtype=float).reindex(symbols, fill_value=0.0)
    weights = (after * px / equity).where(after != 0, 0.0)
    events = [{"date": pd.Timestamp(when).normalize(), "symbol": c.original.symbol, "action": "clamped",
               "proposed_weight": wanted[c.original.symbol], "final_weight": weights[c.original.symbol],
               "reason": c.reason} for c in decision.clamped]
    events += [{"date": pd.Timestamp(when).normalize(), "symbol": r.order.symbol, "action": "rejected",
                "proposed_weight": wanted[r.order.symbol], "final_weight": weights[r.order.symbol],
                "reason": r.reason} for r in decision.rejected]
    # A trade split in several orders is reported once, by its first clamp or rejection.
    return weights.rename("weight"), pd.DataFrame(events, columns=EVENT_COLUMNS).drop_duplicates("symbol")
