"""The workspace's sweep registry: every strategy configuration ever backtested, once each.

The deflated Sharpe ratio needs the number of configurations tried before the one being
judged, and the variance of their Sharpe ratios. Forgetting failed trials is how backtests
overfit, so every backtest a run makes is recorded here automatically, in the workspace's
SQLite state (``data/spartan.sqlite``, table ``trials``). A configuration is identified by
a hash of its family and parameters (a run's trials include its data section, so the same
strategy on other data is another trial): re-running it is not a new trial.

A sweep (`record_sweep`) is kept whole as well: each configuration that trades becomes a trial,
and the sweep itself is a row of the ``sweeps`` table whose returns matrix (sessions x
configurations, float32 parquet) lives in the ``sweeps/`` folder beside the database (for the
workspace's database, ``data/sweeps/``: `research_lib.paths.sweeps_dir`), so the validation of a
strategy chosen from it can compute PBO and DSR over the sweep that chose (`load_sweep`). A
sweep's id is ``sweep-`` and 12 hex digits of a hash of its content (family, backtest model,
table, returns): recording the same sweep again returns the same id and adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from research_lib._io import atomic_write_bytes, now_utc
from research_lib.errors import ConfigError, SpartanError
from research_lib.paths import SWEEPS_DIR_NAME
from research_lib.validation import _sweep_store as store
from research_lib.validation.statistics import is_flat

__all__ = ["LoadedSweep", "SweepFileError", "UnknownSweep", "list_sweeps", "list_trials", "load_sweep",
           "record_sweep", "record_trials", "trial_hash", "trial_statistics"]

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
_SWEEPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    created_at TEXT NOT NULL,
    n_configurations INTEGER NOT NULL,
    n_trading INTEGER NOT NULL,
    params TEXT NOT NULL,
    backtest TEXT NOT NULL,
    matrix_file TEXT NOT NULL,
    matrix_sha256 TEXT NOT NULL,
    config_table TEXT NOT NULL
)"""
_SWEEP_COLUMNS = ("id", "family", "created_at", "n_configurations", "n_trading", "params", "backtest",
                  "matrix_file", "matrix_sha256")
_plain = store.plain
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another's write lock before "database is locked"


class UnknownSweep(ConfigError, LookupError):
    """No sweep of that id in the registry (e.g. a mistyped ``validation.sweep``)."""


class SweepFileError(SpartanError):
    """A recorded sweep's returns matrix is missing or no longer matches its recorded SHA-256."""


def trial_hash(family: str, params: dict) -> str:
    """The identity of a configuration: a hash of its family and parameters (JSON, sorted keys)."""
    payload = json.dumps({"family": family, "params": params}, sort_keys=True, default=_plain)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _connect(db_path: Path) -> sqlite3.Connection:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_S)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(_SCHEMA)
    conn.execute(_SWEEPS_SCHEMA)
    return conn


def record_trials(db_path: str | Path, run_id: str, family: str, trials: dict[str, tuple[dict, pd.Series]]) -> int:
    """Record each ``name -> (params, daily returns)`` of ``family``; return how many were new.

    The per-period Sharpe (mean / std, ddof=1) of each trial's returns is stored with it; a
    configuration already recorded keeps its first record.
    """
    rows = _trial_rows(run_id, family, trials)
    with closing(_connect(Path(db_path))) as conn, conn:
        return _insert_trials(conn, rows)


def _trial_rows(run_id: str, family: str, trials: dict[str, tuple[dict, pd.Series]]) -> list[tuple]:
    """The ``trials`` rows of those trials that have a Sharpe ratio."""
    rows = []
    for name, (params, returns) in trials.items():
        values = np.asarray(returns.dropna(), dtype=float)
        if values.size < 3 or is_flat(values):
            continue  # a flat or empty backtest has no Sharpe ratio to count
        rows.append((trial_hash(family, params), family, name, json.dumps(params, sort_keys=True, default=_plain),
                     float(values.mean() / values.std(ddof=1)), int(values.size), run_id, now_utc()))
    return rows


def _insert_trials(conn: sqlite3.Connection, rows: list[tuple]) -> int:
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


@dataclass(frozen=True)
class LoadedSweep:
    """A recorded sweep: its ``table`` (configurations x parameters and metrics), its ``returns``
    (sessions x the configurations that trade, float32 as stored, NaN before a configuration's first
    trade; compute on it a block of columns at a time, e.g. `_sweep_store.column_moments`),
    the parameter names, the backtest model, and when it was recorded (UTC, ISO 8601)."""

    id: str
    family: str
    table: pd.DataFrame
    returns: pd.DataFrame
    params: tuple[str, ...]
    backtest: dict
    created_at: str


def _sweeps_folder(db_path: Path) -> Path:
    """Where the database's sweeps keep their matrices: ``sweeps/`` beside it (the workspace's: data/sweeps/)."""
    return db_path.parent / SWEEPS_DIR_NAME


def record_sweep(db_path: str | Path, family: str, table: pd.DataFrame, returns: pd.DataFrame, backtest: dict,
                 code: str | None = None) -> str:
    """Record a sweep and each of its configurations that trades as a trial; return the sweep's id.

    Parameters
    ----------
    db_path : the registry's SQLite file (the workspace's: ``paths.state_db()``).
    family : the strategy family the configurations belong to (part of each trial's identity).
    table : one row per configuration, indexed by configuration: the parameters (``symbol`` too,
        for per-symbol books), then the metrics from ``sharpe`` on (NaN for those that never trade).
    returns : sessions x the configurations with a Sharpe ratio (``table``'s index; none when no
        configuration trades), daily simple net returns, NaN only before a configuration's first trade.
    backtest : the backtest model (``run_backtest``'s keywords), the same for every configuration.
    code : a digest of the strategy's code (`research_lib.validation.sweep` passes one), part of each
        trial's identity: the same parameters of an edited strategy are new trials, which the
        deflated Sharpe must count; None leaves the identity to family, parameters and model.

    Returns
    -------
    str
        ``sweep-`` and 12 hex digits of a hash of the content; the same sweep recorded again gets
        the same id and adds nothing (a configuration already recorded is not a new trial either).

    The file and the rows are written under the database's write lock (``BEGIN IMMEDIATE``), so
    two processes recording at once take turns: the matrix file is written first (atomically),
    then the sweep's row and its trials in the same transaction. If that fails, the file is
    removed unless a recorded sweep refers to it (checked again under the lock): nothing is left
    half-recorded, and a file another process recorded is never removed.

    Raises
    ------
    ValueError, TypeError
        for a table and returns that do not match, a NaN Sharpe, a table without configurations,
        configurations with the same parameters, labels that are not flat or not distinct as text,
        a malformed family or model.
    """
    checked = store.check_sweep(family, table, returns, backtest)
    sweep_id = store.sweep_id(checked, family)
    payload = store.encode_matrix(checked.matrix)
    db_path = Path(db_path)
    path = _sweeps_folder(db_path) / f"{sweep_id}.parquet"
    row = (sweep_id, family, now_utc(), len(table), returns.shape[1], store.to_json(list(checked.params)),
           checked.backtest_json, path.name, store.sha256(payload), checked.table_json)
    if code is not None and (not isinstance(code, str) or not code):
        raise TypeError(f"code is {code!r}; pass a non-empty digest of the strategy's source, or None.")
    trial_rows = _sweep_trial_rows(sweep_id, family, checked, table, returns, {"backtest": backtest} | (
        {"code": code} if code else {}))
    with closing(_connect(db_path)) as conn:
        conn.execute("BEGIN IMMEDIATE")  # the write lock, before anything is read or written
        try:
            if _recorded_whole(conn, sweep_id, path):
                conn.rollback()
                return sweep_id  # the same sweep, already recorded whole
            atomic_write_bytes(path, payload)
            _insert_trials(conn, trial_rows)
            _write_sweep_row(conn, row)
            conn.commit()
        except BaseException:
            _discard(conn, path, sweep_id, row[8])
            raise
    return sweep_id


def _recorded_whole(conn: sqlite3.Connection, sweep_id: str, path: Path) -> bool:
    """Whether the sweep has its row and its file matches the row's hash."""
    recorded = conn.execute("SELECT matrix_sha256 FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
    return bool(recorded) and path.is_file() and store.sha256(path.read_bytes()) == recorded[0]


def _discard(conn: sqlite3.Connection, path: Path, sweep_id: str, digest: str) -> None:
    """After a failed recording: remove the file only if no recorded sweep refers to it, then roll back.

    Asked under the write lock still held (when the connection can still answer): a row of this id
    or of this content (committed by another process, or ours before the failure) keeps the file.
    """
    try:
        referred = conn.execute("SELECT 1 FROM sweeps WHERE id = ? OR matrix_sha256 = ?",
                                (sweep_id, digest)).fetchone() is not None
    except sqlite3.Error:
        referred = True  # cannot tell: keeping an unreferenced file is harmless, removing a referenced one is not
    if not referred:
        path.unlink(missing_ok=True)
    if conn.in_transaction:
        conn.rollback()


def _sweep_trial_rows(sweep_id: str, family: str, checked: store.CheckedSweep, table: pd.DataFrame,
                      returns: pd.DataFrame, identity: dict) -> list[tuple]:
    """The ``trials`` rows of a sweep's configurations, as `record_trials` makes them, all columns at once.

    A configuration is named by its parameters (``fast=10, slow=50, symbol=AAPL``); one whose
    returns are too few or flat (`statistics.is_flat`) has no Sharpe ratio and is not a trial.
    ``identity`` (the backtest model, and the strategy's code digest when known) is part of every
    trial's identity beside its parameters.
    """
    moments = store.column_moments(returns)
    counted = moments.sharpe_usable()
    labels = returns.columns[counted]
    sharpes = dict(zip(labels, moments.mean[counted] / moments.std[counted]))
    counts = dict(zip(labels, moments.count[counted]))
    configurations = table.loc[labels, list(checked.params)].to_dict("index")
    recorded_at, rows = now_utc(), []
    for label in labels:
        params = {"params": configurations[label], **identity}
        name = ", ".join(f"{k}={v}" for k, v in params["params"].items())
        rows.append((trial_hash(family, params), family, name, json.dumps(params, sort_keys=True, default=_plain),
                     float(sharpes[label]), int(counts[label]), sweep_id, recorded_at))
    return rows


def _write_sweep_row(conn: sqlite3.Connection, row: tuple) -> None:
    """Insert the sweep's row; a re-recorded sweep whose file was repaired gets the file's new hash."""
    conn.execute(f"INSERT INTO sweeps VALUES ({', '.join('?' * len(row))}) ON CONFLICT(id) DO UPDATE SET "
                 "matrix_file = excluded.matrix_file, matrix_sha256 = excluded.matrix_sha256", row)


def load_sweep(db_path: str | Path, sweep_id: str) -> LoadedSweep:
    """The sweep recorded as ``sweep_id``, its returns matrix checked against its recorded SHA-256.

    Raises
    ------
    UnknownSweep
        no sweep has that id (`list_sweeps` shows the recorded ones).
    SweepFileError
        the matrix file is missing or does not match its hash.
    """
    db_path = Path(db_path)
    with closing(_connect(db_path)) as conn:
        row = conn.execute("SELECT family, created_at, params, backtest, matrix_file, matrix_sha256, config_table "
                           "FROM sweeps WHERE id = ?", (str(sweep_id),)).fetchone()
        known = [r[0] for r in conn.execute("SELECT id FROM sweeps ORDER BY created_at DESC LIMIT 5")]
    if row is None:
        raise UnknownSweep(f"No sweep {sweep_id!r} in the registry {db_path} (latest: {known or 'none'}); "
                           "list_sweeps() shows every recorded sweep and its id.")
    family, created_at, params, backtest, matrix_file, expected, table_json = row
    path = _sweeps_folder(db_path) / matrix_file
    if not path.is_file():
        raise SweepFileError(f"The returns matrix of sweep {sweep_id}, {path}, is missing; restore the file, or run "
                             "the sweep again (recording it again rewrites the file).")
    payload = path.read_bytes()
    if store.sha256(payload) != expected:
        raise SweepFileError(f"The returns matrix of sweep {sweep_id}, {path}, does not match its recorded sha256 "
                             f"{expected[:12]}... (corrupted or changed); restore the file, or run the sweep again "
                             "(recording it again rewrites the file).")
    table = store.table_from_json(table_json)
    return LoadedSweep(sweep_id, family, table, store.decode_matrix(payload, table), tuple(json.loads(params)),
                       json.loads(backtest), created_at)


def list_sweeps(db_path: str | Path) -> pd.DataFrame:
    """Every recorded sweep, oldest first: id, family, created_at, n_configurations, n_trading, params
    (the parameter names), backtest (the model), matrix_file (in the sweeps folder) and matrix_sha256."""
    with closing(_connect(Path(db_path))) as conn:
        frame = pd.read_sql_query(f"SELECT {', '.join(_SWEEP_COLUMNS)} FROM sweeps ORDER BY created_at, id", conn)
    for column in ("params", "backtest"):
        frame[column] = frame[column].map(json.loads)
    return frame
