"""A target-weight backtest with costs and next-session execution, vectorized over sessions.

Convention: ``weights`` are decided at the close of their date ``d``; the trade is done at
the close of the session ``execution_lag_sessions`` later, so the new holdings first earn
the return of the session after that. Between trades, holdings drift with prices. The daily
series start at the first trade that takes a position (warm-up cash is left out).

Delistings (a symbol whose prices end before the frame does; a canonical frame has no gaps):
a holding whose prices end is closed at its last close and its value becomes cash on the next
session, times ``1 + delisting_return`` when one is given (e.g. -0.3 for a delisting for cause,
-1 for a total loss; a short's value takes the same return). A target on a symbol that has a
price at its decision date but none at its trade session (it delisted in between) is dropped:
that weight stays in cash. Both are recorded in ``BacktestResult.events``. A target traded where
its symbol has no price, nor had one at the decision date (not listed yet, or long gone), is an
error: the caller targeted a price it could not have seen.

Cost model, every cost a fraction of NAV:

- at each trade, with ``turnover = sum |target - drifted|`` (fractions of the NAV before
  the trade): commissions ``cost_bps * turnover``, half-spread and slippage
  ``spread_bps * turnover``, and square-root market impact, for each symbol
  ``impact_coefficient * daily_vol * sqrt(traded_value / adv_value) * traded_value / NAV``.
  ``traded_value`` is the traded fraction times the account value in currency
  (``capital`` at the close before the first trade, growing with the NAV); ``adv_value``
  is the mean of ``close * volume`` and ``daily_vol`` the standard deviation (ddof=1) of
  daily returns over the ``IMPACT_WINDOW`` sessions before the trade's session (sessions
  without data are skipped; at least ``IMPACT_MIN_SESSIONS`` needed);
- each session, borrow ``borrow_bps_per_year / sessions_per_year`` (252 on New York's calendar,
  365 on crypto's) on the short exposure of the previous
  close (the sum of the short positions' values).

Cash is ``1 - sum(weights)``: short-sale proceeds included, negative for a leveraged book.
It earns (or, when negative, pays) ``cash_rate_per_year / sessions_per_year`` a session, on the balance
of the previous close. The default model (only ``cost_bps``) is the frictionless book of
earlier versions: no spread, no impact, no borrow fee, cash earning nothing.

`CostModel` is the same model as one value (for the simulated broker, which charges it fill by
fill); `impact_inputs` and `impact_rate` are the per-trade impact formula both use.

The simulation is vectorized: between two trades a holding's value is its target weight
times its price relative to the trade's close, so no Python loop runs over sessions (a
scalar loop over trades compounds the NAV when market impact is asked for).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Mapping

import numpy as np
import pandas as pd

from research_lib.params import did_you_mean
from research_lib.units import SESSIONS_PER_YEAR, check_sessions_per_year

IMPACT_WINDOW = 20
IMPACT_MIN_SESSIONS = 5
COST_COLUMNS = ("commission", "spread", "impact", "borrow")
EVENT_COLUMNS = ("date", "symbol", "event", "weight", "return")


@dataclass(frozen=True)
class BacktestResult:
    """Daily series from the first trade that takes a position (warm-up cash is left out).

    returns : net simple returns of the portfolio.
    turnover : traded fraction of NAV on each session (0 on non-trading days).
    costs : all costs as a fraction of NAV on each session (the sum of ``cost_breakdown``).
    holdings : end-of-day weights after drift and trades (sessions x symbols).
    cost_breakdown : sessions x ``COST_COLUMNS`` (commission, spread, impact: fractions of the
        NAV before the trade; borrow: of the previous close's NAV).
    events : one row per delisting met, ``EVENT_COLUMNS``: ``delisted`` (a holding closed at its
        last close, dated then; ``weight`` its share of NAV at that close, ``return`` the
        delisting return applied) and ``target_dropped`` (a target on a symbol delisted before
        its trade, dated at the trade session; ``weight`` the target).
    """

    returns: pd.Series
    turnover: pd.Series
    costs: pd.Series
    holdings: pd.DataFrame
    cost_breakdown: pd.DataFrame
    events: pd.DataFrame = field(default_factory=lambda: _events([]))


@dataclass(frozen=True)
class CostModel:
    """The cost model of `run_backtest` as one value (see the module docstring for each cost).

    commission_bps : commissions per unit traded (run_backtest's ``cost_bps``).
    spread_bps : half-spread and slippage per unit traded.
    impact_coefficient : square-root market impact coefficient (0 for none).
    borrow_bps_per_year : fee on the short exposure, charged each session (/252).
    cash_rate_per_year : annual rate cash earns (a negative balance pays it), each session (/252).

    Every field is a finite number; all but ``cash_rate_per_year`` are >= 0. The defaults are
    a frictionless book. Timing (``execution_lag_sessions``) and the account's size
    (``capital``) are not costs: they belong to the backtest's call or to the account.
    """

    commission_bps: float = 0.0
    spread_bps: float = 0.0
    impact_coefficient: float = 0.0
    borrow_bps_per_year: float = 0.0
    cash_rate_per_year: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            signed = field.name == "cash_rate_per_year"
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and (signed or value >= 0)):
                raise ValueError(f"{field.name} must be a finite number{'' if signed else ' >= 0'} (got {value!r}); "
                                 f"pass e.g. {field.name}=0.0 for none.")

    @classmethod
    def from_backtest_kwargs(cls, model: Mapping[str, object]) -> CostModel:
        """The cost model in run_backtest's keyword arguments (what ``BacktestConfig.model`` returns);
        ``execution_lag_sessions``, ``capital``, ``delisting_return`` and ``sessions_per_year`` are read
        past, any other unknown key is refused."""
        names = {"cost_bps": "commission_bps", **{f.name: f.name for f in fields(cls) if f.name != "commission_bps"}}
        unknown = [key for key in model if key not in names
                   and key not in ("execution_lag_sessions", "capital", "delisting_return", "sessions_per_year")]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a keyword of run_backtest's cost model; valid keys: "
                             f"{list(names)}.{did_you_mean(unknown[0], names)}")
        if isinstance(model.get("cash_rate_per_year"), pd.Series):
            raise ValueError("cash_rate_per_year is a Series of rates; a CostModel holds one annual rate: pass a "
                             "number (e.g. the latest rate).")
        return cls(**{names[key]: value for key, value in model.items() if key in names})

    def backtest_kwargs(self) -> dict[str, float]:
        """The model as run_backtest's keyword arguments (``capital`` is the caller's)."""
        return {"cost_bps": self.commission_bps, "spread_bps": self.spread_bps,
                "impact_coefficient": self.impact_coefficient, "borrow_bps_per_year": self.borrow_bps_per_year,
                "cash_rate_per_year": self.cash_rate_per_year}

    @property
    def trading_rate(self) -> float:
        """Commission and half-spread per unit traded (impact comes on top)."""
        return (self.commission_bps + self.spread_bps) / 1e4

    @property
    def borrow_rate_per_session(self) -> float:
        """The borrow fee of one New York session, per unit of short exposure at the previous close."""
        return self.session_rates()[1]

    @property
    def cash_rate_per_session(self) -> float:
        """The rate cash earns over one New York session, on the previous close's balance."""
        return self.session_rates()[0]

    def session_rates(self, sessions_per_year: int = SESSIONS_PER_YEAR) -> tuple[float, float]:
        """The cash rate and the borrow fee (per unit of short exposure) of one session on a calendar
        of ``sessions_per_year`` sessions (252 New York, 365 crypto)."""
        return self.cash_rate_per_year / sessions_per_year, self.borrow_bps_per_year / 1e4 / sessions_per_year


def impact_inputs(prices: pd.DataFrame, close: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(adv_value, daily_vol)``, sessions x symbols of ``close``: the mean of ``close * volume``
    and the standard deviation (ddof=1) of daily returns over the ``IMPACT_WINDOW`` sessions
    before each session (sessions without data skipped; NaN with fewer than
    ``IMPACT_MIN_SESSIONS``). ``prices`` is the canonical frame (no volume field: all NaN)."""
    volume = (prices["volume"].reindex(columns=close.columns) if "volume" in prices.columns.get_level_values(0)
              else pd.DataFrame(np.nan, index=close.index, columns=close.columns))
    window = {"window": IMPACT_WINDOW, "min_periods": IMPACT_MIN_SESSIONS}
    adv_value = (close * volume).rolling(**window).mean().shift(1).to_numpy()
    daily_vol = close.pct_change(fill_method=None).rolling(**window).std().shift(1).to_numpy()
    return adv_value, daily_vol


def impact_rate(coefficient: float, daily_vol, traded_value, adv_value):
    """Square-root market impact per unit traded: ``coefficient * daily_vol * sqrt(traded_value / adv_value)``
    (``traded_value`` and ``adv_value`` in one currency; numbers or arrays)."""
    return coefficient * daily_vol * np.sqrt(traded_value / adv_value)


NO_POSITION = "never takes a position: "  # how every NoPosition message starts


class NoPosition(ValueError):
    """Well-formed weights that never hold a position inside the price history (every target
    is zero, or every decision is within ``execution_lag_sessions`` of the end): not an error
    in the inputs, so a sweep records it as a configuration that never trades."""


def run_backtest(weights: pd.DataFrame, prices: pd.DataFrame, cost_bps: float = 10.0,
                 execution_lag_sessions: int = 1, *, spread_bps: float = 0.0, impact_coefficient: float = 0.0,
                 capital: float | None = None, borrow_bps_per_year: float = 0.0,
                 cash_rate_per_year: float | pd.Series = 0.0, delisting_return: float | None = None,
                 sessions_per_year: int = SESSIONS_PER_YEAR) -> BacktestResult:
    """Simulate holding ``weights`` (decision dates x symbols) on the canonical ``prices``.

    Parameters
    ----------
    weights : target weights (fractions of NAV), one row per decision date.
    prices : the canonical price frame; its ``volume`` field is read for market impact.
    cost_bps : commissions, per unit of turnover.
    execution_lag_sessions : sessions from the decision close to the trade's close (>= 1).
    spread_bps : half-spread plus slippage, per unit of turnover.
    impact_coefficient : square-root impact coefficient (0 for none).
    capital : account value in currency at the close before the first trade; needed for impact.
    borrow_bps_per_year : fee on the short exposure, charged daily (/``sessions_per_year``).
    cash_rate_per_year : annual rate earned on cash (/``sessions_per_year`` a session): a number, or
        a Series of annual rates by session (the rate on row ``t`` accrues over the session ending at ``t``).
    delisting_return : return applied to a holding's last close when its prices end (>= -1);
        None: closed at its last close (a return of 0).
    sessions_per_year : sessions in a year on the prices' calendar: 252 for New York (the
        default), 365 for crypto (``RunConfig.sessions_per_year`` gives a run's).

    Raises
    ------
    ValueError
        if a parameter is out of range, a weight is not finite, a decision date is not a
        session or is repeated, a symbol is given weight traded where it has no price and had
        none at its decision date, or impact is asked for where volume is missing.
    NoPosition
        (a ValueError) if the weights, valid otherwise, never hold a position.
    """
    _check_model(cost_bps, execution_lag_sessions, spread_bps, impact_coefficient, capital, borrow_bps_per_year,
                 cash_rate_per_year)
    if delisting_return is not None and not (isinstance(delisting_return, numbers.Real)
                                             and not isinstance(delisting_return, bool)
                                             and math.isfinite(delisting_return) and delisting_return >= -1.0):
        raise ValueError(f"delisting_return must be a finite number >= -1 (a total loss) or None (closed at the last "
                         f"close), not {delisting_return!r}.")
    check_sessions_per_year(sessions_per_year)
    check_weights(weights, prices["close"])
    close = prices["close"][list(weights.columns)]

    sessions = close.index
    weights = weights.sort_index()
    trade_rows = sessions.get_indexer(weights.index) + execution_lag_sessions
    keep = trade_rows < len(sessions)
    if not keep.any():
        raise NoPosition(f"{NO_POSITION}no trade falls inside the price history (every decision date is "
                         f"within execution_lag_sessions ({execution_lag_sessions}) of the end, or there is none).")
    trade_rows, targets = trade_rows[keep], weights.to_numpy(dtype=float)[keep]
    price = close.to_numpy(dtype=float)
    unpriced = (targets != 0) & np.isnan(price[trade_rows])
    unseen = np.argwhere(unpriced & np.isnan(price[trade_rows - execution_lag_sessions]))
    if len(unseen):
        trade, column = unseen[0]
        raise ValueError(f"weight on {close.columns[column]} traded on {sessions[trade_rows[trade]]:%Y-%m-%d}, "
                         "when it has no price, nor at its decision date (not listed yet, or delisted); give it "
                         "weight 0 there.")
    dropped = unpriced  # priced at the decision, not at the trade: delisted in between
    events = [(sessions[trade_rows[k]], close.columns[j], "target_dropped", targets[k, j], np.nan)
              for k, j in np.argwhere(dropped)]
    targets = np.where(dropped, 0.0, targets)
    active = np.flatnonzero(targets.any(axis=1))
    if not len(active):
        raise NoPosition(f"{NO_POSITION}every target weight is zero (too little history for its lookback?).")
    trade_rows, targets = trade_rows[active[0]:], targets[active[0]:]

    cash_rate = _daily_cash_rate(cash_rate_per_year, sessions, trade_rows[0]) / sessions_per_year
    path = _drift(price, trade_rows, targets, cash_rate, borrow_bps_per_year / 1e4 / sessions_per_year,
                  delisting_return or 0.0)
    events = [e for e in events if e[0] >= sessions[trade_rows[0]]]  # before the first position: nothing held
    closed = path["delisted"]  # by row from the first trade: (value at the last close, that close's NAV)
    events += [(sessions[trade_rows[0] + row - 1], close.columns[j], "delisted", closed[0][row, j] / closed[1][row],
                delisting_return or 0.0) for row, j in np.argwhere(closed[0] != 0)]
    traded = np.abs(targets - path["drifted"])
    turnover = traded.sum(axis=1)
    costs = np.zeros((len(path["gross"]), len(COST_COLUMNS)))
    at = trade_rows - trade_rows[0]
    costs[at, 0] = cost_bps / 1e4 * turnover
    costs[at, 1] = spread_bps / 1e4 * turnover
    if impact_coefficient > 0:
        unit_impact = _unit_impact(prices, close, trade_rows, traded, impact_coefficient, capital)
        costs[at, 2] = _compound_impact(unit_impact, costs[at, 0] + costs[at, 1], path["segment_growth"])
    trade_cost = costs.sum(axis=1)
    costs[:, 3] = path["borrow"]  # already in the gross return

    index = sessions[trade_rows[0]:]
    daily_turnover = np.zeros(len(index))
    daily_turnover[at] = turnover
    return BacktestResult(
        returns=pd.Series((1.0 + path["gross"]) * (1.0 - trade_cost) - 1.0, index=index, name="strategy"),
        turnover=pd.Series(daily_turnover, index=index, name="turnover"),
        costs=pd.Series(costs.sum(axis=1), index=index, name="costs"),
        holdings=pd.DataFrame(path["holdings"], index=index, columns=close.columns),
        cost_breakdown=pd.DataFrame(costs, index=index, columns=list(COST_COLUMNS)),
        events=_events(events),
    )


def _events(rows: list[tuple]) -> pd.DataFrame:
    events = pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).astype({"weight": float, "return": float})
    events["date"] = pd.to_datetime(events["date"]).astype("datetime64[ns]")
    return events.sort_values(["date", "symbol"], kind="stable").reset_index(drop=True)


def check_weights(weights: pd.DataFrame, close: pd.DataFrame) -> None:
    """Refuse target weights `run_backtest` cannot hold on ``close``: symbols without prices,
    NaN or infinite weights, decision dates that are not sessions or are repeated."""
    missing = [s for s in weights.columns if s not in close.columns]
    if missing:
        raise ValueError(f"weights name symbols {missing} that are not in the price frame; price symbols: "
                         f"{list(close.columns)}.")
    if not np.isfinite(weights.to_numpy(dtype=float)).all():
        raise ValueError("weights contain NaN or infinite values; use 0 for 'not held'.")
    unknown = weights.index.difference(close.index)
    if len(unknown):
        raise ValueError(f"weights are dated {unknown[0]:%Y-%m-%d}, which is not a session of the price frame.")
    if weights.index.has_duplicates:
        raise ValueError(f"weights have two rows dated {weights.index[weights.index.duplicated()][0]:%Y-%m-%d}; "
                         "keep one row per decision date.")


def _check_model(cost_bps, lag, spread_bps, impact_coefficient, capital, borrow_bps_per_year, cash_rate_per_year) -> None:
    if isinstance(lag, bool) or not isinstance(lag, numbers.Integral) or lag < 1:
        raise ValueError(f"execution_lag_sessions must be a whole number >= 1 (got {lag!r}); trading at the decision "
                         "close would use a price not yet tradable, and a fraction of a session is not a session.")
    for name, value in (("cost_bps", cost_bps), ("spread_bps", spread_bps), ("impact_coefficient", impact_coefficient),
                        ("borrow_bps_per_year", borrow_bps_per_year)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 <= value < math.inf):
            raise ValueError(f"{name} must be a finite number >= 0 (got {value!r}); pass e.g. {name}=0 for none.")
    for name, value in (("capital", capital), ("cash_rate_per_year", cash_rate_per_year)):
        if value is None or isinstance(value, pd.Series):
            continue  # no capital; a Series of rates is checked per session it is used (`_daily_cash_rate`)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number (got {value!r}); pass e.g. "
                             + ("capital=1e6 (the account's value)." if name == "capital" else f"{name}=0.0 for none."))
    if impact_coefficient > 0 and not (capital is not None and capital > 0):
        raise ValueError(f"impact_coefficient={impact_coefficient} needs capital, the account value in currency "
                         f"(got {capital}); pass e.g. capital=1e6, or impact_coefficient=0.")


def _daily_cash_rate(cash_rate_per_year: float | pd.Series, sessions: pd.DatetimeIndex, first_row: int) -> np.ndarray:
    """The annual rate in force over each session; rates before the first trade's session are unused (set to 0)."""
    if isinstance(cash_rate_per_year, pd.Series):
        annual = np.array(cash_rate_per_year.reindex(sessions), dtype=float)
    else:
        annual = np.full(len(sessions), float(cash_rate_per_year))
    gaps = np.flatnonzero(~np.isfinite(annual[first_row:]))
    if len(gaps):
        raise ValueError(f"cash_rate_per_year has no rate for {sessions[first_row + gaps[0]]:%Y-%m-%d}; give an annual "
                         "rate for every session from the first trade on (e.g. rates.reindex(sessions).ffill()).")
    annual[:first_row] = 0.0
    return annual


def _drift(price: np.ndarray, trade_rows: np.ndarray, targets: np.ndarray, cash_rate: np.ndarray,
           borrow_rate: float, delisting_return: float = 0.0) -> dict[str, np.ndarray]:
    """Book values between trades, for every session from the first trade on (before trade costs).

    A segment starts at a trade's close with the book ``targets[k]`` and NAV 1 and ends at
    the next trade's close; an all-cash segment starts one session before the first trade.
    In segment units a holding is worth ``weight * price[t] / price[start]`` until its price
    ends (then its last value, times ``1 + delisting_return``, moves to cash), and cash follows
    ``cash[t] = (1 + cash_rate[t]) * cash[t-1] + proceeds[t] - borrow_rate * short[t-1]``.

    Returns ``gross`` (daily return before trade costs), ``borrow`` (its fee, a fraction of
    the previous NAV), ``holdings`` (end-of-day weights, the targets on trade sessions),
    ``drifted`` (the book's weights just before each trade), ``segment_growth`` (NAV
    before each trade relative to the previous trade's NAV after costs) and ``delisted`` (by row
    of ``t``: the value at the previous close of each holding whose prices end at it, and that
    close's NAV).
    """
    n_sessions = len(price)
    starts = np.r_[trade_rows[0] - 1, trade_rows]
    books = np.vstack([np.zeros(price.shape[1]), targets])
    t = np.arange(trade_rows[0], n_sessions)
    segment = np.searchsorted(starts, t) - 1  # the last trade strictly before t
    start = starts[segment]
    book = books[segment]
    ended = np.cumsum(np.isnan(price), axis=0)  # a holding lives while no NaN price follows its trade
    alive_now = (book != 0) & (ended[t] == ended[start])
    alive_prev = (book != 0) & (ended[t - 1] == ended[start])
    value_now = np.where(alive_now, book * price[t] / price[start], 0.0)
    value_prev = np.where(alive_prev, book * price[t - 1] / price[start], 0.0)

    short_prev = np.maximum(-value_prev, 0.0).sum(axis=1)
    closing = np.where(alive_prev & ~alive_now, value_prev, 0.0)  # last values of holdings whose prices end
    proceeds = (1.0 + delisting_return) * closing.sum(axis=1)
    cash_prev, cash_now = _segment_recursion(1.0 + cash_rate, proceeds - borrow_rate * short_prev,
                                             1.0 - book.sum(axis=1), t, start)
    nav_prev = value_prev.sum(axis=1) + cash_prev
    nav_now = value_now.sum(axis=1) + cash_now
    pnl = (np.where(alive_now, value_now - value_prev, 0.0).sum(axis=1) + delisting_return * closing.sum(axis=1)
           + cash_rate[t] * cash_prev - borrow_rate * short_prev)
    at = trade_rows - trade_rows[0]
    holdings = value_now / nav_now[:, None]
    drifted = holdings[at].copy()
    holdings[at] = targets
    return {"gross": pnl / nav_prev, "borrow": borrow_rate * short_prev / nav_prev, "holdings": holdings,
            "drifted": drifted, "segment_growth": nav_now[at], "delisted": (closing, nav_prev)}


def _segment_recursion(growth: np.ndarray, flow: np.ndarray, initial: np.ndarray, t: np.ndarray,
                       start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x[t] = growth[t] * x[t-1] + flow`` restarted at each segment's ``start`` with ``initial``.

    ``growth`` is by session (all sessions), ``flow``, ``initial``, ``t`` and ``start`` by row of
    ``t``. With ``G`` the cumulative product of ``growth``,
    ``x[t] = G[t] * (x[start] / G[start] + sum over (start, t] of flow / G)``.
    Returns ``(x[t - 1], x[t])``.
    """
    cumulative = np.cumprod(growth)
    discounted = np.zeros(len(growth))
    discounted[t] = flow / cumulative[t]
    summed = np.cumsum(discounted)
    base = initial / cumulative[start] - summed[start]
    return cumulative[t - 1] * (base + summed[t - 1]), cumulative[t] * (base + summed[t])


def _unit_impact(prices: pd.DataFrame, close: pd.DataFrame, trade_rows: np.ndarray, traded: np.ndarray,
                 coefficient: float, capital: float) -> np.ndarray:
    """Each trade's impact cost (fraction of NAV) were the account worth ``capital``.

    It scales with the square root of the account's value: multiply by ``sqrt(NAV / NAV_0)``.
    """
    adv_value, daily_vol = (inputs[trade_rows] for inputs in impact_inputs(prices, close))
    unknown = np.argwhere((traded > 0) & ~((adv_value > 0) & np.isfinite(daily_vol)))
    if len(unknown):
        trade, column = unknown[0]
        symbol = close.columns[column]
        raise ValueError(f"impact_coefficient={coefficient} needs {symbol}'s average traded value (close x volume) and "
                         f"volatility over the {IMPACT_WINDOW} sessions before its trade on "
                         f"{close.index[trade_rows[trade]]:%Y-%m-%d} (at least {IMPACT_MIN_SESSIONS} sessions with a "
                         f"price and a volume), and the prices do not have them; pass impact_coefficient=0, or prices "
                         f"with a volume field for {symbol}.")
    with np.errstate(invalid="ignore", divide="ignore"):  # untraded symbols may lack volume: 0 * NaN is dropped below
        per_symbol = impact_rate(coefficient, daily_vol, traded * capital, adv_value) * traded
    return np.where(traded > 0, per_symbol, 0.0).sum(axis=1)


def _compound_impact(unit_impact: np.ndarray, other_costs: np.ndarray, segment_growth: np.ndarray) -> np.ndarray:
    """Impact at each trade given the account's value then (it depends on every earlier cost)."""
    impact = np.zeros(len(unit_impact))
    value = 1.0  # the account in units of capital, after the previous trade's costs
    for k, growth in enumerate(segment_growth):
        value *= growth
        impact[k] = unit_impact[k] * np.sqrt(value)
        value *= 1.0 - other_costs[k] - impact[k]
    return impact
