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
    env = os.environ.get("SPARTAN_HOME")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "params" / "base.yaml").is_file():
            return folder
    return here


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
