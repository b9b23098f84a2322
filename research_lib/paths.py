"""Where the workspace lives: ``params/``, ``data/``, ``reports/`` and ``notebooks/``.

The workspace root is ``$SPARTAN_HOME`` when set, otherwise the nearest folder at or
above the current directory that holds ``params/base.yaml`` (so notebooks opened from
``notebooks/`` find it), otherwise the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def workspace_root() -> Path:
    """Return the workspace root folder (see the module docstring)."""
    return find_workspace() or Path.cwd().resolve()


def find_workspace() -> Path | None:
    """The workspace root named by ``$SPARTAN_HOME`` or found at or above the current directory
    (a folder holding ``params/base.yaml``); None when there is none, so that a command can
    refuse instead of creating ``data/`` and ``reports/`` in an unrelated folder."""
    env = os.environ.get("SPARTAN_HOME")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params" / "base.yaml").is_file():
            return folder
    return None


def no_workspace_reason() -> str | None:
    """Why there is no workspace to work in (None when there is one), with the fix."""
    env = os.environ.get("SPARTAN_HOME")
    if env and not (Path(env) / "params" / "base.yaml").is_file():
        what = "holds no params/base.yaml" if Path(env).is_dir() else "is not a folder"
        return f"SPARTAN_HOME is {env!r}, which {what}: set it to a Spartan workspace (the folder with params/)"
    if find_workspace() is None:
        return (f"no Spartan workspace here: neither {Path.cwd()} nor a folder above it holds params/base.yaml. "
                "cd into the workspace (the clone with params/, notebooks/ and the Makefile) or set SPARTAN_HOME to it")
    return None


def data_dir() -> Path:
    return workspace_root() / "data"


def reports_dir() -> Path:
    return workspace_root() / "reports"


def notebooks_dir() -> Path:
    return workspace_root() / "notebooks"


STATE_DB_NAME = "spartan.sqlite"


def state_db() -> Path:
    """The workspace's SQLite state (WAL): LLM cache, trial registry, ledger, sim accounts."""
    return data_dir() / STATE_DB_NAME


SWEEPS_DIR_NAME = "sweeps"


def sweeps_dir() -> Path:
    """Where recorded sweeps keep their returns matrices (``data/sweeps/``, beside the state database)."""
    return data_dir() / SWEEPS_DIR_NAME


def promoted_dir() -> Path:
    """Where promoted strategies live, one frozen YAML record each (``params/promoted/``)."""
    return workspace_root() / "params" / "promoted"
