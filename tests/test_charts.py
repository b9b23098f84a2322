"""The inline SVG charts with hostile inputs: every number they print is right, nothing they draw
lies off the chart, and an estimate that could not be made is left out, never drawn as NaN."""

from __future__ import annotations

import re

import pytest

from research_lib.reports._charts import (bar_chart, grouped_bars, histogram, line_chart, nice_ticks, percent,
                                          tick_formatter)


def tick_labels(svg: str) -> list[str]:
    return re.findall(r'text-anchor="end" fill="#57606a" font-weight="normal">([^<]+)</text>', str(svg))


@pytest.mark.parametrize("low, high", [(0, 1), (0, 0.75), (-2.5, 10), (0.001, 0.0035), (-1e6, 3e6)])
def test_every_tick_label_reads_back_as_its_tick(low, high):
    ticks = nice_ticks(low, high)
    fmt = tick_formatter(ticks)
    assert [float(fmt(t).replace(",", "")) for t in ticks] == pytest.approx(ticks, abs=1e-12)
    assert len(set(map(fmt, ticks))) == len(ticks)


def test_bars_that_are_all_losses_get_an_axis_that_ends_at_zero():
    svg = str(bar_chart(["2020", "2021"], [-0.05, -0.02], title="t", fmt=percent(0)))
    labels = tick_labels(svg)
    assert labels[-1] == "0%" and float(labels[0].rstrip("%")) <= -5 and "100%" not in labels


def test_grouped_bars_leave_a_missing_value_out_and_survive_short_notes():
    svg = str(grouped_bars(["a", "b", "c"], {"s": [0.1, None, float("nan")], "t": [0.2, 0.1, -0.1]}, title="t",
                           notes=["only one note"]))
    assert svg.count("<rect") == 4 and "nan" not in svg


def test_a_histogram_without_an_interval_draws_no_nan():
    svg = str(histogram([0.0, 1.0, 2.0], [3, 4], title="t", band=(float("nan"), 1.5),
                        marks={"estimate": float("nan"), "zero": 0.0, "none": None}))
    assert "nan" not in svg.lower() and "estimate" not in svg and ">zero<" in svg


def test_a_long_series_name_keeps_the_legend_on_the_chart():
    svg = str(line_chart(["a", "b"], {"x" * 80: [1.0, 2.0], "walk-forward selection": [1.0, 2.0]}, title="t",
                         width=560))
    xs = [float(x) for x in re.findall(r'<text x="(-?[0-9.]+)"', svg)]
    assert min(xs) >= 0, "no text starts left of the chart"
    assert "x" * 80 not in svg.split("<title>t</title>", 1)[1].split("<polyline")[0], "the legend shows it cut"
