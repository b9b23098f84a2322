"""Secrets come from the environment, or from a git-ignored ``.env`` at the workspace root.

They are never papermill parameters (papermill copies parameters into the executed
notebook), never logged and never written to reports. Notebook kernels inherit the
environment of the ``spartan`` process that starts them.
"""

from __future__ import annotations

from dotenv import load_dotenv

from research_lib import paths

from research_lib.params import SECRET_NAMES  # noqa: F401  (re-exported: the keys Spartan reads)


def load_env_file() -> bool:
    """Read ``<workspace>/.env`` into the environment without overriding what is set.

    Returns True when a ``.env`` file was found.
    """
    env_file = paths.workspace_root() / ".env"
    return load_dotenv(env_file, override=False) if env_file.is_file() else False
