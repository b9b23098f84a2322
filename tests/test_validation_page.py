"""The validation page draws its evidence: every chart the record has data for is on the page, as
inline SVG, and a year or regime of too few sessions is marked as too few to judge."""

from __future__ import annotations

import re

import numpy as np
import pytest
import pandas as pd

from research_lib.reports.validation_page import write_validation_page
from research_lib.units import FEW_SESSIONS
from research_lib.validation import evidence
from research_lib.validation.metrics import headline_metrics
from research_lib.validation.promotion import GateThresholds, evaluate_gate, verdict

CHART_IDS = ("chart-bootstrap", "chart-dsr", "chart-pbo-logits", "chart-pbo-ranks", "chart-costs", "chart-regimes",
             "chart-years", "chart-walk-forward")


def validation_record(index: pd.DatetimeIndex, run_id: str = "test-run", seed: int = 3) -> dict:
    """A validation record made by the library's own functions from generated returns: a headline,
    seven other trials and a benchmark over ``index``."""
    rng = np.random.default_rng(seed)
    returns = pd.Series(rng.normal(5e-4, 0.01, len(index)), index)
    benchmark = pd.Series(rng.normal(3e-4, 0.011, len(index)), index, name="SP500")
    trials = pd.DataFrame({f"trial_{i}": rng.normal(2e-4, 0.01, len(index)) for i in range(7)}, index)
    trials["headline"] = returns
    trial_stats = {"n_trials": trials.shape[1], "sharpe_variance": float((trials.mean() / trials.std()).var())}
    thresholds = GateThresholds()
    stats = evidence.run_statistics(returns, trials, trial_stats, thresholds, benchmark)
    stress = {f"{m}x": headline_metrics(returns - (m - 1) * 2e-4) for m in (1, 2, 3)}
    gate_stats = evidence.gate_inputs(returns, stats, trial_stats, stress, thresholds)
    return evidence.validation_record(
        strategy="headline", run_id=run_id, judged_on="every session of the backtest", gate_stats=gate_stats,
        verdict=verdict(evaluate_gate(gate_stats, thresholds)), thresholds=thresholds, stats=stats,
        trial_stats=trial_stats, trial_names=list(trials), stress=stress, llm=None,
        provenance={"code": {"commit": "0123456789abcdef", "dirty": False}, "data_sha256": "a" * 64})


def test_every_chart_is_drawn_and_short_years_carry_a_caveat(tmp_path):
    index = pd.bdate_range("2016-10-03", "2021-03-15")  # a first year of a quarter, a last of less
    record = validation_record(index)
    html = write_validation_page(record, tmp_path / "validation.html").read_text()
    for chart in CHART_IDS:
        block = re.search(rf'<div class="chart" id="{chart}">(.*?)</div>', html, re.S)
        assert block and block.group(1).startswith("<svg") and "no data yet" not in block.group(1), chart
    years = {row["year"]: row["sessions"] for row in record["by_year"]}
    short = [year for year, n in years.items() if n < FEW_SESSIONS]
    assert short == [2021], years
    rows = re.findall(r"<tr><td>(\d{4})</td>.*?</tr>", html, re.S)
    assert rows == [str(y) for y in years]
    for year in years:
        row = re.search(rf"<tr><td>{year}</td>(.*?)</tr>", html, re.S).group(1)
        assert ("too few to judge" in row) == (year in short), year
    assert "-" in re.search(r"<td>1x</td>(.*?)</tr>", html, re.S).group(1).split("</td>")[-2], "drawdown a loss"


def test_a_page_of_an_older_record_without_figures_still_renders(tmp_path):
    record = validation_record(pd.bdate_range("2016-01-04", periods=600))
    record.pop("figures")
    html = write_validation_page(record, tmp_path / "validation.html").read_text()
    assert "chart-bootstrap" not in html and "chart-costs" in html and "Promotion gate" in html


def test_positions_against_targets_carry_the_targets_in_force_through_holding_sessions():
    from research_lib.reports.paper import book_vs_targets

    def cycle(session, weights, targets, equity=1.0):
        return {"session": session, "summary": {"weights": weights, "targets": targets, "equity": equity}}

    got = book_vs_targets([cycle("d0", {}, None),                                   # before any decision
                           cycle("d1", {}, {"A": 0.5, "B": 0.5}),                   # a decision, orders out
                           cycle("dx", {}, None, equity=None),                      # failed before the account
                           cycle("d2", {"A": 0.6, "B": 0.4}, None),                 # holding: same targets
                           cycle("d3", {"A": 0.6, "B": None}, {}),                  # a decision to hold cash
                           cycle("d4", {"A": -0.2, "C": 0.1}, None)])               # still that decision
    assert got["sessions"] == ["d0", "d1", "d2", "d3", "d4"]
    assert got["held_gross"] == pytest.approx([0.0, 0.0, 1.0, 0.6, 0.3]), "a failed cycle is no empty book"
    assert got["target_gross"][0] is None and got["target_gross"][1:] == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert got["off_target"][0] is None
    assert got["off_target"][1:] == pytest.approx([0.5, 0.5 * (0.1 + 0.1), 0.3, 0.5 * 0.3])


def _hedged_record(kind: str, tmp_path, with_vix: bool = True, index_gap: bool = False) -> tuple[dict, str]:
    """A validation record with its hedge section, and its page: the headline strategy is the
    index itself over two years, and the index history starts a year earlier (``index_gap``: the
    index lacks a judged session)."""
    from research_lib.config import RunConfig
    from research_lib.stages.validation import hedge_section

    dates = pd.bdate_range("2017-01-02", periods=780)
    rng = np.random.default_rng(11)
    index_returns = rng.normal(3e-4, 0.012, len(dates))
    index_returns[600:620] = -0.02  # a crash inside the judged sessions
    close = pd.DataFrame({"SP500": 2000.0 * np.cumprod(1.0 + index_returns)}, dates)
    if with_vix:
        close["^VIX"] = 18.0
    returns = close["SP500"].pct_change().iloc[260:]
    if index_gap:
        close.loc[dates[400], "SP500"] = np.nan
    record = validation_record(returns.index)
    record["hedge"] = hedge_section(returns, close, RunConfig(scenario="t", hedge={"kind": kind}))
    return record, write_validation_page(record, tmp_path / "validation.html").read_text()


def test_the_hedge_section_shows_drawdown_sharpe_and_cost_with_and_without_and_says_prices_are_modelled(tmp_path):
    from research_lib.units import format_drawdown

    record, html = _hedged_record("protective_put", tmp_path)
    h = record["hedge"]
    assert h["hedged"]["max_drawdown"] > h["unhedged"]["max_drawdown"], "puts on the index cut the index's crash"
    section = html[html.index('<h2 id="hedge">'):html.index("<h2>By volatility regime</h2>")]
    assert "Hedge overlay (modelled)" in section
    text = re.sub(r"<[^>]+>", "", section)
    assert "modelled" in text.lower() and "not traded quotes" in text
    for name, side in (("without the hedge", "unhedged"), ("with the hedge", "hedged")):
        row = re.search(rf"<td>{name}</td>(.*?)</tr>", section, re.S).group(1)
        cells = re.findall(r'<td class="num">(.*?)</td>', row)
        assert cells == [f"{100 * h[side]['cagr']:.1f}%", f"{h[side]['sharpe']:.2f}",
                         format_drawdown(h[side]["max_drawdown"])], name
    for key, label in (("premium_paid_per_year", "Premium paid"), ("costs_paid_per_year", "Trading costs"),
                       ("hedge_pnl_per_year", "Net P&amp;L of the hedge"), ("cagr_drag", "CAGR drag")):
        row = re.search(rf"<tr><th>{re.escape(label)}.*?</th><td class=\"num\">(.*?)</td>", section, re.S)
        assert row and row.group(1) == f"{100 * h['hedge_cost'][key]:.2f}%", key
    assert h["hedge_cost"]["premium_paid_per_year"] > 0 and h["hedge_cost"]["costs_paid_per_year"] > 0
    config_line = re.sub(r"<[^>]+>", "", re.search(r'<p class="muted" id="hedge-config">(.*?)</p>', section, re.S)[1])
    assert config_line.startswith("Protective puts on SP500: puts struck at 95% of the index close, expiring after "
                                  "63 sessions, rolled every 21")
    assert "volatility: the VIX (^VIX) on 520 sessions, realized over 21 sessions plus 3% on 0 sessions." in config_line


def test_no_hedge_section_when_the_hedge_is_none(tmp_path):
    record, html = _hedged_record("none", tmp_path)
    assert record["hedge"] is None
    assert 'id="hedge"' not in html and "Hedge overlay" not in html and "Costs stressed" in html


def test_a_hedge_the_data_cannot_price_says_why_and_still_says_prices_are_modelled(tmp_path):
    record, html = _hedged_record("collar", tmp_path, with_vix=False, index_gap=True)
    section = html[html.index('<h2 id="hedge">'):html.index("<h2>By volatility regime</h2>")]
    assert re.search(r'<p class="fail" id="hedge-error">Not computed: index_close lacks 1 of the 520 strategy dates',
                     section)
    assert "not traded quotes" in section and "hedge-returns" not in section
    assert "calls at 110% of the index close" in section and "(this source's VIX is not loaded)" in section


def test_on_the_bundled_index_puts_cut_the_2020_drawdown_at_a_cost_the_page_reports(tmp_path):
    from research_lib.config import RunConfig
    from research_lib.data import load_prices
    from research_lib.stages.validation import hedge_section
    from research_lib.units import format_drawdown

    close = load_prices("bundled", ["SP500"], "2019-10-01", "2020-12-28", snapshot_dir=tmp_path)["close"]
    returns = close["SP500"].pct_change().loc["2020-01-02":]  # holding the index through the 2020 crash
    record = validation_record(returns.index)
    record["hedge"] = hedge_section(returns, close, RunConfig(scenario="t", hedge={"kind": "protective_put"}))
    h = record["hedge"]
    assert h["unhedged"]["max_drawdown"] < -0.30 and h["hedged"]["max_drawdown"] > h["unhedged"]["max_drawdown"] + 0.1
    assert h["hedge_cost"]["premium_paid_per_year"] > 0 and h["hedge_cost"]["costs_paid_per_year"] > 0
    assert h["volatility_source_days"] == {"vix": 0, "realized": len(returns)}  # the bundled VIX ends in 2019
    text = re.sub(r"<[^>]+>", " ", write_validation_page(record, tmp_path / "validation.html").read_text())
    for shown in (format_drawdown(h["unhedged"]["max_drawdown"]), format_drawdown(h["hedged"]["max_drawdown"]),
                  f"{100 * h['hedge_cost']['premium_paid_per_year']:.2f}%", "not traded quotes"):
        assert shown in text
