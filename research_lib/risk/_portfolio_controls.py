"""Portfolio-level controls for backtests: volatility targeting and a drawdown circuit breaker.

Both are point-in-time: the value for date ``t`` uses only returns dated strictly before
``t``, so it may scale weights decided at ``t``. Returns are simple daily returns.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from research_lib.risk._limits import RiskInputError
from research_lib.units import SESSIONS_PER_YEAR


def _check_number(name: str, value: object, low: float, high: float = math.inf, integer: bool = False) -> None:
    ok = isinstance(value, (int, np.integer) if integer else (int, float, np.number)) and not isinstance(value, bool)
    if not ok or not (low < value < high):
        kind = "an integer" if integer else "a number"
        raise RiskInputError(f"{name} is {value!r}; pass {kind} strictly between {low} and {high}")


def volatility_target(weights: pd.DataFrame, returns: pd.DataFrame, target_vol: float, lookback: int,
                      max_leverage: float = 1.0, periods_per_year: int = SESSIONS_PER_YEAR) -> pd.DataFrame:
    """Scale each date's weights by target / trailing realized volatility of that portfolio.

    Parameters
    ----------
    weights : DataFrame (dates x symbols)
        Weights decided at each date, fractions of NAV.
    returns : DataFrame (dates x symbols)
        Simple daily returns on the same dates, with every column of ``weights``; a missing
        return counts as 0.
    target_vol : float
        Annualized volatility to aim for (0.10 for 10 %).
    lookback : int
        Number of sessions before ``t`` the realized volatility is measured over.
    max_leverage : float
        Cap on the multiplier (and so on how far weights are scaled up).
    periods_per_year : int
        Sessions per year, to annualize.

    Returns
    -------
    DataFrame
        ``weights`` times the multiplier ``min(max_leverage, target_vol / vol_t)``, where
        ``vol_t`` is the volatility of ``returns[t - lookback : t] @ weights[t]`` (dates
        strictly before ``t``). Dates with fewer than ``lookback`` earlier sessions get 0
        (no estimate, no exposure); a zero ``vol_t`` gets ``max_leverage``.
    """
    _check_number("target_vol", target_vol, 0.0)
    _check_number("lookback", lookback, 1, integer=True)
    _check_number("max_leverage", max_leverage, 0.0)
    _check_number("periods_per_year", periods_per_year, 0, integer=True)
    if not weights.index.equals(returns.index):
        raise RiskInputError("weights and returns have different dates; align them first, for example "
                             "weights.reindex(returns.index).ffill()")
    missing = [c for c in weights.columns if c not in returns.columns]
    if missing:
        raise RiskInputError(f"returns has no column for {missing}; pass returns for every symbol in weights")
    w = weights.to_numpy(dtype=float)
    if not np.isfinite(w).all():
        raise RiskInputError("weights contains NaN or infinite values; use 0 for symbols not held")
    r = returns[weights.columns].to_numpy(dtype=float)
    r = np.where(np.isfinite(r), r, 0.0)
    scale = np.zeros(len(w))
    for t in range(lookback, len(w)):
        scale[t] = volatility_multiplier(w[t], r[t - lookback:t], target_vol, max_leverage, periods_per_year)
    return weights * scale[:, None]


def volatility_multiplier(weights: np.ndarray, trailing_returns: np.ndarray, target_vol: float,
                          max_leverage: float = 1.0, periods_per_year: int = SESSIONS_PER_YEAR) -> float:
    """``min(max_leverage, target_vol / vol)`` for one book: ``vol`` is the annualized standard
    deviation of ``trailing_returns @ weights`` (sessions x symbols, known before the decision);
    a zero ``vol`` gives ``max_leverage``."""
    vol = np.std(trailing_returns @ weights, ddof=1) * math.sqrt(periods_per_year)
    return max_leverage if vol == 0 else min(max_leverage, target_vol / vol)


def follow_multiplier(weights: pd.DataFrame, multiplier: pd.Series) -> pd.DataFrame:
    """Decision rows that apply a daily exposure ``multiplier`` (e.g. the circuit breaker's).

    ``multiplier`` is indexed by the session it applies to and computed from returns before
    it, so the multiplier of session ``t + 1`` is known at the close of ``t``. The result has
    a row on every decision date of ``weights`` and on every session before a change of the
    multiplier: the latest target (cash before the first) times the next session's multiplier.
    """
    following = multiplier.shift(-1)
    changes = multiplier.index[(following != multiplier) & following.notna()]
    dates = weights.index.union(changes)
    targets = weights.reindex(dates).ffill().fillna(0.0)
    factor = following.reindex(dates).fillna(multiplier.reindex(dates)).fillna(1.0)  # 1 before the breaker starts
    return targets.mul(factor, axis=0)


def drawdown_circuit_breaker(returns: pd.Series, max_drawdown: float, cooldown_days: int) -> pd.Series:
    """Exposure multiplier per date: 1, or 0 for ``cooldown_days`` sessions after a breach.

    The breaker follows the managed equity (``returns`` times the multiplier). When its
    drawdown from peak reaches ``max_drawdown`` at the close of ``t``, the multiplier is 0
    from ``t + 1`` for ``cooldown_days`` sessions; then it is 1 again and the peak restarts
    from the equity at re-entry.

    Parameters
    ----------
    returns : Series
        The strategy's simple daily returns, unmanaged, without NaN.
    max_drawdown : float
        Drawdown that trips the breaker, a positive fraction (0.2 for 20 % below peak).
    cooldown_days : int
        Sessions out of the market after a breach.

    Returns
    -------
    Series of float
        The multiplier on each date of ``returns``, computed from returns strictly before it.
    """
    _check_number("max_drawdown", max_drawdown, 0.0, 1.0)
    _check_number("cooldown_days", cooldown_days, 0, integer=True)
    values = returns.to_numpy(dtype=float)
    if not np.isfinite(values).all():
        first = returns.index[~np.isfinite(values)][0]
        raise RiskInputError(f"returns has NaN or infinite values (first at {first}); fill or drop them, "
                             "for example returns.fillna(0.0)")
    multiplier = np.ones(len(values))
    equity = peak = 1.0
    out_until = -1  # last index of the current cooldown
    for t, r in enumerate(values):
        if t <= out_until:
            multiplier[t] = 0.0
            continue
        equity *= 1.0 + r
        peak = max(peak, equity)
        if 1.0 - equity / peak >= max_drawdown:
            out_until = t + cooldown_days
            peak = equity
    return pd.Series(multiplier, index=returns.index, name="exposure_multiplier")
