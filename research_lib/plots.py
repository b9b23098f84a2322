"""Small plotting functions: ``plot_x(data, ax=None) -> ax``; notebooks compose them."""

from __future__ import annotations

import numpy as np
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


MAX_LEGEND_ENTRIES = 40  # beyond this many symbols a legend is not readable: the plot says how many instead


def palette(n: int) -> list:
    """``n`` colours that stay apart: matplotlib's tab20 for up to 20 (pairs of a dark and a light
    shade), then tab20b and tab20c, 60 in all, cycled beyond."""
    from matplotlib import colormaps

    colours = [colormaps[name](i) for name in ("tab20", "tab20b", "tab20c") for i in range(20)]
    return [colours[i % len(colours)] for i in range(n)]


def plot_weights(weights: pd.DataFrame, ax=None, title: str = "Target weights"):
    """Stacked long weights per rebalance date (shorts, if any, stacked below zero), one colour per
    symbol (`palette`), the legend in columns beside the plot."""
    ax = _axes(ax, (11, 5))
    long, short = weights.clip(lower=0.0), weights.clip(upper=0.0)
    colours = palette(weights.shape[1])
    long.plot.area(ax=ax, linewidth=0, title=title, legend=False, color=colours)
    if (short < 0).any().any():
        short.plot.area(ax=ax, linewidth=0, legend=False, color=colours)
    ax.set_ylabel("fraction of equity")
    if weights.shape[1] <= MAX_LEGEND_ENTRIES:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[:weights.shape[1]], labels[:weights.shape[1]], loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  fontsize="small", ncol=1 + weights.shape[1] // 21, frameon=False)
    else:
        ax.text(1.01, 1.0, f"{weights.shape[1]} symbols", transform=ax.transAxes, va="top")
    return ax


def plot_exposures(exposures: pd.DataFrame, ax=None):
    """Gross and net exposure and target turnover per rebalance date (from `book_exposures`).
    Every line stays visible where they coincide (a long-only book's net is its gross): gross is
    drawn wide and pale, net thin and dashed over it."""
    ax = _axes(ax, (10, 4))
    ax.plot(exposures.index, exposures["gross"], linewidth=5, alpha=0.35, color="tab:blue", label="gross")
    ax.plot(exposures.index, exposures["net"], linewidth=1.5, linestyle="--", color="tab:orange", label="net")
    ax.plot(exposures.index, exposures["turnover"], linewidth=1, color="tab:green", label="turnover")
    ax.set(title="Exposure and turnover of the targets", ylabel="fraction of equity")
    ax.legend(frameon=False)
    return ax


def plot_frontier(frontier: pd.DataFrame, mu: pd.Series, cov: pd.DataFrame, weights: pd.Series, ax=None,
                  title: str = "Efficient frontier"):
    """The efficient frontier, each asset, and the chosen portfolio (annualized)."""
    ax = _axes(ax, (7, 5))
    ax.plot(frontier["volatility"], frontier["expected_return"], label="efficient frontier")
    vols = np.sqrt(np.diag(cov))
    ax.scatter(vols, mu.reindex(cov.columns), s=12, color="grey", label="assets")
    hidden = _label_points(ax, list(cov.columns), vols, mu.reindex(cov.columns).to_numpy())
    if hidden:
        ax.text(0.99, 0.01, f"{hidden} labels left out where they would overlap", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=7, color="grey")
    w = weights.reindex(cov.columns).fillna(0.0)
    ax.scatter([float(np.sqrt(w @ cov @ w))], [float(mu.reindex(cov.columns) @ w)], marker="*", s=200,
               color="red", label="target weights")
    ax.set_xlabel("volatility (annualized)")
    ax.set_ylabel("expected return (annualized)")
    ax.set_title(title)
    ax.legend()
    return ax


_LABEL_OFFSETS = ((4, 3), (4, -9), (-4, 3), (-4, -9))  # points: right-above, right-below, left-above, left-below


def _label_points(ax, labels: list[str], xs, ys) -> int:
    """Label each point where its text overlaps no other label (trying four places around it);
    return how many were left out."""
    ax.figure.canvas.draw()  # the data-to-display transform needs the final axes limits
    to_display = ax.transData.transform
    points_to_px = ax.figure.dpi / 72.0
    taken: list[tuple[float, float, float, float]] = []
    hidden = 0
    for label, x, y in sorted(zip(labels, xs, ys), key=lambda t: (-t[2], t[1])):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        px, py = to_display((x, y))
        width, height = 4.3 * len(str(label)) * points_to_px, 7.5 * points_to_px
        for dx, dy in _LABEL_OFFSETS:
            left = px + dx * points_to_px - (width if dx < 0 else 0)
            bottom = py + dy * points_to_px
            box = (left, bottom, left + width, bottom + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                taken.append(box)
                ax.annotate(str(label), (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                            alpha=0.8, ha="right" if dx < 0 else "left")
                break
        else:
            hidden += 1
    return hidden


def plot_risk_contributions(contributions: pd.DataFrame, ax=None, title: str = "Weight and share of risk"):
    """Each asset's weight beside its share of portfolio variance (columns ``weight``, ``risk_contribution``)."""
    ax = _axes(ax, (10, 4))
    contributions.sort_values("risk_contribution", ascending=False).plot.bar(ax=ax, title=title)
    ax.set_ylabel("fraction")
    return ax


LOWER_IS_BETTER = frozenset({"annual_volatility", "annual_turnover", "annual_cost"})  # sweep metrics to minimize
_FIRST_METRIC = "sharpe"  # a sweep table's parameters are its columns before this one
_REDUCTIONS = ("mean", "median", "best", "worst")  # how sweep_surface reduces over the parameters not drawn
_MAX_ANNOTATED_CELLS = 200  # beyond this, numbers in the cells would not be readable


def sweep_surface(result_or_table, x: str, y: str, metric: str = "sharpe", reduce: str = "mean",
                  **fixed) -> tuple[pd.DataFrame, str]:
    """The ``metric`` of a sweep over ``y`` (rows) x ``x`` (columns), and the rule that made it.

    ``fixed`` keeps only the configurations with those parameter values; the parameters neither
    plotted nor fixed (e.g. ``symbol`` of a per-symbol sweep) are reduced over by ``reduce``:
    ``mean`` (default: what the idea earns on a typical symbol), ``median``, ``best`` (the highest,
    or the lowest for volatility, turnover and cost: the cherry-picked view, which overstates what
    the idea earns) or ``worst``. Configurations that never trade (NaN metric) are left out of a
    cell; a cell none of whose configurations trade, or that no configuration has, is NaN. A missing parameter value (None or NaN) is a value like
    any other, labelled ``None`` and placed after the others.
    """
    table = getattr(result_or_table, "table", result_or_table)
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"result_or_table is a {type(result_or_table).__name__}; pass a sweep result, a loaded "
                        "sweep (both have .table) or a sweep's table (a DataFrame).")
    columns = list(table.columns)
    params = columns[:columns.index(_FIRST_METRIC)] if _FIRST_METRIC in columns else [c for c in columns if c != metric]
    _check_names(table, params, x, y, metric, fixed)
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce={reduce!r} is not one of {', '.join(_REDUCTIONS)}; pass e.g. reduce='mean' "
                         "(the typical value over the parameters not drawn) or reduce='best'.")
    rows = table
    for name, value in fixed.items():
        kept = rows[_keys(rows[name]) == _key(value)]
        if kept.empty:
            raise ValueError(f"{name}={value!r} matches no configuration; {name} takes the values "
                             f"{_ordered(table[name])}.")
        rows = kept
    rest = [p for p in params if p not in (x, y, *fixed)]
    lower = metric in LOWER_IS_BETTER
    values = pd.to_numeric(rows[metric], errors="coerce")
    grouped = values.groupby([_keys(rows[y]), _keys(rows[x])], dropna=False, sort=False)
    how = {"mean": "mean", "median": "median", "best": "min" if lower else "max", "worst": "max" if lower else "min"}
    reduced = grouped.agg(how[reduce])  # NaN (never trades) is skipped; all-NaN stays NaN
    surface = reduced.unstack(1).reindex(index=_ordered(rows[y]), columns=_ordered(rows[x]))
    surface.index.name, surface.columns.name = y, x
    rule = ", ".join(f"{k}={v}" for k, v in fixed.items())
    if rest:
        named = {"best": f"best ({'lowest' if lower else 'highest'})", "worst": f"worst ({'highest' if lower else 'lowest'})"}
        rule = ", ".join(filter(None, [rule, f"{named.get(reduce, reduce)} over {', '.join(rest)}"]))
        if values.isna().any():  # the cells' reductions are over fewer configurations than the grid has
            rule += " of those that trade"
    return surface, rule


class _Missing:
    """The one key of a missing parameter value (None or NaN), which pandas would drop or not match."""

    def __repr__(self) -> str:
        return "None"

    __str__ = __repr__


MISSING = _Missing()


def _key(value):
    """A parameter value as a key of the surface: None and NaN are `MISSING`."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return MISSING
    return value


def _keys(values: pd.Series) -> pd.Series:
    return pd.Series([_key(v) for v in values], index=values.index, dtype=object)


def _check_names(table: pd.DataFrame, params: list, x: str, y: str, metric: str, fixed: dict) -> None:
    from research_lib.params import did_you_mean

    if metric not in table.columns:
        raise ValueError(f"metric {metric!r} is not a column of the table (columns: {list(table.columns)})."
                         f"{did_you_mean(metric, map(str, table.columns))}")
    if not _numeric(table[metric]):
        numeric = [c for c in table.columns if c not in params and _numeric(table[c])]
        raise ValueError(f"metric {metric!r} is not numeric (values such as {table[metric].head(3).tolist()}); "
                         f"pick a numeric metric: {numeric}.")
    for what, name in [("x", x), ("y", y)] + [("fixed parameter", k) for k in fixed]:
        if name not in params:
            raise ValueError(f"{what} {name!r} is not a parameter of the sweep (parameters: {params})."
                             f"{did_you_mean(name, map(str, params))}")
    if x == y or x in fixed or y in fixed:
        raise ValueError(f"x={x!r}, y={y!r} and the fixed parameters {sorted(fixed)} must all differ; plot two "
                         "parameters and fix others.")


def _numeric(values: pd.Series) -> bool:
    """Numbers (NaN allowed), not booleans: a dtype of numbers, or objects that are all numbers or missing."""
    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    present = [v for v in values if _key(v) is not MISSING]
    return bool(present) and all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                                 for v in present)


def _ordered(values: pd.Series) -> list:
    """The distinct values (missing ones as `MISSING`, last), sorted when they can be compared, else in
    order of appearance."""
    distinct = list(pd.unique(_keys(values)))
    missing = [MISSING] if MISSING in distinct else []
    present = [v for v in distinct if v is not MISSING]
    try:
        return sorted(present) + missing
    except TypeError:
        return present + missing


def plot_sharpe_heatmap(result_or_table, x: str, y: str, metric: str = "sharpe", ax=None, reduce: str = "mean",
                        **fixed):
    """Heat map of a sweep's ``metric`` (annualized Sharpe by default) over two parameters.

    Parameters
    ----------
    result_or_table : a `SweepResult`, a loaded sweep (``registry.load_sweep``) or a sweep's table.
    x, y : the parameters along the horizontal and vertical axes.
    metric : a column of the table (``sharpe``, ``cagr``, ``max_drawdown``...).
    ax : matplotlib axes to draw on (None: a new figure).
    reduce : how the parameters neither drawn nor fixed are reduced over: ``mean`` (default),
        ``median``, ``best`` or ``worst`` (said in the title, see `sweep_surface`).
    **fixed : parameter values to hold, e.g. ``symbol="AAPL"``.

    Grey cells never trade (NaN), or no configuration has them. Returns the axes; the image's
    array (``ax.images[0].get_array()``) holds the cells, rows = ``y`` values ascending upwards.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    surface, rule = sweep_surface(result_or_table, x, y, metric, reduce, **fixed)
    own_figure = ax is None
    ax = _axes(ax, (max(5.0, 0.6 * surface.shape[1] + 3), max(4.0, 0.4 * surface.shape[0] + 2)))
    cells = np.ma.masked_invalid(surface.to_numpy(dtype=float))
    cmap = plt.get_cmap("RdYlGn_r" if metric in LOWER_IS_BETTER else "RdYlGn").with_extremes(bad="lightgrey")
    norm = None
    if cells.count() and cells.min() < 0 < cells.max() and metric not in LOWER_IS_BETTER:
        norm = Normalize(-abs(cells).max(), abs(cells).max())  # zero in the middle: red loses, green earns
    image = ax.imshow(cells, origin="lower", aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    _label_axis(ax.set_xticks, surface.columns)
    _label_axis(ax.set_yticks, surface.index)
    if surface.size <= _MAX_ANNOTATED_CELLS:
        for (row, column), value in np.ndenumerate(surface.to_numpy(dtype=float)):
            ax.text(column, row, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=7)
    title = f"{metric} by {y} and {x}" + (f"; {rule}" if rule else "") + ("; grey: never trades" if cells.mask.any() else "")
    ax.set(xlabel=x, ylabel=y)
    ax.figure.colorbar(image, ax=ax, fraction=0.05, label=metric)
    if own_figure:  # fit the colour bar's label inside the figure
        ax.figure.tight_layout()
    _wrapped_title(ax, title)
    if own_figure:  # and the wrapped title
        ax.figure.tight_layout()
    return ax


def _wrapped_title(ax, title: str) -> None:
    """Set ``title`` wrapped onto as many lines as it takes to fit the figure's width."""
    import textwrap

    renderer = ax.figure.canvas.get_renderer()
    inside = ax.figure.bbox
    for width in range(len(title), 19, -5):
        ax.set_title(textwrap.fill(title, width))
        box = ax.title.get_window_extent(renderer)
        if box.x0 >= inside.x0 and box.x1 <= inside.x1:
            return


def _label_axis(set_ticks, values: pd.Index) -> None:
    """Tick labels of the parameter values, at most about 20 of them, each value told apart from the others."""
    step = max(1, len(values) // 20)
    labels = _value_labels(list(values))
    set_ticks(range(0, len(values), step), labels[::step])


def _value_labels(values: list) -> list[str]:
    """Short labels of distinct values: floats with as many digits as it takes to tell them apart (up to
    repr's 17), and repr for every value when text alone would not (1 and '1')."""
    for digits in (6, 10, 17):
        labels = [f"{v:.{digits}g}" if isinstance(v, (float, np.floating)) else str(v) for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return [repr(v) for v in values]
