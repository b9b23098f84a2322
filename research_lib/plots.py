"""Small plotting functions: ``plot_x(data, ax=None) -> ax``; notebooks compose them."""

from __future__ import annotations

import pandas as pd


def plot_growth(returns: pd.DataFrame | pd.Series, ax=None, title: str = "Growth of $1"):
    """Compounded growth of $1 for each column of daily simple returns, log scale."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 5))
    growth = (1.0 + returns.fillna(0.0)).cumprod()
    growth.plot(ax=ax, logy=True, title=title, legend=isinstance(growth, pd.DataFrame) and growth.shape[1] <= 12)
    ax.set_ylabel("growth of $1 (log scale)")
    return ax


def plot_prices(close: pd.DataFrame, ax=None):
    """Each symbol's close divided by its first close, log scale."""
    return plot_growth(close.pct_change(fill_method=None), ax=ax, title=f"Growth of $1, {close.shape[1]} symbols")
