"""Headline performance numbers from daily simple returns.

Pure functions of NumPy arrays; fractions, never percentages; ``periods_per_year`` sessions a
year (252 for New York, the default; a run passes its calendar's, ``RunConfig.sessions_per_year``:
365 for crypto); the risk-free rate is taken as zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from research_lib.units import SESSIONS_PER_YEAR

if TYPE_CHECKING:  # hedge_summary reads a HedgeResult; the metrics need nothing of the hedging package
    from research_lib.hedging import HedgeResult



def cagr(returns: np.ndarray, periods_per_year: int = SESSIONS_PER_YEAR) -> float:
    """Compound annual growth rate."""
    returns = np.asarray(returns, dtype=float)
    growth = np.prod(1.0 + returns)
    return float(growth ** (periods_per_year / len(returns)) - 1.0)


def annual_volatility(returns: np.ndarray, periods_per_year: int = SESSIONS_PER_YEAR) -> float:
    return float(np.std(returns, ddof=1) * np.sqrt(periods_per_year))


def sharpe_ratio(returns: np.ndarray, periods_per_year: int = SESSIONS_PER_YEAR) -> float:
    """Annualized Sharpe ratio (mean over standard deviation, ddof=1); NaN if flat."""
    returns = np.asarray(returns, dtype=float)
    std = np.std(returns, ddof=1)
    return float(np.mean(returns) / std * np.sqrt(periods_per_year)) if std > 0 else float("nan")


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough loss of the compounded curve, as a negative fraction."""
    wealth = np.cumprod(1.0 + np.asarray(returns, dtype=float))
    peaks = np.maximum.accumulate(np.r_[1.0, wealth])[1:]
    return float(np.min(wealth / peaks - 1.0))


def win_rate(returns: np.ndarray) -> float:
    """Share of sessions with a positive return among sessions with a non-zero return."""
    returns = np.asarray(returns, dtype=float)
    active = returns[returns != 0]
    return float(np.mean(active > 0)) if active.size else float("nan")


def headline_metrics(returns: pd.Series, periods_per_year: int = SESSIONS_PER_YEAR) -> dict[str, float | str | int]:
    """The numbers a tearsheet leads with, as plain JSON-ready values (annualized over
    ``periods_per_year`` sessions)."""
    values = returns.to_numpy(dtype=float)
    return {
        "start": returns.index[0].strftime("%Y-%m-%d"),
        "end": returns.index[-1].strftime("%Y-%m-%d"),
        "sessions": int(len(values)),
        "total_return": float(np.prod(1.0 + values) - 1.0),
        "cagr": cagr(values, periods_per_year),
        "annual_volatility": annual_volatility(values, periods_per_year),
        "sharpe": sharpe_ratio(values, periods_per_year),
        "max_drawdown": max_drawdown(values),
        "win_rate": win_rate(values),
    }


def backtest_metrics(returns: pd.Series, turnover: pd.Series, costs: pd.Series, benchmark: pd.Series,
                     periods_per_year: int = SESSIONS_PER_YEAR) -> dict:
    """Headline numbers of a backtest and of its benchmark over the same sessions.

    ``benchmark`` holds the benchmark's daily simple returns; sessions it lacks count as 0.
    """
    years = len(returns) / periods_per_year
    return {
        "strategy": headline_metrics(returns, periods_per_year),
        "benchmark": headline_metrics(benchmark.reindex(returns.index).fillna(0.0), periods_per_year),
        "annual_turnover": float(turnover.sum() / years),
        "annual_cost": float(costs.sum() / years),
    }


def hedge_summary(result: HedgeResult, periods_per_year: int = SESSIONS_PER_YEAR) -> dict:
    """What a hedge overlay (`research_lib.hedging.hedge_overlay`) did and cost, JSON-ready.

    ``unhedged`` and ``hedged``: `headline_metrics`' ``cagr``, ``sharpe`` and ``max_drawdown``;
    ``hedge_cost``: ``premium_paid_per_year`` and ``costs_paid_per_year`` (the overlay's totals
    over the years of returns, fractions of equity; the premium is gross of the options sold back
    at each roll), ``hedge_pnl_per_year`` (the daily hedge P&L summed over the years: the net cost,
    or gain) and ``cagr_drag`` (unhedged CAGR less hedged CAGR); ``sessions``; ``label`` (the
    option prices are modelled, not traded quotes).
    """
    shown = ("cagr", "sharpe", "max_drawdown")
    before, after = (headline_metrics(r, periods_per_year) for r in (result.unhedged, result.returns))
    years = len(result.unhedged) / periods_per_year
    return {
        "unhedged": {k: before[k] for k in shown},
        "hedged": {k: after[k] for k in shown},
        "hedge_cost": {"premium_paid_per_year": result.premium_paid / years,
                       "costs_paid_per_year": result.costs_paid / years,
                       "hedge_pnl_per_year": float(result.hedge_pnl.sum() / years),
                       "cagr_drag": before["cagr"] - after["cagr"]},
        "sessions": len(result.unhedged),
        "label": result.label,
    }
