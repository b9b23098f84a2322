"""RunFolder: a fresh artifact is read, a changed section remakes exactly what reads it, every
artifact says where it came from, bad parameters fail clearly, half-written files are never fresh.

Small synthetic prices from a user's file (two symbols, 30 sessions) keep these fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research_lib.config import load_config
from research_lib.errors import ConfigError
from research_lib.stages import ARTIFACTS, RunFolder
from research_lib.stages.folder import artifact_key
from research_lib.stages.keys import file_sha256, stage_sections
from research_lib.stages import features as features_stage
from tests.conftest import REPO

SESSIONS = pd.bdate_range("2021-02-16", "2021-04-30").drop(pd.Timestamp("2021-04-02"))[:30]  # Good Friday off


@pytest.fixture
def price_file(workspace, tmp_path):
    frame = pd.DataFrame({"AAA": np.linspace(10, 11, 30), "BBB": np.linspace(20, 19, 30),
                          "SP500": np.linspace(100, 101, 30)}, index=SESSIONS)
    path = tmp_path / "mine.csv"
    frame.rename_axis("date").to_csv(path)
    return path


def folder_for(price_file, run_dir, *overrides) -> RunFolder:
    config = load_config(REPO / "params" / "smoke.yaml", ["data.source=file", f"data.path={price_file}",
                                                          "data.start=null", "data.end=null", "data.symbols=null",
                                                          "features.names=[ret_5d]", *overrides])
    return RunFolder(config, run_dir)


@pytest.fixture
def feature_calls(monkeypatch):
    """How often the features stage computed the panel."""
    real, calls = features_stage.compute_features, []
    monkeypatch.setattr(features_stage, "compute_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_a_fresh_artifact_is_read_not_recomputed(price_file, tmp_path, feature_calls):
    first = folder_for(price_file, tmp_path / "run").features
    assert feature_calls == [1]
    again = folder_for(price_file, tmp_path / "run").features
    assert feature_calls == [1], "fresh: read from the folder"
    pd.testing.assert_frame_equal(first, again)


def test_a_changed_section_remakes_exactly_the_artifacts_that_read_it(price_file, tmp_path, feature_calls):
    run_dir = tmp_path / "run"
    folder = folder_for(price_file, run_dir)
    folder.features
    prices_key = folder.provenance("prices")["config_key"]
    # ml is read by signals, views and weights; not by prices or features
    other = folder_for(price_file, run_dir, "ml.horizon_days=5")
    assert other.is_fresh("prices") and other.is_fresh("features")
    other.features
    assert feature_calls == [1]
    # features is read by the prices (the VIX is loaded for it) and the features
    wider = folder_for(price_file, run_dir, "features.names=[ret_5d, ret_21d]")
    assert not wider.is_fresh("prices") and not wider.is_fresh("features")
    wider.features
    assert feature_calls == [1, 1] and wider.provenance("prices")["config_key"] != prices_key
    reads_ml = {n for n, spec in ARTIFACTS.items()
                if any(s.split(".")[0] == "ml" for s in stage_sections(spec.notebook, folder.config))}
    assert reads_ml == {"signals", "views"}, "the weights depend on ml through the signals they read"


def test_provenance_names_the_key_the_sections_and_the_inputs(price_file, tmp_path):
    folder = folder_for(price_file, tmp_path / "run")
    folder.features
    made = folder.provenance("features")
    assert made == {"artifact": "features", "file": "features.parquet",
                    "config_key": artifact_key(folder.config, "features"), "sections": ["data.benchmark", "data.symbols", "data.calendar", "data.markets", "features"],
                    "upstream": ["prices"], "inputs": {"prices.parquet": file_sha256(tmp_path / "run" / "prices.parquet")},
                    "fresh": True}
    weights = folder.provenance("weights")
    assert weights["upstream"] == ["prices", "signals", "views"] and weights["config_key"] is None
    assert not weights["fresh"] and "backtest" not in weights["sections"], "no circuit breaker: no backtest in 05"
    breaker = folder_for(price_file, tmp_path / "run", "portfolio.circuit_breaker={max_drawdown: 0.2, cooldown_days: 5}")
    assert "backtest" in breaker.provenance("weights")["sections"]


def test_a_folder_with_invalid_parameters_fails_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inherits: " + str(REPO / "params" / "smoke.yaml") + "\nml:\n  horizon_dayz: 5\n")
    with pytest.raises(ConfigError, match="horizon_dayz"):
        RunFolder.open(bad, tmp_path / "run").prices
    with pytest.raises(ConfigError, match="needs validated parameters"):
        RunFolder({"scenario": "x"}, tmp_path / "run")


def test_a_half_written_artifact_is_never_read_as_fresh(price_file, tmp_path, feature_calls):
    run_dir = tmp_path / "run"
    folder_for(price_file, run_dir).features
    record = (run_dir / "features.json")
    # a crash between the new file and its record: the record was removed first
    record.unlink()
    (run_dir / "features.parquet").write_bytes(b"PAR1 half")
    fresh = folder_for(price_file, run_dir)
    assert not fresh.is_fresh("features")
    fresh.features
    assert feature_calls == [1, 1] and fresh.is_fresh("features")
    # a parquet whose record names other inputs or another key is not fresh either
    record.write_text('{"config_key": "0000000000000000", "rows": 1, "inputs": {}}')
    assert not folder_for(price_file, run_dir).is_fresh("features")


def test_a_price_file_edited_while_a_folder_is_open_never_leaves_stale_artifacts_fresh(price_file, tmp_path):
    """What a folder read before the edit is saved under the key it was read with: a folder opened
    after the edit remakes it from the new prices (as a Lab user re-running a cell expects)."""
    run_dir = tmp_path / "run"
    folder = folder_for(price_file, run_dir)
    folder.prices
    edited = pd.read_csv(price_file, index_col="date")
    edited["AAA"] *= 1.5
    edited.to_csv(price_file)
    folder.features  # made from the prices this folder read, before the edit
    later = folder_for(price_file, run_dir)
    assert not later.is_fresh("prices") and not later.is_fresh("features")
    assert later.prices["close"]["AAA"].iloc[-1] == pytest.approx(11 * 1.5)
    later.features
    assert later.is_fresh("features") and later.provenance("features")["config_key"] == later.key("features")
    assert folder.key("prices") != later.key("prices"), "keys are taken with the file as it was when each folder was made"
    # the features read the file only through the prices: their record names the prices' hash
    assert later.provenance("features")["inputs"] == {"prices.parquet": file_sha256(run_dir / "prices.parquet")}


def test_unknown_names_and_a_run_dir_that_is_a_file_are_refused_with_the_fix(price_file, tmp_path):
    folder = folder_for(price_file, tmp_path / "run")
    for call in (lambda: folder.get("weight"), lambda: folder.key("weight"), lambda: folder.provenance("weight"),
                 lambda: folder.save("weight", pd.DataFrame())):
        with pytest.raises(ConfigError, match=r"'weight' is not an artifact of a run folder; known: .*Did you mean 'weights'"):
            call()
    with pytest.raises(ConfigError, match=r"'mll' is not a report .*Did you mean 'ml'"):
        folder.report("mll")
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    for run_dir in (a_file, None):
        with pytest.raises(ConfigError, match="is not a folder"):
            RunFolder(folder.config, run_dir)


def test_a_backtest_a_notebook_adds_is_a_trial_of_its_strategy_section(price_file, tmp_path):
    from research_lib.backtest import run_backtest
    from research_lib.stages import run_trials
    from research_lib.stages.strategies import strategy

    folder = folder_for(price_file, tmp_path / "run")
    close = folder.prices["close"][["AAA", "BBB"]]
    mine = pd.DataFrame(0.5, index=close.index[[5, 15]], columns=close.columns)
    trials = run_trials(folder, {"mine": run_backtest(mine, folder.prices, **folder.config.backtest_model())})
    params, returns = trials["mine"]
    assert params["strategy"]["name"] == "mine" and set(params) == {"data", "backtest", "strategy"}
    assert len(returns) > 0
    with pytest.raises(ValueError, match=r"strategy 'momentum' is not in the table; known: .*Did you mean"):
        strategy("momentum")


def test_a_producer_set_before_its_stage_loads_is_kept(price_file, tmp_path, monkeypatch):
    """`produces` is public: a producer registered by a user (or a test) is not replaced when the
    stage that normally makes the artifact is imported later."""
    import importlib

    from research_lib.stages import folder as folder_module

    monkeypatch.setattr(folder_module, "_PRODUCERS", {})
    monkeypatch.setattr(folder_module, "_READERS", {})
    made = pd.DataFrame({"x": [1.0]})

    @folder_module.produces("features")
    def mine(folder):
        return folder.save("features", made)

    importlib.reload(features_stage)  # the stage loading after ours, as on first use in a fresh kernel
    assert folder_module._PRODUCERS["features"] is mine
    pd.testing.assert_frame_equal(folder_for(price_file, tmp_path / "run").features, made)


def test_a_registry_emptied_under_a_loaded_stage_is_a_clear_error(price_file, tmp_path, monkeypatch):
    """As after reloading the folder module in a live kernel: the stage module stays cached."""
    from research_lib.stages import folder as folder_module
    from research_lib.stages import features  # noqa: F401  (loaded, so nothing registers it again)

    monkeypatch.setattr(folder_module, "_PRODUCERS", {})
    with pytest.raises(ConfigError, match=r"no stage is registered to make 'features' .*restart the kernel"):
        folder_for(price_file, tmp_path / "run").features


# ---------------------------------------------------------------- a folder opened alone reuses complete runs


def recorded_run(price_file, name: str, status: str = "succeeded", created_at: str = "2026-01-01") -> Path:
    """A run under reports/runs with prices and features, and a manifest recording them as the pipeline does."""
    from research_lib import paths
    from research_lib.stages import reuse

    run_dir = paths.reports_dir() / "runs" / name
    folder_for(price_file, run_dir).features
    sha = {f.name: file_sha256(f, cached=False) for f in run_dir.iterdir()}
    stages = [{"name": "01_load_data", "status": "succeeded", "key": "k1", "external": reuse.external_state("01_load_data", run_dir),
               "outputs": {f: sha[f] for f in ("prices.parquet", "prices.json")}},
              {"name": "02_build_features", "status": "succeeded", "key": "k2",
               "outputs": {f: sha[f] for f in ("features.parquet", "features.json")}}]
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": name, "status": status, "created_at": created_at,
                                                       "stages": stages}))
    return run_dir


def test_a_folder_alone_takes_the_latest_complete_intact_run_says_what_it_skipped_and_copies(
        price_file, tmp_path, feature_calls, capsys):
    good = recorded_run(price_file, "a-good-run", created_at="2026-01-01")
    recorded_run(price_file, "b-failed-run", status="failed", created_at="2026-01-02")
    edited = recorded_run(price_file, "c-edited-run", created_at="2026-01-03")
    pd.DataFrame({"x": [1.0]}).to_parquet(edited / "features.parquet")  # changed after its run recorded it
    capsys.readouterr()
    lab = folder_for(price_file, tmp_path / "lab")
    lab.features
    assert capsys.readouterr().out.splitlines() == [
        "skipped run c-edited-run: features.parquet changed since it was recorded",
        "skipped run b-failed-run: it did not complete (failed)",
        "prices, features: reused from run a-good-run"]
    assert feature_calls == [1], "made once: the other runs and the lab took it"
    # the lab is a sandbox: a plain in-place write there never reaches the run's history
    recorded = file_sha256(good / "features.parquet", cached=False)
    pd.DataFrame({"x": [2.0]}).to_parquet(lab.path("features"))
    assert file_sha256(good / "features.parquet", cached=False) == recorded


def test_a_folder_alone_skips_prices_whose_snapshot_changed(price_file, tmp_path, capsys):
    run_dir = recorded_run(price_file, "a-run")
    snapshot = Path(json.loads((run_dir / "prices.json").read_text())["snapshot"])
    snapshot.unlink()  # the cache was cleared: the file is read again
    capsys.readouterr()
    lab = folder_for(price_file, tmp_path / "lab")
    lab.prices
    assert capsys.readouterr().out.splitlines()[0] == f"skipped run a-run: {snapshot} changed since it was recorded"
    assert lab.is_fresh("prices") and snapshot.is_file()
