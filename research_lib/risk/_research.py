"""The pre-trade checks applied to a research rebalance: from target weights to the weights
the risk layer would let through, with what it clamped or rejected and why.

A research book is a notional account of ``equity`` whose positions are the current
weights; moving it to the target weights takes one order per symbol, sized in shares at the
decision close and checked by `check_orders` as paper trading checks real orders, with two
differences: research orders fill at once, so the open-order and daily order counts do not
apply; and a trade larger than ``max_order_notional`` or ``max_order_quantity`` would be sent
as several equal orders within both (as an execution algorithm would) rather than rejected.
How many never changes what fits, since every sizing limit bounds a symbol's orders together
and the room it leaves does not depend on how a trade is split; so each trade is checked as
one order with those two caps lifted, and the cost of a rebalance does not grow with
``equity / max_order_notional``. The reference prices are the decision closes themselves, so
they are always fresh.

The verdict depends on the weights, not on ``equity``, as long as every trade is at least
`MIN_ORDER_QUANTITY` shares (smaller ones are rejected as untradable): every other limit is a
fraction of equity, except the share of ADV, which is of the symbol's orders together (give
``adv`` in shares for this ``equity``).
"""

from __future__ import annotations

import datetime as dt
import math
import sys

import numpy as np
import pandas as pd

from research_lib.risk._checks import _finite_positive, _shown, check_orders
from research_lib.risk._kill_switch import KillSwitch
from research_lib.risk._limits import RiskInputError, RiskLimits
from research_lib.risk._orders import Order, ReferencePrice, RiskDecision, Side

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
        Weights now (after drift) and wanted, fractions of ``equity``, finite, one per symbol;
        missing symbols are 0.
    prices : Series (symbols,)
        Decision closes, finite and positive for every symbol held or traded.
    limits : RiskLimits
    equity : float
        Notional account value the weights are fractions of, finite and positive.
    when : datetime
        Decision time; the reference prices are dated then.
    adv : Series (symbols,), optional
        Average daily volume in shares, >= 0; None or NaN: the ADV check is not applied
        (research data without volume).
    min_trade : float
        Weight changes smaller than this are not traded.

    Returns
    -------
    (Series, DataFrame)
        The weights once every order sent is filled, on the union of both indexes, and one
        row per trade not sent in full or sent with a note (columns ``EVENT_COLUMNS``): action
        ``clamped`` when part of it was sent, ``rejected`` when none was, ``accepted`` when it
        was sent in full with a `RiskNote` (it reduced a position and left net exposure beyond
        its limit, grown or through zero); with the reason.

    Raises
    ------
    RiskInputError
        A malformed input: NaN, infinite or duplicated weights, a non-positive ``equity``, a
        held or traded symbol without a usable price, a negative or infinite ``adv``.
    """
    if not _finite_positive(equity):
        raise RiskInputError(f"equity is {_shown(equity)}; pass the notional account value, a finite, positive float")
    now, wanted = _weights("current", current), _weights("target", target)
    symbols = now.index.union(wanted.index)
    now, wanted = now.reindex(symbols, fill_value=0.0), wanted.reindex(symbols, fill_value=0.0)
    px = _one_per_symbol("prices", prices).reindex(symbols)
    traded = ((now != 0) | (wanted != 0)).to_numpy()  # held or wanted
    # Each symbol's values as the numpy scalars a Series lookup gives, without a lookup each.
    involved = list(zip(symbols[traded], now.to_numpy()[traded], wanted.to_numpy()[traded], px.to_numpy()[traded]))
    unpriced = [s for s, _, _, price in involved if not (_finite_positive(price) and math.isfinite(equity / price))]
    if unpriced:
        raise RiskInputError(f"no positive decision price on {when:%Y-%m-%d} for {unpriced}; give them weight 0 "
                             "(a symbol without a price cannot be held or traded)")
    volume = _volume(adv, symbols).to_numpy()[traded]
    orders, shares, references, volumes = [], {}, {}, {}
    for (symbol, weight, wanted_weight, price), symbol_volume in zip(involved, volume):
        held_shares = weight * equity / price
        shares[symbol], volumes[symbol] = float(held_shares), float(symbol_volume)
        references[symbol] = ReferencePrice(float(price), when)
        delta = wanted_weight - weight
        if abs(delta) < min_trade:
            continue
        # A full exit trades exactly the shares held, so rounding never looks like a short.
        quantity = abs(held_shares) if wanted_weight == 0 else abs(delta) * equity / price
        if not _finite_positive(quantity):
            raise RiskInputError(f"the trade of {symbol} from weight {weight!r} to {wanted_weight!r} is "
                                 f"{quantity!r} shares at {price!r} with equity {equity!r}; it cannot be sized")
        orders.append(Order(symbol, Side.BUY if delta > 0 else Side.SELL, quantity=quantity))
    unlimited = limits.model_copy(update={"max_order_notional": math.inf, "max_order_quantity": None,
                                          "max_open_orders": len(orders), "max_daily_orders": len(orders)})
    decision = check_orders(orders, shares, references, unlimited, KillSwitch.ACTIVE, equity, when, adv=volumes)
    after = np.array([decision.positions_after.get(s, 0.0) for s in symbols], dtype=float)
    weights = pd.Series(np.where(after != 0, after * px.to_numpy() / equity, 0.0), index=symbols, name="weight")
    return weights, _trade_events(decision, wanted, weights, when)


def _one_per_symbol(name: str, series: pd.Series) -> pd.Series:
    """``series``, refused (RiskInputError) when a symbol repeats in its index."""
    repeated = sorted(set(series.index[series.index.duplicated()]))
    if repeated:
        raise RiskInputError(f"{name} names {repeated} more than once; give one value per symbol")
    return series


def _weights(name: str, weights: pd.Series) -> pd.Series:
    """``weights`` as floats, refused (RiskInputError) when a symbol repeats or a value is not finite."""
    _one_per_symbol(name, weights)
    try:
        values = weights.astype(float)
    except (TypeError, ValueError):
        raise RiskInputError(f"{name} weights are not all numbers ({weights.to_dict()}); pass floats") from None
    bad = values[~np.isfinite(values.to_numpy())]
    if len(bad):
        raise RiskInputError(f"{name} weights are not finite: {bad.to_dict()}; use 0 for symbols not held")
    return values


def _volume(adv: pd.Series | None, symbols: pd.Index) -> pd.Series:
    """ADV in shares on ``symbols``; NaN or missing (no volume data) becomes ``UNKNOWN_VOLUME``."""
    if adv is None:
        return pd.Series(UNKNOWN_VOLUME, index=symbols)
    volume = _one_per_symbol("adv", adv).reindex(symbols).astype(float)
    values = volume.to_numpy()
    bad = volume[(values < 0) | (values == math.inf)]
    if len(bad):
        raise RiskInputError(f"adv is {bad.to_dict()}; pass average daily volumes in shares, finite and >= 0 "
                             "(NaN where unknown)")
    return volume.fillna(UNKNOWN_VOLUME)


def _trade_events(decision: RiskDecision, wanted: pd.Series, weights: pd.Series, when: dt.datetime) -> pd.DataFrame:
    """One row per symbol (one order each) whose trade was clamped, rejected or sent with a note."""
    actions = [*(("clamped", c.original.symbol, c.reason) for c in decision.clamped),
               *(("rejected", r.order.symbol, r.reason) for r in decision.rejected),
               *(("accepted", n.order.symbol, n.reason) for n in decision.notes if n.order in decision.accepted)]
    date = pd.Timestamp(when).normalize()
    rows = [{"date": date, "symbol": s, "action": action, "proposed_weight": wanted[s], "final_weight": weights[s],
             "reason": reason} for action, s, reason in actions]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)
