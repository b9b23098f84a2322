"""The promotion gate: thresholds, the verdict per criterion, `spartan promote`, and an
overfit sweep the gate must refuse."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from research_lib import validation
from research_lib.validation import registry
from research_lib.cli import main
from research_lib.errors import ConfigError
from research_lib.validation.metrics import headline_metrics
from research_lib.validation.promotion import (GateThresholds, PromotionRefused, evaluate_gate, load_thresholds, promote,
                                    promoted_strategies, verdict)
from research_lib.reports import build_index
from tests.conftest import REPO

PASSING = {"sharpe": 2.1, "win_rate": 0.58, "max_drawdown": -0.09, "deflated_sharpe": 0.99, "pbo": 0.1,
           "n_obs": 2000, "min_track_record": 300.0, "n_trials": 12, "stress_cagr": 0.12}


def test_the_shipped_thresholds_are_the_roadmap_plus_the_statistics():
    shipped = load_thresholds(REPO / "params" / "promotion.yaml")
    assert shipped == GateThresholds()
    assert (shipped.min_sharpe, shipped.min_win_rate, shipped.max_drawdown) == (1.5, 0.55, 0.15)
    assert (shipped.min_deflated_sharpe, shipped.max_pbo, shipped.cost_stress_multiple) == (0.95, 0.5, 2.0)


def test_bad_threshold_files_are_refused_with_the_valid_keys(tmp_path):
    path = tmp_path / "promotion.yaml"
    path.write_text("min_sharp: 1.0\n")
    with pytest.raises(ConfigError, match=r"promotion.yaml is not a valid promotion gate: min_sharp: "
                                        r"Extra inputs are not permitted \(got 1.0\); valid keys: .*'min_sharpe'"):
        load_thresholds(path)
    assert load_thresholds(tmp_path / "absent.yaml") == GateThresholds(), "no file: the defaults"


def test_a_run_meeting_every_criterion_passes():
    criteria = evaluate_gate(PASSING, GateThresholds())
    assert [c.name for c in criteria] == ["sharpe", "win_rate", "max_drawdown", "deflated_sharpe", "pbo",
                                          "track_record", "cost_stress"]
    assert all(c.passed for c in criteria) and verdict(criteria) == {**verdict(criteria), "passed": True, "failed": []}


@pytest.mark.parametrize("change, failed", [
    ({"sharpe": 1.49}, "sharpe"), ({"win_rate": 0.5}, "win_rate"), ({"max_drawdown": -0.2}, "max_drawdown"),
    ({"deflated_sharpe": 0.9}, "deflated_sharpe"), ({"pbo": 0.6}, "pbo"), ({"n_obs": 250}, "track_record"),
    ({"min_track_record": None}, "track_record"), ({"stress_cagr": -0.01}, "cost_stress"),
    ({"sharpe": float("nan")}, "sharpe")])
def test_each_criterion_fails_on_its_own(change, failed):
    result = verdict(evaluate_gate({**PASSING, **change}, GateThresholds()))
    assert not result["passed"] and result["failed"] == [failed]


def fake_run(folder, stats: dict, status: str = "succeeded", scenario: str = "trend"):
    """A finished run folder as `spartan run` leaves it, as far as promotion reads it."""
    folder.mkdir(parents=True)
    manifest = {"run_id": folder.name, "scenario": scenario, "status": status, "created_at": "2026-11-25T00:00:00Z",
                "code": {"commit": "abc123", "dirty": False}, "data": {"sha256": "d" * 64},
                "config": {"scenario": scenario, "strategy": {"name": "momentum_12_1"}}, "stages": []}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    judged = verdict(evaluate_gate(stats, GateThresholds()))
    (folder / "validation.json").write_text(json.dumps({"run_id": folder.name, "gate_stats": stats, "verdict": judged,
                                                        "provenance": {"params": manifest["config"]}}))
    return folder


def test_promote_refuses_a_failing_run_naming_each_failure_and_writes_nothing(tmp_path):
    run = fake_run(tmp_path / "runs" / "r1", {**PASSING, "sharpe": 0.9, "pbo": 0.7})
    with pytest.raises(PromotionRefused) as caught:
        promote(run, promoted_dir=tmp_path / "promoted")
    message = str(caught.value)
    assert "- sharpe: 0.9 (needs >= 1.5; annualized Sharpe ratio, net of costs)" in message
    assert "- pbo: 0.7 (needs <= 0.5;" in message and "win_rate" not in message
    assert "--override-reason" in message and not (tmp_path / "promoted").exists()


def test_promote_freezes_a_passing_run(tmp_path):
    run = fake_run(tmp_path / "runs" / "r2", PASSING)
    path = promote(run, promoted_dir=tmp_path / "promoted")
    assert path == tmp_path / "promoted" / "trend.yaml"
    record = yaml.safe_load(path.read_text())
    assert record["strategy"] == "trend" and record["run_id"] == "r2" and record["gate"]["passed"] is True
    assert record["override_reason"] is None and record["metrics"] == PASSING
    assert record["code"]["commit"] == "abc123" and record["data"]["sha256"] == "d" * 64
    assert record["params"]["strategy"]["name"] == "momentum_12_1" and record["promoted_at"]
    assert record["gate"]["thresholds"]["min_sharpe"] == 1.5


def test_an_override_is_recorded_in_the_file_and_on_the_dashboard(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "base.yaml").write_text("scenario: base\n")
    run = fake_run(tmp_path / "reports" / "runs" / "r3", {**PASSING, "deflated_sharpe": 0.5})
    with pytest.raises(PromotionRefused):
        promote(run, override_reason="   ")
    path = promote(run, override_reason="paper-trade the plumbing before the edge is proven")
    record = yaml.safe_load(path.read_text())
    assert record["gate"]["passed"] is False and record["gate"]["failed"] == ["deflated_sharpe"]
    assert record["override_reason"] == "paper-trade the plumbing before the edge is proven"
    [listed] = promoted_strategies()
    assert listed["strategy"] == "trend" and listed["passed"] is False and listed["override_reason"]
    index = build_index(tmp_path / "reports").read_text()
    assert "Promoted strategies" in index and "overridden" in index and "paper-trade the plumbing" in index


def test_only_finished_runs_with_a_validation_can_be_promoted(tmp_path):
    with pytest.raises(ConfigError, match="has no manifest.json and validation.json"):
        promote(tmp_path, promoted_dir=tmp_path / "promoted")
    run = fake_run(tmp_path / "failed-run", PASSING, status="failed")
    with pytest.raises(ConfigError, match="is 'failed', not succeeded"):
        promote(run, promoted_dir=tmp_path / "promoted")


def test_the_promote_command_exit_codes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "base.yaml").write_text("scenario: base\n")
    failing = fake_run(tmp_path / "reports" / "runs" / "bad", {**PASSING, "win_rate": 0.5})
    assert main(["promote", str(failing)]) == 1
    err = capsys.readouterr().err
    assert "fails the promotion gate" in err and "- win_rate: 50.0% (needs >= 55.0%" in err
    assert not (tmp_path / "params" / "promoted").exists()
    assert main(["promote", str(failing), "--override-reason", "demo"]) == 0
    assert "Promoted (gate overridden, reason recorded)" in capsys.readouterr().out
    assert main(["promote", str(tmp_path / "nowhere")]) == 2
    passing = fake_run(tmp_path / "reports" / "runs" / "good", PASSING, scenario="good")
    assert main(["promote", str(passing)]) == 0
    assert (tmp_path / "params" / "promoted" / "good.yaml").is_file()
    assert "good" in (tmp_path / "reports" / "index.html").read_text()


def gate_stats_of(best: pd.Series, trials: pd.DataFrame, db) -> dict:
    """The gate's statistics for ``best`` chosen among ``trials``, computed as 06_validate does."""
    registry.record_trials(db, "sweep", "research", {name: ({"trial": name}, r) for name, r in trials.items()})
    counted = registry.trial_statistics(db)
    moments = validation.sharpe_moments(best)
    headline = headline_metrics(best)
    return {"sharpe": headline["sharpe"], "win_rate": headline["win_rate"], "max_drawdown": headline["max_drawdown"],
            "deflated_sharpe": validation.deflated_sharpe_ratio(moments["sharpe"], moments["n_obs"], moments["skew"],
                                                                moments["kurtosis"], counted["n_trials"],
                                                                counted["sharpe_variance"]),
            "pbo": validation.probability_of_backtest_overfitting(trials)["pbo"], "n_obs": moments["n_obs"],
            "min_track_record": validation.minimum_track_record_length(moments["sharpe"], moments["skew"],
                                                                       moments["kurtosis"]),
            "n_trials": counted["n_trials"], "stress_cagr": headline["cagr"]}


def test_a_deliberately_overfit_sweep_is_refused(tmp_path):
    # 300 strategies without any skill; the sweep keeps the one with the best backtest.
    rng = np.random.default_rng(11)
    dates = pd.bdate_range("2015-01-01", periods=1260)
    trials = pd.DataFrame(rng.normal(0.0, 0.01, size=(len(dates), 300)), index=dates,
                          columns=[f"config_{i}" for i in range(300)])
    best = trials[trials.mean().div(trials.std()).idxmax()]
    stats = gate_stats_of(best, trials, tmp_path / "state.sqlite")
    assert stats["sharpe"] > 1.0, "the chosen backtest looks good on its own"
    assert stats["n_trials"] == 300
    result = verdict(evaluate_gate(stats, GateThresholds()))
    assert not result["passed"] and "deflated_sharpe" in result["failed"], result["failed"]
    naive = validation.probabilistic_sharpe_ratio(**validation.sharpe_moments(best))
    assert naive > 0.99 > 0.95 > stats["deflated_sharpe"], "alone it looks significant; counting the 300 trials, not"
    assert stats["pbo"] > 0.3, "the in-sample winner is no better than a coin flip out of sample"
    run = fake_run(tmp_path / "runs" / "overfit", stats)
    with pytest.raises(PromotionRefused, match="deflated_sharpe"):
        promote(run, promoted_dir=tmp_path / "promoted")


def test_a_strategy_with_a_real_edge_among_few_trials_passes(tmp_path):
    rng = np.random.default_rng(5)
    dates = pd.bdate_range("2015-01-01", periods=1260)
    edge = pd.Series(rng.normal(0.0012, 0.006, len(dates)), index=dates)  # Sharpe about 3, small drawdowns
    trials = pd.DataFrame({"edge": edge, **{f"noise_{i}": pd.Series(rng.normal(0.0, 0.006, len(dates)), index=dates)
                                            for i in range(7)}})
    stats = gate_stats_of(edge, trials, tmp_path / "state.sqlite")
    criteria = evaluate_gate(stats, GateThresholds())
    assert all(c.passed for c in criteria), [c for c in criteria if not c.passed]
    path = promote(fake_run(tmp_path / "runs" / "edge", stats), promoted_dir=tmp_path / "promoted")
    assert yaml.safe_load(path.read_text())["gate"]["passed"] is True


def test_loosening_the_thresholds_after_the_run_does_not_promote_it(tmp_path):
    run = fake_run(tmp_path / "runs" / "strict", {**PASSING, "sharpe": 1.2})
    with pytest.raises(PromotionRefused, match="verdict_at_validation.*loosened since"):
        promote(run, thresholds=GateThresholds(min_sharpe=1.0), promoted_dir=tmp_path / "promoted")


def test_a_validation_from_another_run_or_other_parameters_is_refused(tmp_path):
    run = fake_run(tmp_path / "runs" / "r4", PASSING)
    record = json.loads((run / "validation.json").read_text())
    record["provenance"]["params"] = {"scenario": "trend", "strategy": {"name": "equal_weight"}}
    (run / "validation.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="was not written by run r4 with its parameters"):
        promote(run, promoted_dir=tmp_path / "promoted")


def test_strategies_on_claudes_views_are_judged_after_its_knowledge_cutoff():
    from research_lib.config import load_config
    from research_lib.stages.strategies import judged_after_cutoff
    from research_lib.validation.evidence import judged_returns

    config = load_config(REPO / "params" / "smoke.yaml")  # portfolio on the blend of ML and analyst views
    returns = pd.Series(0.001, index=pd.bdate_range("2026-01-01", periods=200))

    def _judged_returns(config, returns, main, llm_report):
        return judged_returns(returns, after_cutoff_only=judged_after_cutoff(config, main, llm_report),
                              cutoff=config.llm.cutoff, model=config.llm.model)

    judged, label = _judged_returns(config, returns, "portfolio", {"analyst": "Claude (claude-sonnet-5-5)"})
    assert judged.index[0] > pd.Timestamp("2026-06-30") and len(judged) < len(returns)
    assert label == "sessions after claude-sonnet-5-5's knowledge cutoff 2026-06-30"
    for main, report in (("portfolio", {"analyst": "offline analyst, not Claude"}), ("momentum_12_1", None)):
        judged, label = _judged_returns(config, returns, main, report)
        assert judged.equals(returns) and label == "every session of the backtest"


def test_too_short_a_history_leaves_statistics_missing_so_their_criteria_fail():
    from research_lib.validation.evidence import run_statistics as _statistics

    returns = pd.Series(np.random.default_rng(1).normal(0.001, 0.01, 20), index=pd.bdate_range("2020-01-01", periods=20))
    stats = _statistics(returns, pd.DataFrame({"a": returns, "b": returns * 0.5}), {"n_trials": 2, "sharpe_variance": 1e-4},
                        GateThresholds(), returns)
    assert stats["moments"] is not None and stats["dsr"] is not None
    assert stats["pbo"] is None and stats["bootstrap"] is None, "16 blocks of 1 and 21-session blocks do not fit"
    failed = verdict(evaluate_gate({**PASSING, "pbo": stats["pbo"]}, GateThresholds()))["failed"]
    assert failed == ["pbo"]
