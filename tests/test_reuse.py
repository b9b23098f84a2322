"""Incremental runs: a stage is reused exactly when the parameters, upstream artifacts, code and
external state it reads are unchanged and its earlier outputs are intact; a notebook run alone
reuses the latest run's artifacts by the same keys.

Most tests run the real pipeline (keys, manifest, linking, CLI lines) over six stand-in notebooks
whose execution is replaced by writing the files the real stage writes, with bytes that follow the
stage's key (as a real stage's outputs follow its inputs). One module-scoped workspace runs the
smoke chain for real three times.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest import mock

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
WRITES = {  # what each real stage writes besides its executed notebook (its artifacts, records, report)
    "01_load_data": ["prices.parquet", "prices.json"],
    "02_build_features": ["features.parquet", "features.json"],
    "03_fit_ml_signals": ["signals_ml.parquet", "signals_ml.json", "ml_report.json"],
    "04_ask_claude": ["signals_llm.parquet", "signals_llm.json", "llm_report.json"],
    "05_build_portfolio": ["weights.parquet", "weights.json", "portfolio_report.json"],
    "06_validate_strategy": ["metrics.json", "validation.json"],
}
DURING_06: list = []  # what happens in the workspace while a stand-in 06 runs (a concurrent run's trials)


def write_notebook(path: Path, source: str) -> None:
    cell = {"cell_type": "code", "source": source, "metadata": {}, "outputs": [], "execution_count": None}
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def stand_in_execute(notebook: Path, run_dir: Path, config_path: Path, cwd: Path, progress_bar=False) -> None:
    """Write the stage's executed notebook and its files, whose bytes follow the stage's key; 01
    leaves prices already in the folder alone (the real stage finds them fresh); 06 records a trial
    in the registry under its run id, as the real one does."""
    stage = next(s for s in load_manifest(run_dir)["stages"] if s["name"] == notebook.stem)
    shutil.copy(notebook, run_dir / notebook.name)
    if notebook.stem == "01_load_data" and (run_dir / "prices.parquet").is_file():
        return None
    for name in WRITES[notebook.stem]:
        (run_dir / name).write_text(json.dumps({"stand_in": f"{name} {stage['key']} {SALT.get(notebook.stem, '')}"}))
    if notebook.stem == "01_load_data":  # the prices' record names the snapshot they were read from
        snapshot = paths.data_dir() / "snapshots" / "bundled-x.parquet"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(snapshot.read_text() if snapshot.is_file() else "prices")
        (run_dir / "prices.json").write_text(json.dumps({"snapshot": str(snapshot)}))
    if notebook.stem == "06_validate_strategy":
        for happening in DURING_06:
            happening()
        record_trial(run_dir.name, "momentum")
    return None


def record_trial(run_id: str, name: str) -> None:
    from research_lib.validation.registry import record_trials

    returns = pd.Series([0.01, -0.02, 0.015, 0.003], index=pd.bdate_range("2020-01-01", periods=4))
    record_trials(paths.state_db(), run_id, "research", {name: ({"name": name}, returns)})


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
    for headline in ("_ml_headline", "_gate_headline"):  # the stand-ins' reports hold no numbers
        monkeypatch.setattr(pipeline, headline, lambda report: None)
    SALT.clear()
    DURING_06.clear()

    def run(*overrides: str, fresh: bool = False, stages=None, run_dir=None):
        lines: list[str] = []
        run_dir = run_pipeline(SMOKE, list(overrides), stages, run_dir, notebooks_dir=notebooks, echo=lines.append,
                               fresh=fresh)
        manifest = load_manifest(run_dir)
        return {s["name"]: s["status"] for s in manifest["stages"]}, manifest, lines

    run.notebooks = notebooks
    yield run
    SALT.clear()
    DURING_06.clear()


def statuses(*reused: str) -> dict[str, str]:
    return {s: ("reused" if s in reused else "succeeded") for s in STAGES}


def test_an_unchanged_rerun_reuses_every_stage_by_copies_and_fresh_recomputes_all(chain):
    first, run1, _ = chain()
    assert first == statuses()
    assert all(set(s["outputs"]) == {f"{s['name']}.ipynb", *WRITES[s["name"]]} for s in run1["stages"])
    again, run2, lines = chain()
    assert again == statuses(*STAGES)
    assert "[3/6] 03_fit_ml_signals reused from " + run1["run_id"] in lines
    assert all(s["reused_from"] == run1["run_id"] and s["outputs"] == t["outputs"]
               for s, t in zip(run2["stages"], run1["stages"]))
    old, new = (paths.reports_dir() / "runs" / m["run_id"] / "signals_ml.parquet" for m in (run1, run2))
    assert old.read_bytes() == new.read_bytes() and os.stat(old).st_ino != os.stat(new).st_ino, "a copy, not a link"
    new.write_text("written in place by a user's notebook")
    assert "stand_in" in old.read_text(), "an earlier run's file never changes with a later run's"
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
    worked = "backtest.impact_from_execution=true"  # then the backtest charges the execution algorithm's impact
    chain(breaker, "backtest.cost_bps=20", worked)
    changed, _, _ = chain(breaker, "backtest.cost_bps=20", worked, "execution.algorithm=twap")
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
    corrupted = paths.reports_dir() / "runs" / run1["run_id"] / "signals_llm.parquet"
    corrupted.write_text("bit rot")
    again, run2, lines = chain()
    assert again == statuses(*(s for s in STAGES if s != "04_ask_claude")), "its recomputed bytes match: 05, 06 reused"
    assert (f"[4/6] 04_ask_claude ... recomputed: signals_llm.parquet of run {run1['run_id']} does not match its "
            "recorded sha256") in lines
    assert (paths.reports_dir() / "runs" / run2["run_id"] / "signals_llm.parquet").read_text().startswith('{"stand_in": "signals_llm')


def test_a_trial_recorded_in_between_recomputes_validation(chain):
    chain()
    record_trial("a-sweep", "rsi_14_30_70")
    again, _, lines = chain()
    assert again == statuses(*STAGES[:5])
    assert any("06_validate_strategy ... recomputed: the trial registry changed" in x for x in lines)
    unchanged, _, _ = chain()
    assert unchanged == statuses(*STAGES), "the registry as 06 left it: reused"


def test_a_chain_that_skips_stages_reuses_nothing(chain):
    chain()
    partial, _, _ = chain(stages=["06"])
    assert partial == {"06_validate_strategy": "succeeded"}


def test_a_stage_is_keyed_on_the_files_it_reads_and_reused_only_with_every_file_it_makes(chain):
    """A folder that already holds prices: 01 writes none, yet what reads them is keyed on their
    bytes; an entry that did not record a file its stage makes is never reused."""
    mine, yours = (paths.reports_dir() / "runs" / name for name in ("mine", "yours"))
    for folder, symbols in ((mine, "AAA"), (yours, "BBB")):
        folder.mkdir(parents=True)
        (folder / "prices.parquet").write_text(f"prices of {symbols}")
        (folder / "prices.json").write_text("{}")
    _, run1, _ = chain(run_dir=mine)
    assert "prices.parquet" in run1["stages"][0]["outputs"], "found fresh in the folder: still its output"
    other, _, _ = chain("data.symbols=[BBB, SPY]", run_dir=yours)
    assert other == statuses(), "other prices bytes: 02 onwards recomputed"
    manifest = mine / "manifest.json"
    record = json.loads(manifest.read_text())
    del record["stages"][0]["outputs"]["prices.parquet"]  # as an older run that recorded only its notebook
    record["created_at"] = "9999"  # the newest run
    manifest.write_text(json.dumps(record))
    again, run3, lines = chain()
    assert lines[1] == "[1/6] 01_load_data ... recomputed: run mine did not record prices.parquet", lines[:3]
    assert again == statuses(), "prices loaded now: what reads them runs on them"
    assert (paths.reports_dir() / "runs" / run3["run_id"] / "prices.parquet").is_file()


def test_the_analyst_the_environment_chooses_keys_the_views(chain):
    from research_lib.llm import API_KEY_ENV

    # The run loads .env into this process's environment: restore all of it afterwards (monkeypatch.delenv
    # of an absent variable records nothing to restore, and a leaked key would send later runs to Claude).
    with mock.patch.dict(os.environ):
        os.environ.pop(API_KEY_ENV, None)
        chain("llm.provider=auto")
        (paths.workspace_root() / ".env").write_text(f"{API_KEY_ENV}=sk-canary-not-a-key\n")
        with_key, run2, _ = chain("llm.provider=auto")
        assert with_key == statuses(*STAGES[:3]), "auto with a key is Claude: 04 and what reads it run again"
        assert "sk-canary" not in json.dumps(run2)
        offline, _, _ = chain("llm.provider=offline")
        assert offline["04_ask_claude"] == "succeeded"
    assert API_KEY_ENV not in os.environ


def test_news_headlines_are_never_reused(chain):
    chain("llm.headlines=alpaca")
    again, _, lines = chain("llm.headlines=alpaca")
    assert again == statuses(*(s for s in STAGES if s != "04_ask_claude")), "the same views: what reads them is reused"
    assert "[4/6] 04_ask_claude ... recomputed: llm.headlines: alpaca reads the news as it is now" in lines


def test_loosened_gate_thresholds_recompute_the_validation(chain):
    chain()
    thresholds = paths.workspace_root() / "params" / "promotion.yaml"
    text = thresholds.read_text() if thresholds.is_file() else ""
    thresholds.unlink(missing_ok=True)  # the repository's file is linked: replace the link, never write through it
    thresholds.write_text(text + "\n# loosened\n")
    again, _, _ = chain()
    assert again == statuses(*STAGES[:5])


def test_a_relative_price_file_is_read_where_the_kernels_run(chain, monkeypatch, tmp_path):
    file_params = ["data.source=file", "data.path=mine.csv", "data.start=null", "data.end=null", "data.symbols=null"]
    (chain.notebooks / "mine.csv").write_text("date,AAA\n2021-01-04,10\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    chain(*file_params)
    (chain.notebooks / "mine.csv").write_text("date,AAA\n2021-01-04,11\n")
    edited, _, _ = chain(*file_params)
    assert edited["01_load_data"] == "succeeded"


def test_trials_a_concurrent_run_recorded_while_validation_ran_recompute_it(chain):
    DURING_06.append(lambda: record_trial("a-concurrent-run", "its_trial"))
    chain()
    DURING_06.clear()
    again, _, lines = chain()
    assert again == statuses(*STAGES[:5]) and any("recomputed: the trial registry changed" in x for x in lines)
    unchanged, _, _ = chain()
    assert unchanged == statuses(*STAGES), "its own trials were known already: the registry is as it read it"


def test_a_stage_a_user_added_is_recomputed_when_a_file_before_it_changed(chain, monkeypatch):
    # the user's notebook reads 06's validation.json, which no library artifact names
    write_notebook(chain.notebooks / "08_gate_note.ipynb", "from research_lib.stages import RunFolder")
    monkeypatch.setitem(WRITES, "08_gate_note", ["gate_note.json"])
    DURING_06.append(lambda: record_trial("a-concurrent-run", "its_trial"))
    chain()
    DURING_06.clear()
    SALT["06_validate_strategy"] = "judged with one more trial"  # 06 runs again and writes other numbers
    again, _, _ = chain()
    assert (again["06_validate_strategy"], again["08_gate_note"]) == ("succeeded", "succeeded")
    unchanged, _, _ = chain()
    assert set(unchanged.values()) == {"reused"}


def test_a_mistyped_sweep_id_is_refused_before_any_stage_runs(chain):
    from research_lib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"validation.sweep: no sweep 'sweep-nope' in the registry .*list_sweeps"):
        chain("validation.sweep=sweep-nope")
    runs = paths.reports_dir() / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "nothing ran, nothing was written"


def test_the_cell_bar_goes_to_a_terminal_only(monkeypatch):
    import io

    monkeypatch.setattr("sys.stderr", io.StringIO())  # `spartan run > log 2>&1`
    assert pipeline._progress_bar("03_fit_ml_signals") is False


def test_speed_only_settings_are_not_keyed_and_spartan_reuse_0_recomputes(chain, monkeypatch):
    chain()
    faster, _, _ = chain("features.n_jobs=1")
    assert faster == statuses(*STAGES)
    monkeypatch.setenv("SPARTAN_REUSE", "0")
    off, run3, _ = chain()
    assert off == statuses() and run3["fresh"]


@pytest.mark.parametrize("content", ["[1]", '{"created_at": 5}', '{"stages": null}', '{"stages": [1]}'])
def test_a_malformed_manifest_is_skipped_with_a_warning_naming_it(chain, caplog, content):
    chain()
    broken = paths.reports_dir() / "runs" / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(content)
    again, _, _ = chain()
    assert again == statuses(*STAGES)
    assert any(str(broken / "manifest.json") in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


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
            assert (smoke_runs["second"] / name).read_bytes() == (smoke_runs["first"] / name).read_bytes()


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
