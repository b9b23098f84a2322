"""From prices to target weights on each rebalance date, and from weights to shares.

Every rebalance date ``t`` sees only the ``lookback_days`` sessions up to and including
``t`` (its close is known when the weights are decided), so prices after ``t`` never change
the weights at ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pypfopt import DiscreteAllocation

from research_lib.portfolio._black_litterman import BlackLittermanViews
from research_lib.portfolio._constraints import PortfolioConstraints
from research_lib.portfolio._inputs import ReturnsModel, RiskModel, check_choice, expected_returns, risk_matrix
from research_lib.portfolio._optimize import _NEEDS_MU, Method, optimize_weights


def _views_as_of(views: pd.DataFrame, confidences: pd.DataFrame, date: pd.Timestamp,
                 market_caps: pd.Series | None) -> BlackLittermanViews:
    known = views.loc[:date]
    if known.empty:
        raise ValueError(f"views has no row at or before {date.date()}; pass earlier views or later dates")
    returns = known.iloc[-1].dropna()
    return BlackLittermanViews(returns, confidences.loc[:date].iloc[-1].reindex(returns.index), market_caps)


def rebalance_weights(prices: pd.DataFrame, rebalance_dates, *, lookback_days: int = 252,
                      method: Method = "max_sharpe", returns_model: ReturnsModel = "mean_historical",
                      risk_model: RiskModel = "ledoit_wolf", constraints: PortfolioConstraints | None = None,
                      benchmark: pd.Series | None = None, scores: pd.DataFrame | None = None,
                      views: pd.DataFrame | None = None, view_confidences: pd.DataFrame | None = None,
                      market_caps: pd.Series | None = None, target_volatility: float | None = None,
                      target_return: float | None = None, risk_free_rate: float = 0.0,
                      solver: str | None = "CLARABEL") -> pd.DataFrame:
    """Target weights on each rebalance date from a trailing window of prices.

    Parameters
    ----------
    prices : DataFrame (dates x symbols)
        Adjusted closes, no NaN.
    rebalance_dates : sequence of date-like
        Decision dates, each a session in ``prices.index``.
    lookback_days : int
        Number of daily returns in each estimation window (``lookback_days + 1`` prices).
    method, constraints, target_volatility, target_return, risk_free_rate, solver
        As in `optimize_weights`; with a ``turnover_penalty`` each date is penalized
        against the previous date's weights (the first against all cash).
    returns_model, risk_model, benchmark, scores
        As in `expected_returns` and `risk_matrix`.
    views, view_confidences : DataFrame (dates x symbols), optional
        For ``black_litterman``: the latest row at or before each date (NaN: no view).
    market_caps : Series (symbols,), optional
        For ``black_litterman``'s prior; None: equal weights.

    Returns
    -------
    DataFrame (rebalance dates x symbols)
        Weights, fractions of equity.
    """
    check_choice("returns_model", returns_model, ReturnsModel)
    check_choice("risk_model", risk_model, RiskModel)
    if isinstance(lookback_days, bool) or not isinstance(lookback_days, (int, np.integer)) or lookback_days < 2:
        raise ValueError(f"lookback_days is {lookback_days!r}; pass an integer of at least 2 (e.g. 252)")
    dates = pd.DatetimeIndex(rebalance_dates)
    absent = dates.difference(prices.index)
    if len(absent):
        raise ValueError(f"rebalance_dates {[str(d.date()) for d in absent[:3]]} are not sessions of prices; "
                         "pick them from prices.index")
    if method == "black_litterman" and (views is None or view_confidences is None):
        raise ValueError("method='black_litterman' needs views and view_confidences (dates x symbols frames)")
    rows, previous = [], pd.Series(0.0, index=prices.columns)
    for date in dates:
        end = prices.index.get_loc(date) + 1
        if end <= lookback_days:
            raise ValueError(f"rebalance date {date.date()} has only {end} prices; lookback_days={lookback_days} "
                             f"needs {lookback_days + 1}, start rebalancing later or shorten lookback_days")
        window = prices.iloc[end - lookback_days - 1:end]
        cov = risk_matrix(window, risk_model)
        mu = (expected_returns(window, returns_model, benchmark=benchmark, scores=scores,
                               risk_free_rate=risk_free_rate) if method in _NEEDS_MU else None)
        bl = _views_as_of(views, view_confidences, date, market_caps) if method == "black_litterman" else None
        previous = optimize_weights(mu, cov, method, constraints, previous_weights=previous, views=bl,
                                    target_volatility=target_volatility, target_return=target_return,
                                    risk_free_rate=risk_free_rate, solver=solver)
        rows.append(previous)
    return pd.DataFrame(rows, index=dates, columns=prices.columns)


@dataclass(frozen=True)
class Allocation:
    """Shares to hold and the cash left over.

    Attributes
    ----------
    shares : Series (symbols,)
        Number of shares per symbol (negative: short), whole or fractional.
    leftover_cash : float
        Capital not spent, in account currency.
    """

    shares: pd.Series
    leftover_cash: float


def discrete_allocation(weights: pd.Series, prices: pd.Series, capital: float,
                        fractional: bool = False) -> Allocation:
    """Turn weights into shares for ``capital``.

    Parameters
    ----------
    weights : Series (symbols,)
        Target weights, fractions of ``capital``.
    prices : Series (symbols,)
        Latest price per symbol (e.g. ``prices.iloc[-1]``), positive.
    capital : float
        Account value to allocate, in account currency.
    fractional : bool
        False: whole shares with ``pypfopt.DiscreteAllocation.greedy_portfolio``; True:
        exact fractional shares ``weight * capital / price``.

    Returns
    -------
    Allocation
        ``shares`` for every symbol of ``weights`` and the ``leftover_cash``.
    """
    if not capital > 0:
        raise ValueError(f"capital is {capital!r}; pass a positive amount")
    latest = prices.reindex(weights.index)
    if latest.isna().any() or (latest <= 0).any() or weights.isna().any():
        raise ValueError(f"prices must be positive for every symbol of weights and weights must have no NaN; "
                         f"got prices {latest.to_dict()}")
    if fractional:
        shares = weights * capital / latest
        return Allocation(shares.rename("shares"), float(capital - (shares * latest).sum()))
    held, leftover = DiscreteAllocation(weights.to_dict(), latest.astype(float),
                                        total_portfolio_value=capital).greedy_portfolio()
    shares = pd.Series(held, dtype=float).reindex(weights.index).fillna(0.0).rename("shares")
    return Allocation(shares, float(leftover))
