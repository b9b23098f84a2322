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


TEST_TOOLS = {"pytest", "pytest-cov", "pytest-xdist", "hypothesis", "nbval", "playwright", "aiosmtpd"}


def test_environment_yml_and_pyproject_name_the_same_core_packages():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pyproject, dev = names(project["dependencies"]), names(project["optional-dependencies"]["dev"])
    conda = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    conda_names = names(conda) - {"python", "pip"}
    assert CORE - {"nbval"} <= pyproject and "nbval" in dev, "nbval runs the notebooks as tests: a test tool"
    assert TEST_TOOLS <= dev and not TEST_TOOLS & pyproject, "`make run` installs no test tool; `make test` all"
    assert conda_names == CORE, "environment.yml lists exactly the core packages; the rest comes from pip install -e ."
    assert {"pip": ["-e .[dev]"]} in conda


def test_generated_folders_and_secrets_are_ignored_by_git():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    for entry in (".env", ".venv/", "reports/*", "data/*"):
        assert entry in ignored


def test_make_run_installs_the_project_alone_and_make_test_adds_the_test_tools():
    make = (REPO / "Makefile").read_text()
    run_install = make.split("$(STAMP): pyproject.toml", 1)[1].split("\n\n", 1)[0]
    test_install = make.split("$(TEST_STAMP): $(STAMP)", 1)[1].split("\n\n", 1)[0]
    assert "pip install --quiet -e .\n" in run_install and "[dev]" not in run_install
    assert "-e '.[dev]'" in test_install
    assert re.search(r"^run: \$\(STAMP\)$", make, re.M) and re.search(r"^test: \$\(TEST_STAMP\)", make, re.M)


def test_ci_and_readme_use_the_two_commands():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert readme.index("make run") < readme.index("make test") < 1500, "the two commands come first"
