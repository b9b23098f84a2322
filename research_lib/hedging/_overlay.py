"""Protective puts and collars on an index over a strategy: the parameters, the overlay, its summary.

The option prices are modelled with `black_scholes_price` (on the VIX close, or realized
volatility plus a premium), never traded quotes; every result carries `MODELLED_LABEL`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import Field, model_validator

from research_lib.hedging._black_scholes import HedgeInputError, black_scholes_price
from research_lib.params import StrictModel
from research_lib.units import SESSIONS_PER_YEAR, check_sessions_per_year

MODELLED_LABEL = ("Option prices are modelled with Black-Scholes on the VIX close, or on realized volatility plus "
                  "a premium where no VIX close is known; they are not traded quotes.")
VOLATILITY_SOURCES = ("vix", "realized")
ROLL_COLUMNS = ["date", "index_level", "put_strike", "call_strike", "volatility", "volatility_source", "put_price",
                "call_price", "contracts"]


class HedgeConfig(StrictModel):
    """How the index options over a strategy are chosen, priced and rolled (see `hedge_overlay`)."""

    kind: Literal["none", "protective_put", "collar"] = Field(
        "none", description="none: no hedge; protective_put: buy puts; collar: buy puts and sell calls")
    put_strike: float = Field(0.95, gt=0, le=1.5, description="strike of the puts bought, a fraction of the "
                              "index close at purchase (0.95: 5 % below)")
    call_strike: float = Field(1.10, gt=0, description="strike of the collar's calls sold, a fraction of the "
                               "index close at purchase; above put_strike (unused by protective_put)")
    tenor_days: int = Field(63, ge=1, description="sessions from purchase to expiry")
    roll_every_days: int = Field(21, ge=1, description="sessions between rolls; at most tenor_days")
    hedge_ratio: float = Field(1.0, ge=0, le=2, description="index notional hedged per dollar of equity at "
                               "each purchase (1.0: the whole equity)")
    volatility: Literal["vix", "realized"] = Field(
        "vix", description="vix: the VIX close at t where one is known, otherwise realized volatility plus "
        "volatility_premium; realized: always realized volatility plus volatility_premium")
    volatility_premium: float = Field(0.03, ge=0, le=1, description="annualized volatility (fraction) added to "
                                      "realized volatility: implied volatility usually trades above realized")
    realized_window_days: int = Field(21, ge=2, description="index returns (sessions) realized volatility is "
                                      "measured over, up to and including t")
    cost_bps: float = Field(50.0, ge=0, le=10_000, description="cost of each option trade in basis points of "
                            "the premium traded (both legs of a collar): the half bid-ask spread")
    rate: float = Field(0.0, ge=-0.1, le=0.5, description="annual risk-free rate for pricing, continuously "
                        "compounded (fraction)")

    @model_validator(mode="after")
    def _consistent(self) -> HedgeConfig:
        if self.call_strike <= self.put_strike:
            raise ValueError(f"call_strike {self.call_strike} must be above put_strike {self.put_strike} (a collar "
                             "sells calls above the puts it buys); raise call_strike or lower put_strike")
        if self.roll_every_days > self.tenor_days:
            raise ValueError(f"roll_every_days {self.roll_every_days} exceeds tenor_days {self.tenor_days}: the "
                             "options would expire before the next roll; lower roll_every_days or raise tenor_days")
        return self


@dataclass(frozen=True, eq=False)
class HedgeResult:
    """A strategy with and without its index-option hedge.

    Attributes
    ----------
    returns : Series
        Hedged simple daily returns, on the strategy's dates.
    unhedged : Series
        The strategy's returns as given.
    hedge_pnl : Series
        ``returns - unhedged``: the hedge's daily P&L (option marks, costs, financing) as a
        fraction of the equity at the previous close.
    premium_paid : float
        Sum over purchases of the premium paid (puts bought less calls sold) as a fraction of
        the equity at that purchase; negative when the calls bring in more. Gross of what the
        options are sold back for at the next roll: their net cost is in ``hedge_pnl``.
    costs_paid : float
        Sum over trades of the trading costs as a fraction of the equity at that close.
    rolls : DataFrame
        One row per purchase, columns `ROLL_COLUMNS`: strikes in index points (call NaN
        without a collar), the volatility used (fraction) and its source, the model prices
        per contract (index points) and the contracts bought (units of the index).
    volatility_source_days : dict
        Sessions priced or marked with each source, ``{"vix": n, "realized": m}``.
    label : str
        `MODELLED_LABEL`: the prices are modelled, not traded quotes.
    """

    returns: pd.Series
    unhedged: pd.Series
    hedge_pnl: pd.Series
    premium_paid: float
    costs_paid: float
    rolls: pd.DataFrame
    volatility_source_days: dict[str, int]
    label: str = MODELLED_LABEL


def _day(date: object) -> str:
    return str(date.date()) if isinstance(date, pd.Timestamp) else str(date)


def _ordered(series: object, name: str) -> pd.Series:
    if not isinstance(series, pd.Series):
        raise HedgeInputError(f"{name} is a {type(series).__name__}; pass a pandas Series indexed by date")
    if not (series.index.is_unique and series.index.is_monotonic_increasing):
        raise HedgeInputError(f"{name} has unsorted or repeated dates; pass one value per date, e.g. "
                              f"{name}.groupby(level=0).last().sort_index()")
    return series


def _strategy(strategy_returns: pd.Series) -> np.ndarray:
    _ordered(strategy_returns, "strategy_returns")
    values = strategy_returns.to_numpy(dtype=float)
    if values.size == 0:
        raise HedgeInputError("strategy_returns is empty; pass the strategy's daily returns")
    bad = ~np.isfinite(values) | (values <= -1.0)
    if bad.any():
        where = np.flatnonzero(bad)
        raise HedgeInputError(f"strategy_returns has {where.size} NaN, infinite or <= -100 % values (first "
                              f"{float(values[where[0]])!r} on {_day(strategy_returns.index[where[0]])}); fill or drop "
                              "them first, e.g. strategy_returns.fillna(0.0)")
    return values


def _realized_volatility(levels: np.ndarray, window: int, sessions_per_year: int) -> np.ndarray:
    """Annualized std (ddof=1) of the ``window`` simple returns ending at each position; NaN before."""
    out = np.full(levels.size, np.nan)
    returns = levels[1:] / levels[:-1] - 1.0
    if returns.size >= window:
        out[window:] = sliding_window_view(returns, window).std(axis=1, ddof=1) * math.sqrt(sessions_per_year)
    return out


def _index_on(dates: pd.Index, index_close: pd.Series, window: int,
              sessions_per_year: int) -> tuple[np.ndarray, np.ndarray]:
    """The index close and its realized volatility (from the index's own history) on ``dates``."""
    index = _ordered(index_close, "index_close").dropna()
    values = index.to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        first = np.flatnonzero(bad)[0]
        raise HedgeInputError(f"index_close has {int(bad.sum())} infinite or non-positive closes (first "
                              f"{float(values[first])!r} on {_day(index.index[first])}); pass the index's closes")
    missing = dates.difference(index.index)
    if len(missing):
        raise HedgeInputError(f"index_close lacks {len(missing)} of the {len(dates)} strategy dates "
                              f"({_day(missing[0])} .. {_day(missing[-1])}; NaN counts as missing); pass the index "
                              "over every date of strategy_returns, e.g. load it over the same range")
    index = index.loc[:dates[-1]]  # later closes never reach an earlier date: cut them to save work
    realized = _realized_volatility(index.to_numpy(dtype=float), window, sessions_per_year)
    where = index.index.get_indexer(dates)
    return index.to_numpy(dtype=float)[where], realized[where]


def _vix_on(dates: pd.Index, vix_close: pd.Series | None) -> np.ndarray:
    """The VIX close on ``dates`` as a fraction (NaN where none is known)."""
    if vix_close is None:
        return np.full(len(dates), np.nan)
    values = _ordered(vix_close, "vix_close").reindex(dates).to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        bad = np.isinf(values) | (values < 1.0)
    if bad.any():
        first = np.flatnonzero(bad)[0]
        raise HedgeInputError(f"vix_close is {float(values[first])!r} on {_day(dates[first])}; VIX closes are in "
                              "index points (20 means 20 % annualized, never below 1): multiply a fraction by 100, "
                              "and leave NaN where no close is known")
    return values / 100.0


def _unit_values(level, vol, start, config, sessions_per_year, strike_fraction, kind):
    """Per-contract model values of one leg: of the lot held over each session (marked at its close),
    and of a new lot at each purchase (NaN where there is none). The lot held over session ``t``
    was bought at the last purchase before ``t``; at its expiry it is worth its intrinsic value."""
    n, roll, tenor = level.size, config.roll_every_days, config.tenor_days
    held, new = np.zeros(n), np.full(n, np.nan)
    later = np.arange(start + 1, n)
    lot = start + (later - 1 - start) // roll * roll
    held[later] = black_scholes_price(level[later], strike_fraction * level[lot],
                                      (lot + tenor - later) / sessions_per_year, vol[later], config.rate, 0.0, kind)
    buys = np.arange(start, n, roll)
    new[buys] = black_scholes_price(level[buys], strike_fraction * level[buys], tenor / sessions_per_year,
                                    vol[buys], config.rate, 0.0, kind)
    return held, new


def _equity_path(returns, level, held_net, held_gross, new_net, new_gross, hedge_ratio, cost_rate):
    """The hedge's daily P&L as a fraction of the previous close's equity (pure numpy; the
    accounting is in `hedge_overlay`), the contracts bought, and the premium and cost totals.
    ``*_net`` is the per-contract value of the position (put less call), ``*_gross`` the premium
    traded (put plus call; 0 for a lot that expires); ``new_net`` is NaN without a purchase."""
    hedge_pnl, contracts_bought = np.empty(returns.size), np.zeros(returns.size)
    equity, contracts, premium, costs = 1.0, 0.0, 0.0, 0.0
    position = 0.0  # V: the options' model value after the previous close, a fraction of starting equity
    for t, r in enumerate(returns):
        mark = contracts * held_net[t]  # M: the options held over t, marked at its close
        pnl = mark - position - position * r  # their change of value, less the return forgone on them
        marked = equity * (1.0 + r) + pnl  # equity before the roll's trades
        cost = 0.0
        if not np.isnan(new_net[t]):
            cost = cost_rate * contracts * held_gross[t]
            contracts = contracts_bought[t] = hedge_ratio * marked / level[t]
            cost += cost_rate * contracts * new_gross[t]
            mark = contracts * new_net[t]
            premium += mark / marked
            costs += cost / marked
        hedge_pnl[t] = (pnl - cost) / equity  # exactly 0 while no option is held or traded
        equity, position = marked - cost, mark
    return hedge_pnl, contracts_bought, premium, costs


def hedge_overlay(strategy_returns: pd.Series, index_close: pd.Series, config: HedgeConfig,
                  vix_close: pd.Series | None = None, sessions_per_year: int = SESSIONS_PER_YEAR) -> HedgeResult:
    """Hedge a strategy with index puts (or collars) bought and rolled at the close, priced by model.

    Point in time: everything done at the close of session ``t`` uses the index close at ``t``,
    the strategy's return on ``t`` and the volatility known at ``t``: the VIX close at ``t``
    (``config.volatility="vix"`` and a close known), otherwise the realized volatility of the
    ``realized_window_days`` index returns up to and including ``t`` plus ``volatility_premium``.

    Schedule: the first purchase is at the first strategy date with a realized volatility
    (pass index closes from before the strategy's start to hedge from its first day), then
    every ``roll_every_days`` sessions. A purchase buys ``hedge_ratio * equity / index close``
    puts struck at ``put_strike * index close`` (a collar also sells as many calls at
    ``call_strike * index close``), expiring ``tenor_days`` sessions later (``years =
    sessions / sessions_per_year``); at the next purchase the held options are sold at model
    value (settled at intrinsic value, without cost, when they expire that day). The equity
    that sizes a purchase is the equity at that close before the roll's costs.

    Accounting (fractions of equity; equity starts at 1.0). After the close of ``t - 1`` the
    equity ``E[t-1]`` is the option position's model value ``V[t-1]`` plus the capital invested
    in the strategy ``E[t-1] - V[t-1]``: premiums paid come out of the strategy's capital,
    premiums received go into it. Over ``t``::

        E[t] = (E[t-1] - V[t-1]) * (1 + r[t]) + M[t] - C[t]
        hedged[t] = E[t] / E[t-1] - 1 = r[t] + (M[t] - V[t-1] - r[t] V[t-1] - C[t]) / E[t-1]

    where ``M[t]`` is the held options marked with Black-Scholes at the close of ``t`` (its
    index close, volatility and remaining time), ``C[t]`` the trading costs at ``t``:
    ``cost_bps`` of the premium traded, each leg bought or sold. Buying and selling at model
    value moves no equity (cash becomes options); after a purchase ``V[t]`` is the new options'
    value. ``hedge_pnl = hedged - r``: option P&L, costs, and the strategy return forgone on
    the capital held in options.

    Parameters
    ----------
    strategy_returns : Series
        The strategy's simple daily returns (finite, > -1), on sorted unique session dates.
    index_close : Series
        Closes of the hedged index (index points) on every strategy date (more dates allowed:
        earlier ones feed the realized volatility).
    config : HedgeConfig
        The hedge; ``kind="none"`` returns the strategy unchanged.
    vix_close : Series, optional
        VIX closes in index points (20 = 20 %); NaN or absent dates use realized volatility.
    sessions_per_year : int
        Sessions in a year: turns sessions into years and annualizes realized volatility.

    Returns
    -------
    HedgeResult
        The hedged and unhedged returns, the hedge's daily P&L, premiums and costs, the rolls,
        and the label saying the prices are modelled.
    """
    if not isinstance(config, HedgeConfig):
        raise HedgeInputError(f"config is a {type(config).__name__}; pass a HedgeConfig, e.g. "
                              "HedgeConfig(kind='protective_put')")
    try:
        check_sessions_per_year(sessions_per_year)
    except ValueError as err:
        raise HedgeInputError(str(err)) from None
    returns = _strategy(strategy_returns)
    dates = strategy_returns.index
    level, realized = _index_on(dates, index_close, config.realized_window_days, sessions_per_year)
    vix = _vix_on(dates, vix_close if config.volatility == "vix" else None)
    if config.kind == "none":
        return HedgeResult(strategy_returns.copy(), strategy_returns, pd.Series(0.0, index=dates, name="hedge_pnl"),
                           0.0, 0.0, pd.DataFrame(columns=ROLL_COLUMNS), dict.fromkeys(VOLATILITY_SOURCES, 0))
    known = np.flatnonzero(np.isfinite(realized))
    if known.size == 0:
        raise HedgeInputError(f"no strategy date has {config.realized_window_days} index returns up to it "
                              f"(realized_window_days), so no option can be priced; pass index_close from "
                              f"{config.realized_window_days + 1} sessions before {_day(dates[0])} or lower "
                              "realized_window_days")
    start = int(known[0])
    from_vix = np.isfinite(vix)
    vol = np.where(from_vix, vix, realized + config.volatility_premium)
    put_held, put_new = _unit_values(level, vol, start, config, sessions_per_year, config.put_strike, "put")
    if config.kind == "collar":
        call_held, call_new = _unit_values(level, vol, start, config, sessions_per_year, config.call_strike, "call")
    else:
        call_held = call_new = np.zeros(level.size)
    # a lot held over t expires at t when rolls are tenor_days apart: cash-settled, no trade to pay for
    expiring = config.roll_every_days == config.tenor_days
    held_gross = np.zeros(level.size) if expiring else put_held + call_held
    hedge_pnl, contracts, premium, costs = _equity_path(
        returns, level, put_held - call_held, held_gross, put_new - call_new, put_new + call_new,
        config.hedge_ratio, config.cost_bps / 10_000)
    buys = np.flatnonzero(~np.isnan(put_new))
    collar = config.kind == "collar"
    rolls = pd.DataFrame({
        "date": dates[buys], "index_level": level[buys], "put_strike": config.put_strike * level[buys],
        "call_strike": config.call_strike * level[buys] if collar else np.nan, "volatility": vol[buys],
        "volatility_source": np.where(from_vix[buys], "vix", "realized"), "put_price": put_new[buys],
        "call_price": call_new[buys] if collar else np.nan, "contracts": contracts[buys]}, columns=ROLL_COLUMNS)
    return HedgeResult(
        returns=pd.Series(returns + hedge_pnl, index=dates, name=strategy_returns.name), unhedged=strategy_returns,
        hedge_pnl=pd.Series(hedge_pnl, index=dates, name="hedge_pnl"),
        premium_paid=float(premium), costs_paid=float(costs), rolls=rolls,
        volatility_source_days={"vix": int(from_vix[start:].sum()), "realized": int((~from_vix[start:]).sum())})
