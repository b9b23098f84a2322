"""Features of each symbol's own closes: dates x symbols in, dates x symbols out.

Every value at date ``t`` uses closes up to and including ``t`` only (rolling windows,
shifts into the past, exponential smoothing with ``adjust=False``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.units import SESSIONS_PER_YEAR



def trailing_return(close: pd.DataFrame, days: int) -> pd.DataFrame:
    """Simple return over the last ``days`` sessions."""
    return close / close.shift(days) - 1.0


def momentum(close: pd.DataFrame, lookback_days: int = 252, skip_days: int = 21) -> pd.DataFrame:
    """12-1 style momentum: the return from ``t - lookback_days`` to ``t - skip_days``."""
    return close.shift(skip_days) / close.shift(lookback_days) - 1.0


def realized_volatility(close: pd.DataFrame, days: int = 21, sessions_per_year: int = SESSIONS_PER_YEAR) -> pd.DataFrame:
    """Annualized (``sessions_per_year``) standard deviation of daily log returns over the last ``days`` sessions."""
    log_returns = np.log(close).diff()
    return log_returns.rolling(days, min_periods=days).std() * np.sqrt(sessions_per_year)


def drawdown(close: pd.DataFrame, days: int = 252) -> pd.DataFrame:
    """Distance below the highest close of the last ``days`` sessions (<= 0)."""
    return close / close.rolling(days, min_periods=days).max() - 1.0


def rsi(close: pd.DataFrame, days: int = 14) -> pd.DataFrame:
    """Wilder's relative strength index, 0 to 100."""
    change = close.diff()
    gain = change.clip(lower=0.0).ewm(alpha=1.0 / days, adjust=False, min_periods=days).mean()
    loss = (-change.clip(upper=0.0)).ewm(alpha=1.0 / days, adjust=False, min_periods=days).mean()
    return 100.0 - 100.0 / (1.0 + gain / loss)


def macd_histogram(close: pd.DataFrame, fast: int = 12, slow: int = 26, signal: int = 9) -> pd.DataFrame:
    """MACD minus its signal line, divided by the close so symbols are comparable."""
    macd = close.ewm(span=fast, adjust=False, min_periods=slow).mean() - close.ewm(span=slow, adjust=False, min_periods=slow).mean()
    return (macd - macd.ewm(span=signal, adjust=False, min_periods=signal).mean()) / close


def distance_from_moving_average(close: pd.DataFrame, days: int) -> pd.DataFrame:
    """Close over its ``days``-session simple moving average, minus 1."""
    return close / close.rolling(days, min_periods=days).mean() - 1.0
