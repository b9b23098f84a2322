"""How paper trading tracks: daily P&L, slippage against the decision price, and drift from
the backtest of the same days.

Definitions (all in the cycle's report and on the dashboard):

- **Daily P&L** of session ``s``: equity at ``s``'s cycle minus equity at the previous
  cycle's session (the first cycle's against the starting cash).
- **Slippage** of a filled order, in basis points, positive when it cost money:
  ``+(fill / decision - 1)`` for a buy, ``-(fill / decision - 1)`` for a sell, where
  ``decision`` is the reference price the order was sized with. With next-close execution
  this includes the market's move over one session; the summary is the notional-weighted mean.
- **Expected** returns: the backtest of the promoted weights over the paper's sessions,
  starting in cash at the first paper session with the decision then in force, with the
  promoted cost model. Paper and backtest then start from the same place.
- **Tracking error**: the annualized standard deviation of paper minus expected returns
  between consecutive paper sessions (daily when a cycle runs every session; the backtest's
  returns are compounded over any skipped sessions) (``sqrt(252)``, ddof 1); at least two sessions needed, and `MIN_DRIFT_SESSIONS`
  before a tracking error above ``paper.max_tracking_error`` is flagged as drift.
- **Signal agreement** of a session: the overlap of the paper book's weights with the
  backtest's holdings, ``1 - sum(|w_paper - w_backtest|) / 2`` (1: the same book; 0: nothing
  in common), using the weights the cycle reconciled at that session's close.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from research_lib.backtest import run_backtest
from research_lib.units import SESSIONS_PER_YEAR
from research_lib.trading._ledger import Intent

MIN_DRIFT_SESSIONS = 10  # fewer compared sessions: the tracking error is shown but never flagged


def daily_pnl(equity: pd.Series, starting_cash: float) -> pd.DataFrame:
    """``equity`` (by session) -> columns equity, pnl, return, for each session."""
    previous = equity.shift(1)
    if len(previous):
        previous.iloc[0] = starting_cash
    return pd.DataFrame({"equity": equity, "pnl": equity - previous, "return": equity / previous - 1.0})


def slippage(intents: list[Intent]) -> pd.DataFrame:
    """One row per (partly) filled intent: symbol, side, quantity, decision and fill prices,
    notional and slippage in basis points (positive: a cost)."""
    rows = []
    for i in intents:
        if not (i.filled_quantity and i.filled_avg_price and i.decision_price > 0):
            continue
        move = i.filled_avg_price / i.decision_price - 1.0
        rows.append({"client_order_id": i.client_order_id, "session": i.session, "symbol": i.symbol, "side": i.side,
                     "quantity": i.filled_quantity, "decision_price": i.decision_price,
                     "fill_price": i.filled_avg_price, "notional": i.filled_quantity * i.decision_price,
                     "slippage_bps": 1e4 * (move if i.side == "buy" else -move)})
    return pd.DataFrame(rows, columns=["client_order_id", "session", "symbol", "side", "quantity", "decision_price",
                                       "fill_price", "notional", "slippage_bps"])


def mean_slippage_bps(fills: pd.DataFrame) -> float | None:
    """Notional-weighted mean slippage (None without fills)."""
    if fills.empty or fills["notional"].sum() <= 0:
        return None
    return float(np.average(fills["slippage_bps"], weights=fills["notional"]))


def expected_backtest(weights: pd.DataFrame, prices: pd.DataFrame, start: pd.Timestamp, model: dict):
    """The backtest of ``weights`` as if trading began in cash at ``start`` (see the module docstring).

    Returns ``(returns, holdings)`` on the sessions from ``start`` on, zeros before the first
    trade; or ``(None, None)`` when no decision is in force at ``start``.
    """
    in_force = weights.loc[weights.index <= start]
    if in_force.empty:
        return None, None
    sessions = prices.index[prices.index >= start]
    if len(sessions) <= model.get("execution_lag_sessions", 1):  # the backtest's first trade is still to come
        return pd.Series(0.0, index=sessions), pd.DataFrame(0.0, index=sessions, columns=weights.columns)
    rows = pd.concat([in_force.iloc[[-1]].set_axis([start]), weights.loc[weights.index > start]])
    result = run_backtest(rows, prices, **model)
    returns = result.returns.reindex(sessions).fillna(0.0)
    holdings = result.holdings.reindex(sessions).fillna(0.0)
    return returns, holdings


def drift(paper: pd.DataFrame, paper_weights: dict[str, dict[str, float]], expected_returns: pd.Series | None,
          expected_holdings: pd.DataFrame | None, max_tracking_error: float,
          sessions_per_year: int = SESSIONS_PER_YEAR) -> dict:
    """Paper against the expected backtest on the sessions both have (the tracking error annualized
    over ``sessions_per_year``, the strategy calendar's: 252 New York, 365 crypto).

    ``paper`` is `daily_pnl`'s frame; ``paper_weights`` maps a session (``YYYY-MM-DD``) to the
    book's weights at its close. Returns a dict with the sessions compared, the cumulative
    returns, the tracking error, the latest and mean signal agreement, and ``flagged`` when
    the tracking error exceeds ``max_tracking_error``.
    """
    out = {"sessions": 0, "paper_return": None, "expected_return": None, "tracking_error": None,
           "signal_agreement": None, "mean_signal_agreement": None, "max_tracking_error": max_tracking_error,
           "flagged": False, "by_session": []}
    if expected_returns is None or paper.empty:
        return out
    index = pd.DatetimeIndex(pd.to_datetime(paper.index))
    common = index[index.isin(expected_returns.index)]
    # The first cycle only places orders: its return is 0 on both sides by construction.
    compared = common[1:] if len(common) > 1 else common[:0]
    r_paper = pd.Series(paper["return"].to_numpy(), index=index).reindex(compared)
    # A paper return runs from the previous cycle's session (sessions may be skipped): compound
    # the backtest's daily returns over the same interval.
    growth = (1.0 + expected_returns).cumprod()
    r_expected = pd.Series(growth.reindex(compared).to_numpy() / growth.reindex(common[:-1]).to_numpy() - 1.0,
                           index=compared) if len(compared) else pd.Series(dtype=float)
    agreement = {}
    for session in common:
        held = pd.Series(paper_weights.get(f"{session:%Y-%m-%d}", {}), dtype=float)
        if expected_holdings is not None and session in expected_holdings.index:
            book = expected_holdings.loc[session]
            symbols = book.index.union(held.index)
            gap = (held.reindex(symbols).fillna(0.0) - book.reindex(symbols).fillna(0.0)).abs().sum()
            agreement[session] = 1.0 - gap / 2.0
    out["sessions"] = len(compared)
    if len(compared):
        out["paper_return"] = float(np.prod(1.0 + r_paper.to_numpy()) - 1.0)
        out["expected_return"] = float(np.prod(1.0 + r_expected.to_numpy()) - 1.0)
    if len(compared) >= 2:
        out["tracking_error"] = float((r_paper - r_expected).std(ddof=1) * math.sqrt(sessions_per_year))
        out["flagged"] = len(compared) >= MIN_DRIFT_SESSIONS and out["tracking_error"] > max_tracking_error
    if agreement:
        values = list(agreement.values())
        out["signal_agreement"], out["mean_signal_agreement"] = float(values[-1]), float(np.mean(values))
    out["by_session"] = [{"session": f"{s:%Y-%m-%d}", "paper": _num(r_paper.get(s)), "expected": _num(r_expected.get(s)),
                          "agreement": _num(agreement.get(s))} for s in common]
    return out


def _num(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
