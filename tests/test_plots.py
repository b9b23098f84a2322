"""Notebook 05's pictures are readable: 20+ symbols get colours that differ, every exposure line
stays visible where the lines coincide, frontier labels never overlap (those that would are
left out and counted), and no empty risk-event table is shown."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from research_lib.plots import palette, plot_exposures, plot_frontier, plot_weights  # noqa: E402
from research_lib.stages import risk_event_tables  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.mark.parametrize("n", [1, 20, 24, 60])
def test_the_palette_gives_every_symbol_its_own_colour(n):
    colours = palette(n)
    assert len(colours) == n and len(set(colours)) == n
    rgb = np.array([c[:3] for c in colours])
    closest = min(np.abs(a - b).sum() for a, b in itertools.combinations(rgb, 2)) if n > 1 else 1.0
    assert closest > 0.05, "no two colours are near-identical"


def test_twenty_four_symbols_are_stacked_in_twenty_four_colours_with_a_legend():
    dates = pd.date_range("2020-01-31", periods=12, freq="ME")
    weights = pd.DataFrame(1 / 24, index=dates, columns=[f"S{i:02d}" for i in range(24)])
    ax = plot_weights(weights)
    fills = [c.get_facecolor()[0][:3] for c in ax.collections]
    assert len(fills) == 24 and len({tuple(np.round(f, 4)) for f in fills}) == 24
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(weights.columns)


def test_gross_and_net_both_show_when_they_coincide():
    dates = pd.date_range("2020-01-31", periods=6, freq="ME")
    exposures = pd.DataFrame({"gross": 1.0, "net": 1.0, "turnover": 0.2}, index=dates)
    ax = plot_exposures(exposures)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"gross", "net", "turnover"}
    gross, net = lines["gross"], lines["net"]
    assert gross.get_linewidth() > 2 * net.get_linewidth() and net.get_linestyle() == "--", \
        "net is drawn thin and dashed over a wide gross: both visible"


def test_frontier_labels_never_overlap_and_the_left_out_are_counted():
    symbols = [f"SYM{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    vols = np.r_[np.full(15, 0.2), rng.uniform(0.1, 0.4, 15)]  # fifteen assets on one spot
    cov = pd.DataFrame(np.diag(vols**2), index=symbols, columns=symbols)
    mu = pd.Series(np.r_[np.full(15, 0.08), rng.uniform(0.0, 0.15, 15)], index=symbols)
    frontier = pd.DataFrame({"volatility": [0.1, 0.2, 0.3], "expected_return": [0.05, 0.09, 0.12]})
    ax = plot_frontier(frontier, mu, cov, pd.Series(1 / 30, index=symbols))
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text() in symbols]
    assert 1 <= len(boxes) < 30
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "two labels overlap"
    note = [t.get_text() for t in ax.texts if "labels left out" in t.get_text()]
    assert note == [f"{30 - len(boxes)} labels left out where they would overlap"]




def test_no_empty_risk_event_table():
    class Construction:
        risk_events = pd.DataFrame(columns=["date", "symbol", "action", "reason"])

    assert risk_event_tables({"construction": Construction()}) is None
    assert risk_event_tables({"construction": None}) is None
    Construction.risk_events = pd.DataFrame({"date": ["2020-01-31"] * 3, "symbol": ["A", "B", "C"],
                                             "action": ["clamped", "clamped", "rejected"],
                                             "reason": ["max_weight: 0.3 > 0.2", "max_weight: 0.25 > 0.2",
                                                        "max_adv_fraction: 0.2 > 0.1"]})
    by_limit, latest = risk_event_tables({"construction": Construction()}, last=2)
    assert by_limit.loc["max_weight", "clamped"] == 2 and by_limit.loc["max_adv_fraction", "rejected"] == 1
    assert by_limit.loc["max_weight", "rejected"] == 0 and list(latest["symbol"]) == ["B", "C"]
