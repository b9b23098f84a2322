"""Incremental runs: a stage is reused exactly when the parameters, upstream artifacts, code and
external state it reads are unchanged and its earlier outputs are intact; a notebook run alone
reuses the latest run's artifacts by the same keys.

Most tests run the real pipeline (keys, manifest, linking, CLI lines) over six stand-in notebooks
whose execution is replaced by writing one output file whose bytes follow the stage's key (as a
real stage's outputs follow its inputs). One module-scoped workspace runs the smoke chain for
real twice.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from research_lib import paths, pipeline
from research_lib.pipeline import load_manifest, run_pipeline
from research_lib.stages import keys
from tests.conftest import REPO, link_params

SMOKE = REPO / "params" / "smoke.yaml"
CHAIN = {  # stand-in notebooks: what each imports decides the code its key covers
    "01_load_data": "from research_lib.stages import RunFolder",
    "02_build_features": "from research_lib.stages import RunFolder",
    "03_fit_ml_signals": "from research_lib.stages import RunFolder, fit_ml_signals",
    "04_ask_claude": "from research_lib.stages import RunFolder, fit_llm_signals",
    "05_build_portfolio": "from research_lib.stages import RunFolder, build_weights",
    "06_validate_strategy": "from research_lib.stages import RunFolder, validate_strategy",
}
STAGES = list(CHAIN)
SALT: dict[str, str] = {}  # extra bytes a stand-in stage writes: new data from a source, for instance


def write_notebook(path: Path, source: str) -> None:
    cell = {"cell_type": "code", "source": source, "metadata": {}, "outputs": [], "execution_count": None}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def stand_in_execute(notebook: Path, run_dir: Path, config_path: Path, cwd: Path, progress_bar=False) -> None:
    """Write the stage's executed notebook and one output whose bytes follow the stage's key."""
    stage = next(s for s in load_manifest(run_dir)["stages"] if s["name"] == notebook.stem)
    shutil.copy(notebook, run_dir / notebook.name)
    (run_dir / f"{notebook.stem}.out").write_text(f"{notebook.stem} {stage['key']} {SALT.get(notebook.stem, '')}")
    if notebook.stem == "01_load_data":  # the prices' record names the snapshot they were read from
        snapshot = paths.data_dir() / "snapshots" / "bundled-x.parquet"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(snapshot.read_text() if snapshot.is_file() else "prices")
        (run_dir / "prices.json").write_text(json.dumps({"snapshot": str(snapshot)}))
    return None


@pytest.fixture
def chain(workspace, tmp_path, monkeypatch):
    """Stand-in notebooks in a scratch workspace; returns ``run(*overrides, fresh=False)`` giving
    ``(statuses by stage, manifest, CLI lines)``."""
    notebooks = tmp_path / "chain"
    notebooks.mkdir()
    for stem, source in CHAIN.items():
        write_notebook(notebooks / f"{stem}.ipynb", source)
    monkeypatch.setattr(pipeline, "_execute", stand_in_execute)
    monkeypatch.setattr(pipeline, "to_html", lambda executed: None)
    monkeypatch.setattr(pipeline, "_rebuild_index", lambda: None)
    SALT.clear()

    def run(*overrides: str, fresh: bool = False, stages=None):
        lines: list[str] = []
        run_dir = run_pipeline(SMOKE, list(overrides), stages, notebooks_dir=notebooks, echo=lines.append, fresh=fresh)
        manifest = load_manifest(run_dir)
        return {s["name"]: s["status"] for s in manifest["stages"]}, manifest, lines

    run.notebooks = notebooks
    yield run
    SALT.clear()


def statuses(*reused: str) -> dict[str, str]:
    return {s: ("reused" if s in reused else "succeeded") for s in STAGES}


def test_an_unchanged_rerun_reuses_every_stage_by_hard_links_and_fresh_recomputes_all(chain):
    first, run1, _ = chain()
    assert first == statuses()
    assert all(set(s["outputs"]) - {"prices.json"} == {f"{s['name']}.ipynb", f"{s['name']}.out"} for s in run1["stages"])
    again, run2, lines = chain()
    assert again == statuses(*STAGES)
    assert "[3/6] 03_fit_ml_signals reused from " + run1["run_id"] in lines
    assert all(s["reused_from"] == run1["run_id"] and s["outputs"] == t["outputs"]
               for s, t in zip(run2["stages"], run1["stages"]))
    old, new = (paths.reports_dir() / "runs" / m["run_id"] / "03_fit_ml_signals.out" for m in (run1, run2))
    assert os.stat(old).st_ino == os.stat(new).st_ino, "a hard link, not a copy"
    fresh, run3, _ = chain(fresh=True)
    assert fresh == statuses() and run3["fresh"]


@pytest.mark.parametrize("override, first_recomputed", [
    ("data.max_stale_sessions=11", "01_load_data"),
    ("features.garch_refit_days=63", "02_build_features"),  # 01 reads only features.names and vix_symbol
    ("ml.min_train_days=600", "03_fit_ml_signals"),
    ("llm.max_tokens=1000", "04_ask_claude"),
    ("risk.max_weight=0.25", "05_build_portfolio"),
    ("backtest.cost_bps=20", "06_validate_strategy"),  # 05 runs no backtest without a circuit breaker
    ("paper.min_trade_value=50", "06_validate_strategy"),  # 06 writes every parameter into validation.json
])
def test_a_changed_parameter_recomputes_its_stage_and_everything_downstream_and_nothing_upstream(
        chain, override, first_recomputed):
    chain()
    changed, _, _ = chain(override)
    assert changed == statuses(*STAGES[:STAGES.index(first_recomputed)])


def test_with_a_circuit_breaker_the_portfolio_stage_reads_the_backtest_costs(chain):
    breaker = "portfolio.circuit_breaker={max_drawdown: 0.2, cooldown_days: 5}"
    chain(breaker)
    changed, _, _ = chain(breaker, "backtest.cost_bps=20")
    assert changed == statuses(*STAGES[:4])


def test_changed_code_recomputes_the_stages_that_run_it(chain, monkeypatch):
    chain()
    real = keys.file_sha256
    monkeypatch.setattr(keys, "file_sha256", lambda path, cached=True: (
        "edited" if Path(path).as_posix().endswith("research_lib/stages/ml.py") else real(path, cached)))
    edited, _, _ = chain()
    assert edited == statuses("01_load_data", "02_build_features"), "stages/ml.py runs in 03 (and 04 reads 03)"
    monkeypatch.setattr(keys, "file_sha256", real)
    write_notebook(chain.notebooks / "05_build_portfolio.ipynb", CHAIN["05_build_portfolio"] + "\nprint('edited')")
    notebook_edited, _, _ = chain()
    assert notebook_edited == statuses(*STAGES[:4])


def test_an_upstream_artifact_with_new_bytes_recomputes_what_reads_it(chain):
    """data.refresh re-fetches the prices every run: same bytes, the rest is reused; new bytes
    (the source published new data), everything downstream is recomputed."""
    chain("data.refresh=true")
    same, _, lines = chain("data.refresh=true")
    assert same == statuses(*STAGES[1:]) and any("01_load_data ... recomputed: data.refresh" in x for x in lines)
    SALT["01_load_data"] = "a new session"
    new_data, _, _ = chain("data.refresh=true")
    assert new_data == statuses()


def test_a_snapshot_changed_since_the_prices_were_loaded_reloads_them(chain):
    chain()
    (paths.data_dir() / "snapshots" / "bundled-x.parquet").write_text("edited by hand")
    again, _, lines = chain()
    assert again == statuses(*STAGES[1:]), "the same prices.json: what reads it is reused"
    assert any("[1/6] 01_load_data ... recomputed: " in x and "bundled-x.parquet changed since run" in x for x in lines)


def test_a_corrupted_output_is_detected_by_its_hash_and_its_stage_recomputed(chain):
    _, run1, _ = chain()
    corrupted = paths.reports_dir() / "runs" / run1["run_id"] / "04_ask_claude.out"
    corrupted.write_text("bit rot")
    again, run2, lines = chain()
    assert again == statuses(*(s for s in STAGES if s != "04_ask_claude")), "its recomputed bytes match: 05, 06 reused"
    assert (f"[4/6] 04_ask_claude ... recomputed: 04_ask_claude.out of run {run1['run_id']} does not match its "
            "recorded sha256") in lines
    assert (paths.reports_dir() / "runs" / run2["run_id"] / "04_ask_claude.out").read_text().startswith("04_ask_claude ")


def test_a_trial_recorded_in_between_recomputes_validation(chain):
    from research_lib.validation.registry import record_trials

    chain()
    returns = pd.Series([0.01, -0.02, 0.015, 0.003], index=pd.bdate_range("2020-01-01", periods=4))
    record_trials(paths.state_db(), "a-sweep", "sweep", {"rsi_14_30_70": ({"window": 14}, returns)})
    again, _, lines = chain()
    assert again == statuses(*STAGES[:5])
    assert any("06_validate_strategy ... recomputed: the trial registry changed" in x for x in lines)
    unchanged, _, _ = chain()
    assert unchanged == statuses(*STAGES), "the registry as 06 left it: reused"


def test_a_chain_that_skips_stages_reuses_nothing(chain):
    chain()
    partial, _, _ = chain(stages=["06"])
    assert partial == {"06_validate_strategy": "succeeded"}


# ---------------------------------------------------------------- the real smoke chain, twice


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """A full smoke run, then the same parameters again after one of its outputs was corrupted, then
    once more with nothing changed."""
    home = tmp_path_factory.mktemp("reuse-home")
    link_params(home)
    (home / "notebooks").symlink_to(REPO / "notebooks")
    before = os.environ["SPARTAN_HOME"]
    os.environ["SPARTAN_HOME"] = str(home)
    try:
        first = run_pipeline(home / "params" / "smoke.yaml", echo=lambda line: None)
        metrics = (first / "metrics.json").read_bytes()
        (first / "metrics.json").write_text("{}")  # corrupted after its run recorded it
        lines: list[str] = []
        second = run_pipeline(home / "params" / "smoke.yaml", echo=lines.append)
        third = run_pipeline(home / "params" / "smoke.yaml", echo=lambda line: None)  # nothing changed: all reused
        yield {"home": home, "first": first, "second": second, "third": third, "metrics": metrics, "lines": lines}
    finally:
        os.environ["SPARTAN_HOME"] = before


@pytest.mark.notebook
def test_a_real_rerun_reuses_the_chain_and_recomputes_a_corrupted_stage(smoke_runs):
    first, second = load_manifest(smoke_runs["first"]), load_manifest(smoke_runs["second"])
    assert [s["status"] for s in second["stages"]] == ["reused"] * 5 + ["succeeded"]
    assert any(line.startswith("[6/6] 06_validate_strategy ... recomputed: metrics.json of run") for line in smoke_runs["lines"])
    assert (smoke_runs["second"] / "metrics.json").read_bytes() == smoke_runs["metrics"], "the same numbers"
    assert second["data"] == first["data"] and second["ml"] == first["ml"] and second["llm"] == first["llm"]
    for stage in second["stages"][:5]:
        assert stage["reused_from"] == first["run_id"] and {f"{stage['name']}.ipynb", f"{stage['name']}.html"} <= set(stage["outputs"])
        for name in stage["outputs"]:
            assert (smoke_runs["second"] / name).stat().st_ino == (smoke_runs["first"] / name).stat().st_ino


@pytest.mark.notebook
def test_a_run_whose_validation_was_reused_can_be_promoted(smoke_runs, tmp_path):
    from research_lib.validation.promotion import promote

    third = load_manifest(smoke_runs["third"])
    assert [s["status"] for s in third["stages"]] == ["reused"] * 6
    assert third["stages"][5]["computed_in"] == smoke_runs["second"].name
    promoted = promote(smoke_runs["third"], override_reason="test: a reused validation is the run's own",
                       promoted_dir=tmp_path)
    assert promoted.is_file()


@pytest.mark.notebook
def test_a_notebook_run_alone_reuses_the_latest_run_and_says_which(smoke_runs, monkeypatch, capsys):
    from research_lib.stages import RunFolder

    monkeypatch.setenv("SPARTAN_HOME", str(smoke_runs["home"]))
    lab = smoke_runs["home"] / "reports" / "lab"
    folder = RunFolder.open(smoke_runs["home"] / "params" / "smoke.yaml", lab)
    weights = folder.weights
    latest = smoke_runs["third"].name
    assert capsys.readouterr().out == f"prices, features, signals, views, weights: reused from run {latest}\n"
    pd.testing.assert_frame_equal(weights, pd.read_parquet(smoke_runs["second"] / "weights.parquet"))
    assert all(folder.is_fresh(name) for name in ("prices", "features", "signals", "views", "weights"))
    assert (lab / "llm_report.json").is_file() and (lab / "portfolio_report.json").is_file()
    folder.prices, folder.report("ml")
    assert capsys.readouterr().out == "", "said once"
    other = RunFolder.open(smoke_runs["home"] / "params" / "smoke.yaml", smoke_runs["home"] / "reports" / "lab2")
    monkeypatch.setenv("SPARTAN_REUSE", "0")
    assert not other.is_fresh("prices")
