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
