"""Keys come from the environment or a git-ignored .env, never from parameters."""

from __future__ import annotations

import os

from research_lib.env import load_env_file


def test_dotenv_fills_the_environment_without_overriding_it(workspace, monkeypatch):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-the-shell")
    (workspace / ".env").write_text("APCA_API_KEY_ID=from-dotenv\nANTHROPIC_API_KEY=from-dotenv\n")
    assert load_env_file() is True
    assert os.environ["APCA_API_KEY_ID"] == "from-dotenv"
    assert os.environ["ANTHROPIC_API_KEY"] == "from-the-shell"
    monkeypatch.delenv("APCA_API_KEY_ID")


def test_no_dotenv_is_fine(workspace):
    assert load_env_file() is False
