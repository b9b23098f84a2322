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


def plot_feature_coverage(features: pd.DataFrame, ax=None):
    """Share of (date, symbol) rows with a value, per feature and year (a heat map)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 0.3 * features.shape[1] + 1.5))
    years = features.index.get_level_values("date").year
    coverage = features.notna().groupby(years).mean().T
    image = ax.imshow(coverage.to_numpy(), aspect="auto", cmap="Greens", vmin=0, vmax=1)
    ax.set_yticks(range(len(coverage.index)), coverage.index)
    step = max(1, len(coverage.columns) // 15)
    ax.set_xticks(range(0, len(coverage.columns), step), coverage.columns[::step])
    ax.set_title("Feature coverage by year")
    ax.figure.colorbar(image, ax=ax, fraction=0.03)
    return ax


def plot_rolling_ic(ic_by_date: pd.DataFrame, window: int = 252, ax=None):
    """Rolling mean of each model's daily rank IC (columns = models)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    ic_by_date.rolling(window, min_periods=window // 4).mean().plot(ax=ax, title=f"Rank IC, {window}-session rolling mean")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    return ax


def plot_ic_decay(decay: dict[str, list[dict]], ax=None):
    """Mean rank IC against the forward-return horizon, one line per model."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for name, rows in decay.items():
        table = pd.DataFrame(rows)
        ax.plot(table["horizon"], table["mean"], marker="o", label=name)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="horizon (sessions)", ylabel="mean rank IC", title="IC decay")
    ax.legend()
    return ax


def plot_quantile_returns(quantiles: dict[str, dict], ax=None):
    """Mean forward return of each score quantile (1 = lowest), one group of bars per model."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    table = pd.DataFrame({name: summary["quantile_means"] for name, summary in quantiles.items()})
    table.plot.bar(ax=ax, title="Mean forward return by score quantile")
    ax.set(xlabel="quantile (1 = lowest score)", ylabel="mean forward return")
    return ax


def _axes(ax, figsize):
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def plot_weights(weights: pd.DataFrame, ax=None, title: str = "Target weights"):
    """Stacked long weights per rebalance date (shorts, if any, stacked below zero)."""
    ax = _axes(ax, (10, 5))
    long, short = weights.clip(lower=0.0), weights.clip(upper=0.0)
    long.plot.area(ax=ax, linewidth=0, title=title, legend=weights.shape[1] <= 25)
    if (short < 0).any().any():
        short.plot.area(ax=ax, linewidth=0, legend=False)
    ax.set_ylabel("fraction of equity")
    if weights.shape[1] <= 25:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return ax


def plot_exposures(exposures: pd.DataFrame, ax=None):
    """Gross and net exposure and target turnover per rebalance date (from `book_exposures`)."""
    ax = _axes(ax, (10, 4))
    exposures[["gross", "net", "turnover"]].plot(ax=ax, title="Exposure and turnover of the targets")
    ax.set_ylabel("fraction of equity")
    return ax


def plot_frontier(frontier: pd.DataFrame, mu: pd.Series, cov: pd.DataFrame, weights: pd.Series, ax=None,
                  title: str = "Efficient frontier"):
    """The efficient frontier, each asset, and the chosen portfolio (annualized)."""
    import numpy as np

    ax = _axes(ax, (7, 5))
    ax.plot(frontier["volatility"], frontier["expected_return"], label="efficient frontier")
    vols = np.sqrt(np.diag(cov))
    ax.scatter(vols, mu.reindex(cov.columns), s=12, color="grey", label="assets")
    for symbol, x, y in zip(cov.columns, vols, mu.reindex(cov.columns)):
        ax.annotate(symbol, (x, y), fontsize=7, alpha=0.7)
    w = weights.reindex(cov.columns).fillna(0.0)
    ax.scatter([float(np.sqrt(w @ cov @ w))], [float(mu.reindex(cov.columns) @ w)], marker="*", s=200,
               color="red", label="target weights")
    ax.set_xlabel("volatility (annualized)")
    ax.set_ylabel("expected return (annualized)")
    ax.set_title(title)
    ax.legend()
    return ax


def plot_risk_contributions(contributions: pd.DataFrame, ax=None, title: str = "Weight and share of risk"):
    """Each asset's weight beside its share of portfolio variance (columns ``weight``, ``risk_contribution``)."""
    ax = _axes(ax, (10, 4))
    contributions.sort_values("risk_contribution", ascending=False).plot.bar(ax=ax, title=title)
    ax.set_ylabel("fraction")
    return ax
