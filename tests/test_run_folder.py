"""RunFolder: a fresh artifact is read, a changed section remakes exactly what reads it, every
artifact says where it came from, bad parameters fail clearly, half-written files are never fresh.

Small synthetic prices from a user's file (two symbols, 30 sessions) keep these fast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research_lib.config import load_config
from research_lib.errors import ConfigError
from research_lib.stages import ARTIFACTS, RunFolder, config_key
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
    assert {n for n, spec in ARTIFACTS.items() if "ml" in spec.sections} == {"signals", "views", "weights"}


def test_provenance_names_the_key_the_sections_and_the_inputs(price_file, tmp_path):
    folder = folder_for(price_file, tmp_path / "run")
    folder.features
    made = folder.provenance("features")
    assert made == {"artifact": "features", "file": "features.parquet",
                    "config_key": config_key(folder.config, ("data", "features")), "sections": ["data", "features"],
                    "upstream": [], "inputs": {}, "fresh": True}
    weights = folder.provenance("weights")
    assert weights["upstream"] == ["prices", "signals", "views"] and weights["config_key"] is None
    assert not weights["fresh"] and "backtest" in weights["sections"]


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
