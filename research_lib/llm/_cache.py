"""The response cache: SQLite (WAL) under data/, keyed by everything that shapes an answer.

Re-running the same backtest finds every answer here and makes no API call. A key is the
sha256 of the exact request payload (model, prompts, schema, settings) less its
``cache_control`` markers: marking a prefix for prompt caching changes how the API bills it,
not what it answers, so it never splits the cache. Secrets never enter.

What is kept is decided by ``research_lib.llm`` (an answer that passes reply-level validation),
and every row is validated again when it is read.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from research_lib._io import now_utc

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    created_at TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    stop_reason TEXT,
    input_tokens INTEGER, output_tokens INTEGER,
    cache_read_tokens INTEGER, cache_write_tokens INTEGER,
    cost_usd REAL
)"""


@dataclass(frozen=True)
class Completion:
    """A model's answer with its usage; ``cost_usd`` is what it cost when first made."""

    text: str
    stop_reason: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0


def payload_digest(payload: dict) -> str:
    """sha256 of ``payload`` as canonical JSON (sorted keys), exactly as given."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def request_key(payload: dict) -> str:
    """The cache key of a request payload (model, prompt, schema, settings; never the API key):
    its digest once every ``cache_control`` marker is taken out, at any depth."""
    return payload_digest(_unmarked(payload))


def _unmarked(value):
    if isinstance(value, dict):
        return {k: _unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_unmarked(v) for v in value]
    return value


class ResponseCache:
    """Answers by request key, in the workspace's SQLite state file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> Completion | None:
        with self._connect() as db:
            row = db.execute("SELECT text, stop_reason, input_tokens, output_tokens, cache_read_tokens, "
                             "cache_write_tokens, cost_usd FROM llm_responses WHERE key = ?", (key,)).fetchone()
        return Completion(*row) if row else None

    def put(self, key: str, model: str, request: dict, completion: Completion) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO llm_responses VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (key, model, now_utc(), json.dumps(request), completion.text, completion.stop_reason,
                        completion.input_tokens, completion.output_tokens, completion.cache_read_tokens,
                        completion.cache_write_tokens, completion.cost_usd))

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM llm_responses").fetchone()[0]
