"""The two ways to install agree, and the set-up files keep the promises of the README."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import REPO

CORE = {"jupyterlab", "papermill", "pandas", "statsmodels", "scikit-learn", "pyportfolioopt", "quantstats",
        "anthropic", "yfinance", "alpaca-py", "nbval"}


def names(requirements):
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in requirements if isinstance(r, str)}


def test_environment_yml_and_pyproject_name_the_same_core_packages():
    pyproject = names(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    conda = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    conda_names = names(conda) - {"python", "pip"}
    assert CORE <= pyproject
    assert conda_names == CORE, "environment.yml lists exactly the core packages; the rest comes from pip install -e ."
    assert {"pip": ["-e .[dev]"]} in conda


def test_generated_folders_and_secrets_are_ignored_by_git():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    for entry in (".env", ".venv/", "reports/*", "data/*"):
        assert entry in ignored


def test_ci_and_readme_use_the_two_commands():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert readme.index("make run") < readme.index("make test") < 1500, "the two commands come first"
