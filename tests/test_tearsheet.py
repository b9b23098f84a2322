"""The quantstats tearsheet as we ship it: our yearly chart in place of quantstats' broken one
(its bars are each calendar year's compounded return, checked against a hand computation), and
nothing that needs the network or a script quantstats did not define."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from research_lib.reports import write_tearsheet
from research_lib.reports.tearsheet import replace_yearly_chart


@pytest.fixture(scope="module")
def sheet(tmp_path_factory):
    index = pd.bdate_range("2016-01-01", "2019-12-31")
    rng = np.random.default_rng(11)
    returns = pd.Series(rng.normal(6e-4, 0.01, len(index)), index)
    benchmark = pd.Series(rng.normal(3e-4, 0.012, len(index)), index, name="SP500")
    path = write_tearsheet(returns, benchmark, tmp_path_factory.mktemp("ts") / "tearsheet.html",
                           "momentum (daily) | analyst: offline analyst, not Claude")
    return returns, benchmark, path.read_text()


def test_the_yearly_chart_is_ours_and_its_bars_are_each_years_compounded_return(sheet):
    returns, benchmark, html = sheet
    chart = re.search(r'<div id="eoy_returns">(.*?)</div>', html, re.S).group(1)
    assert chart.startswith("<svg") and 'aria-label="Returns by calendar year, strategy against benchmark"' in chart
    tips = dict(re.findall(r"<rect [^>]*><title>([^<]+): (-?[0-9.]+)%</title>", chart))
    for year in range(2016, 2020):
        strategy = 1.0
        for r in returns[str(year)]:
            strategy *= 1.0 + r
        bench = float(np.prod(1.0 + benchmark[str(year)].to_numpy()))
        assert float(tips[f"Strategy, {year}"]) == pytest.approx(100 * (strategy - 1), abs=0.5)
        assert float(tips[f"SP500, {year}"]) == pytest.approx(100 * (bench - 1), abs=0.5)


def test_the_page_fetches_nothing_and_calls_no_undefined_script(sheet):
    _, _, html = sheet
    assert not re.search(r'<link[^>]+href="https?://', html) and 'onload="save()"' not in html
    assert "<script" not in html and "momentum (daily) | analyst: offline analyst, not Claude" in html


def test_a_page_without_the_chart_is_left_as_it_is():
    index = pd.bdate_range("2020-01-01", periods=5)
    r = pd.Series(0.01, index)
    assert replace_yearly_chart("<html>no chart</html>", r, r, "B") == "<html>no chart</html>"


def test_a_benchmark_named_strategy_and_a_year_without_returns_are_drawn_honestly():
    index = pd.bdate_range("2018-01-01", "2020-12-31")
    returns = pd.Series(0.001, index)
    returns["2019"] = np.nan  # a year with no return at all: no bar, not a 0 % bar
    html = replace_yearly_chart('<div id="eoy_returns">old</div>', returns, pd.Series(-0.001, index), "Strategy")
    tips = dict(re.findall(r"<title>([^<:]+): (-?[0-9.]+)%</title>", html))
    assert set(tips) == {"Strategy, 2018", "Strategy, 2020", "Strategy (benchmark), 2018",
                         "Strategy (benchmark), 2019", "Strategy (benchmark), 2020"}
    assert float(tips["Strategy, 2018"]) > 0 > float(tips["Strategy (benchmark), 2018"])
