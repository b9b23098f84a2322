"""Labels: what a signal at the close of date ``t`` tries to predict.

The label of date ``t`` over ``horizon`` sessions is the simple return from the close of
``t + lag`` to the close of ``t + lag + horizon``. With ``lag = 0`` it starts at ``t + 1``, so
it never overlaps the data a feature dated ``t`` may use; with the backtest's execution lag
(a decision at the close of ``t`` is traded at the close of ``t + 1``) it is the return a
trade can actually earn. The last ``lag + horizon`` dates have no label (NaN).
"""

from __future__ import annotations

import pandas as pd


def forward_returns(close: pd.DataFrame, horizon: int, lag: int = 0) -> pd.DataFrame:
    """Simple return from the close of ``t + lag`` to the close of ``t + lag + horizon``."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 session (got {horizon}).")
    if lag < 0:
        raise ValueError(f"lag must be >= 0 sessions (got {lag}).")
    return close.shift(-(lag + horizon)) / close.shift(-lag) - 1.0


def excess_forward_returns(close: pd.DataFrame, horizon: int, lag: int = 0) -> pd.DataFrame:
    """Forward returns minus their cross-sectional mean on each date (equal-weighted)."""
    raw = forward_returns(close, horizon, lag)
    return raw.sub(raw.mean(axis=1), axis=0)
