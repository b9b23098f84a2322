"""Labels: what a signal at the close of date ``t`` tries to predict.

The label of date ``t`` over ``horizon`` sessions is the simple return from the close of
``t`` to the close of ``t + horizon``: it starts at ``t + 1``, so it never overlaps the data
a feature dated ``t`` may use. The last ``horizon`` dates have no label (NaN).
"""

from __future__ import annotations

import pandas as pd


def forward_returns(close: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Simple return from the close of ``t`` to the close of ``t + horizon`` (dates x symbols)."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 session (got {horizon}).")
    return close.shift(-horizon) / close - 1.0


def excess_forward_returns(close: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Forward returns minus their cross-sectional mean on each date (equal-weighted)."""
    raw = forward_returns(close, horizon)
    return raw.sub(raw.mean(axis=1), axis=0)
