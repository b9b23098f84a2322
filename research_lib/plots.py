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
