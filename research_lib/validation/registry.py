"""The workspace's sweep registry: every strategy configuration ever backtested, once each.

The deflated Sharpe ratio needs the number of configurations tried before the one being
judged, and the variance of their Sharpe ratios. Forgetting failed trials is how backtests
overfit, so every backtest a run makes is recorded here automatically, in the workspace's
SQLite state (``data/spartan.sqlite``, table ``trials``). A configuration is identified by
a hash of its family and parameters (a run's trials include its data section, so the same
strategy on other data is another trial): re-running it is not a new trial.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd

from research_lib._io import now_utc
from research_lib.validation.statistics import is_flat

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    config_hash TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    name TEXT NOT NULL,
    params TEXT NOT NULL,
    sharpe REAL NOT NULL,
    n_obs INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL
)"""


def _plain(value: object) -> object:
    """JSON for values json cannot write: numpy scalars as Python numbers (so np.int64(20) is 20), else text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def trial_hash(family: str, params: dict) -> str:
    """The identity of a configuration: a hash of its family and parameters (JSON, sorted keys)."""
    payload = json.dumps({"family": family, "params": params}, sort_keys=True, default=_plain)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _connect(db_path: Path) -> sqlite3.Connection:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(_SCHEMA)
    return conn


def record_trials(db_path: str | Path, run_id: str, family: str, trials: dict[str, tuple[dict, pd.Series]]) -> int:
    """Record each ``name -> (params, daily returns)`` of ``family``; return how many were new.

    The per-period Sharpe (mean / std, ddof=1) of each trial's returns is stored with it; a
    configuration already recorded keeps its first record.
    """
    rows = []
    for name, (params, returns) in trials.items():
        values = np.asarray(returns.dropna(), dtype=float)
        if values.size < 3 or is_flat(values):
            continue  # a flat or empty backtest has no Sharpe ratio to count
        rows.append((trial_hash(family, params), family, name, json.dumps(params, sort_keys=True, default=_plain),
                     float(values.mean() / values.std(ddof=1)), int(values.size), run_id, now_utc()))
    with closing(_connect(Path(db_path))) as conn, conn:
        before = conn.total_changes
        conn.executemany("INSERT OR IGNORE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return conn.total_changes - before


def trial_statistics(db_path: str | Path) -> dict:
    """``n_trials`` (distinct configurations recorded) and ``sharpe_variance`` (variance of their
    per-period Sharpe ratios, ddof=1; 0 with fewer than 2 trials)."""
    with closing(_connect(Path(db_path))) as conn:
        sharpes = [row[0] for row in conn.execute("SELECT sharpe FROM trials")]
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    return {"n_trials": len(sharpes), "sharpe_variance": variance}


def list_trials(db_path: str | Path) -> pd.DataFrame:
    """Every recorded trial, oldest first."""
    with closing(_connect(Path(db_path))) as conn:
        return pd.read_sql_query("SELECT * FROM trials ORDER BY recorded_at, config_hash", conn)
