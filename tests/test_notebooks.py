"""Notebooks: paired with jupytext, stored without outputs, thin, and each runnable alone."""

from __future__ import annotations

import ast

import jupytext
import nbformat
import papermill as pm
import pytest

from research_lib.pipeline import discover_stages
from tests.conftest import REPO

STAGES = discover_stages(REPO / "notebooks")  # the research chain
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))  # the chain, 00_explore and 07_paper_trade
IDS = [p.stem for p in NOTEBOOKS]


def cells(notebook):
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_ipynb_and_percent_py_are_in_sync(path):
    paired = path.with_suffix(".py")
    assert paired.is_file(), f"{path.name} has no jupytext pair; run `jupytext --set-formats ipynb,py:percent {path}`"
    assert cells(nbformat.read(path, as_version=4)) == cells(jupytext.read(paired)), (
        f"{path.name} and {paired.name} drifted; run `jupytext --sync notebooks/*.ipynb`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_without_outputs_and_with_a_literal_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), "strip outputs before committing"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for statement in ast.parse(tagged[0].source).body:
        assert isinstance(statement, ast.AnnAssign) and isinstance(statement.value, ast.Constant), (
            f"parameters cell of {path.name} must hold typed literals only: {ast.unparse(statement)}")
        assert "key" not in statement.target.id.lower() and "secret" not in statement.target.id.lower()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_code_cells_stay_thin(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        statements = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))]
        assert len(statements) <= 6, f"{path.name}: a cell of more than six statements:\n{cell.source}"
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While)) for n in ast.walk(tree)), (
            f"{path.name}: loops and functions belong in research_lib:\n{cell.source}")


def test_the_exploration_and_paper_trading_notebooks_are_not_research_stages():
    assert [p.name for p in NOTEBOOKS if p not in STAGES] == ["00_explore.ipynb", "07_paper_trade.ipynb"]


# Only the first two stages run alone here, on the smoke scenario: nbval runs every notebook's cells on
# its shipped parameters (`make test` collects notebooks/), and how a folder computes or reuses what is
# missing is `RunFolder`'s, tested in test_run_folder.py (the other four took a minute of the suite).
ALONE = [p for p in STAGES if p.stem in ("01_load_data", "02_build_features")]


@pytest.mark.notebook
@pytest.mark.parametrize("path", ALONE, ids=[p.stem for p in ALONE])
def test_each_notebook_runs_alone_in_a_fresh_run_dir(path, workspace, tmp_path):
    """No upstream artifacts: the library computes what is missing (06 loads its own prices)."""
    run_dir = tmp_path / "run"
    pm.execute_notebook(str(path), str(tmp_path / path.name), kernel_name="python3", cwd=str(path.parent),
                        parameters={"config_path": str(REPO / "params" / "smoke.yaml"), "run_dir": str(run_dir)},
                        progress_bar=False)
    expected = {"01_load_data": "prices.parquet", "02_build_features": "features.parquet",
                "03_fit_ml_signals": "signals_ml.parquet", "04_ask_claude": "signals_llm.parquet",
                "05_build_portfolio": "weights.parquet",
                "06_validate_strategy": "metrics.json"}[path.stem]
    assert (run_dir / expected).is_file()
