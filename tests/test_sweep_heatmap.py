"""Specification of the Sharpe surface (issue 15): one call draws a sweep's metric over two
parameters, each cell the table's value (or the mean, median, best or worst over the parameters not
drawn: the mean by default, never the cherry-picked best unasked), never-trading
cells shown as such."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

from research_lib.plots import plot_sharpe_heatmap  # noqa: E402


def sweep_table(rows: list[dict]) -> pd.DataFrame:
    """A sweep table: the given parameters and ``sharpe``, then the other metrics."""
    table = pd.DataFrame(rows)
    table = table[[c for c in table.columns if c != "sharpe"] + ["sharpe"]]  # parameters first, then metrics
    for name in ("cagr", "annual_volatility", "max_drawdown", "annual_turnover"):
        table[name] = table["sharpe"].abs() / 10
    table["reason"] = pd.Series([None if math.isfinite(s) else "never trades" for s in table["sharpe"]], dtype=object)
    return table.rename_axis("config")


def cells(ax) -> np.ma.MaskedArray:
    return ax.images[0].get_array()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_each_cell_is_the_tables_value_and_a_never_trading_cell_is_grey():
    table = sweep_table([{"fast": f, "slow": s, "sharpe": (f - s / 10) / 7} for f in (20, 5, 10) for s in (100, 50)])
    table.loc[(table["fast"] == 10) & (table["slow"] == 100), "sharpe"] = np.nan
    ax = plot_sharpe_heatmap(table, "fast", "slow")
    image = cells(ax)
    assert image.shape == (2, 3)  # rows: slow, ascending upwards; columns: fast, ascending
    for _, row in table.iterrows():
        i, j = [50, 100].index(row["slow"]), [5, 10, 20].index(row["fast"])
        if math.isnan(row["sharpe"]):
            assert image.mask[i, j]
        else:
            assert not np.ma.getmaskarray(image)[i, j] and image[i, j] == row["sharpe"]
    assert ax.images[0].origin == "lower" and tuple(ax.images[0].cmap.get_bad()[:3]) == matplotlib.colors.to_rgb("lightgrey")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "10", "20"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["50", "100"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("fast", "slow") and "grey: never trades" in ax.get_title()
    assert "n/a" in [t.get_text() for t in ax.texts]
    assert len(ax.figure.axes) == 2 and ax.figure.axes[1].get_ylabel() == "sharpe"  # the colour bar


rows = hs.lists(hs.fixed_dictionaries({
    "lookback": hs.sampled_from([10, 20, 60]), "threshold": hs.sampled_from([-1.5, 0.0, 2.5]),
    "symbol": hs.sampled_from(["AAPL", "KO"]),
    "sharpe": hs.one_of(hs.floats(-1e6, 1e6), hs.just(float("nan")), hs.just(0.0))}), min_size=1, max_size=30)


ORACLES = {"mean": lambda v: sum(v) / len(v), "median": statistics.median, "best": max, "worst": min}


@settings(max_examples=30, deadline=None, derandomize=True)
@given(rows=rows, fixed=hs.booleans(), reduce=hs.sampled_from([None, *ORACLES]))
def test_the_surface_reduces_over_the_parameters_not_drawn_or_keeps_the_fixed_ones(rows, fixed, reduce):
    # rows come duplicated, out of order, with NaN (never trades), zero, negative and huge Sharpe ratios
    table = sweep_table(rows)
    keep = {"symbol": "KO"} if fixed and "KO" in set(table["symbol"]) else {}
    chosen = [r for r in rows if all(r[k] == v for k, v in keep.items())]
    best: dict = {}
    for r in chosen:
        cell = (r["threshold"], r["lookback"])
        values = best.setdefault(cell, [])
        if not math.isnan(r["sharpe"]):
            values.append(r["sharpe"])
    xs, ys = sorted({r["lookback"] for r in chosen}), sorted({r["threshold"] for r in chosen})
    how = {} if reduce is None else {"reduce": reduce}
    ax = plot_sharpe_heatmap(SimpleNamespace(table=table), "lookback", "threshold", **how, **keep)
    plt.close(ax.figure)
    image, mask = cells(ax), np.ma.getmaskarray(cells(ax))
    assert image.shape == (len(ys), len(xs))
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            values = best.get((y, x), [])
            assert mask[i, j] == (not values)  # no configuration there, or none trades
            if values:
                assert image[i, j] == pytest.approx(ORACLES[reduce or "mean"](values), rel=1e-12, abs=1e-9)
    title = ax.get_title().replace("\n", " ")
    named = {None: "mean", "mean": "mean", "median": "median", "best": "best (highest)", "worst": "worst (lowest)"}
    assert ("symbol=KO" in title) if keep else (f"{named[reduce]} over symbol" in title)
    if not keep:  # a mean over the symbols that trade is not a mean over all: the title says so
        assert ("of those that trade" in title) == any(math.isnan(r["sharpe"]) for r in chosen)


def test_a_metric_to_minimize_takes_the_lowest_over_the_rest():
    table = sweep_table([{"window": w, "band": b, "symbol": s, "sharpe": 1.0} for w in (10, 20) for b in (1, 2)
                         for s in ("A", "B")])
    table["annual_volatility"] = np.arange(len(table), dtype=float)
    ax = plot_sharpe_heatmap(table, "window", "band", metric="annual_volatility", reduce="best")
    expected = table.groupby(["band", "window"])["annual_volatility"].min().unstack().to_numpy()
    np.testing.assert_array_equal(cells(ax), expected)
    assert "best (lowest) over symbol" in ax.get_title().replace("\n", " ")
    with pytest.raises(ValueError, match="reduce='maximum' is not one of mean, median, best, worst"):
        plot_sharpe_heatmap(table, "window", "band", reduce="maximum")


def test_a_long_title_is_wrapped_and_kept_inside_the_figure_with_the_colour_bar_label():
    table = sweep_table([{"a_long_parameter_name": a, "another_long_parameter_name": b, "symbol": s, "window": w,
                          "sharpe": float(a - b)} for a in (1, 2) for b in (1, 2) for s in ("A", "B") for w in (5, 9)])
    ax = plot_sharpe_heatmap(table, "a_long_parameter_name", "another_long_parameter_name")
    figure = ax.figure
    figure.canvas.draw()
    inside = figure.bbox
    for text in (ax.title, figure.axes[1].yaxis.label):
        box = text.get_window_extent()
        assert inside.x0 - 1 <= box.x0 and box.x1 <= inside.x1 + 1 and box.y1 <= inside.y1 + 1, text.get_text()
    assert "\n" in ax.get_title()


def test_a_loaded_sweep_draws_the_same_surface_as_its_table(tmp_path):
    from research_lib.validation.registry import load_sweep, record_sweep

    table = sweep_table([{"fast": f, "slow": s, "sharpe": np.nan} for f in (5, 10) for s in (50, 100)])
    returns = pd.DataFrame(np.random.default_rng(0).normal(0.0005, 0.01, (60, 4)),
                           index=pd.bdate_range("2020-01-01", periods=60))
    table["sharpe"] = (returns.mean() / returns.std() * 252 ** 0.5).to_numpy()
    loaded = load_sweep(tmp_path / "s.sqlite", record_sweep(tmp_path / "s.sqlite", "ma", table, returns, {}))
    np.testing.assert_array_equal(cells(plot_sharpe_heatmap(loaded, "fast", "slow")),
                                  cells(plot_sharpe_heatmap(table, "fast", "slow")))


@pytest.mark.parametrize("call, message", [
    (dict(x="fats", y="slow"), r"x 'fats' is not a parameter of the sweep \(parameters: \['fast', 'slow', 'symbol'\]\)"
                               r"\. Did you mean 'fast'\?"),
    (dict(x="fast", y="fast"), "must all differ"),
    (dict(x="fast", y="slow", metric="sharp"), "metric 'sharp' is not a column.*Did you mean 'sharpe'"),
    (dict(x="fast", y="slow", symbol="TSLA"), r"symbol='TSLA' matches no configuration; symbol takes the values "
                                              r"\['AAPL', 'KO'\]"),
    (dict(x="fast", y="slow", symbl="KO"), "fixed parameter 'symbl' is not a parameter"),
])
def test_a_mistaken_call_names_the_argument_and_the_choices(call, message):
    table = sweep_table([{"fast": f, "slow": 50, "symbol": s, "sharpe": 1.0} for f in (5, 10) for s in ("KO", "AAPL")])
    with pytest.raises(ValueError, match=message):
        plot_sharpe_heatmap(table, **call)
    with pytest.raises(TypeError, match="pass a sweep result, a loaded sweep"):
        plot_sharpe_heatmap([1, 2], "fast", "slow")


# --- after the review of issue 15 ---------------------------------------------------------------------

@pytest.mark.parametrize("missing", [None, float("nan")])
def test_a_missing_parameter_value_is_a_column_of_its_own_labelled_none(missing):
    # e.g. a stop-loss of None (no stop) beside stops of 2 % and 5 %: those configurations trade
    stop_effect = {0.05: 0.5, 0.02: 0.2}
    table = sweep_table([{"stop": s, "window": w, "symbol": "KO", "sharpe": 1.0 + w / 100 + stop_effect.get(s, 0.0)}
                         for s in (0.05, missing, 0.02) for w in (10, 20)])
    ax = plot_sharpe_heatmap(table, "stop", "window")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.02", "0.05", "None"]
    image = cells(ax)
    assert not np.ma.getmaskarray(image).any() and "never trades" not in ax.get_title()
    np.testing.assert_allclose(image[:, 2], [1.1, 1.2])  # the None column holds its own configurations
    kept = plot_sharpe_heatmap(table, "window", "symbol", stop=missing)
    np.testing.assert_allclose(cells(kept), [[1.1, 1.2]])


@pytest.mark.parametrize("metric", ["reason", "flag"])
def test_a_metric_that_is_not_numeric_is_refused_with_the_numeric_ones(metric):
    table = sweep_table([{"fast": f, "slow": 50, "sharpe": 1.0} for f in (5, 10)]).assign(flag=True)
    with pytest.raises(ValueError, match=rf"metric '{metric}' is not numeric .*pick a numeric metric: \['sharpe', "
                                         "'cagr'"):
        plot_sharpe_heatmap(table, "fast", "slow", metric=metric)


def test_tick_labels_tell_every_distinct_value_apart():
    table = sweep_table([{"a": a, "b": b, "sharpe": 1.0} for a in (0.1, 0.1 + 1e-9, 0.2, 1 / 3) for b in (1, "1")])
    ax = plot_sharpe_heatmap(table, "a", "b")
    xs, ys = [t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()]
    assert xs == ["0.1", "0.100000001", "0.2", "0.3333333333"] and ys == ["1", "'1'"]
