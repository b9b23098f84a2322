"""How a recorded sweep is checked, identified and written: the pure half of the sweep registry.

A sweep is its configurations ``table`` (one row per configuration: the parameters, then the
metrics from ``sharpe`` on, indexed by configuration) and its ``returns`` (sessions x the
configurations that trade, daily simple net returns, NaN before a configuration's first
trade). `research_lib.validation.registry` stores both; this module only turns them into
bytes and text and back, and refuses a sweep whose parts do not fit together:

- the returns matrix is float32 parquet (half the size of float64; a daily return keeps
  about 7 significant digits, far below what any Sharpe ratio can tell apart; one smaller
  than 1.2e-38 in magnitude, float32's smallest normal number, comes back as about 0);
- the table is JSON with its column types, so parameters of any plain type come back as given;
- the id is ``sweep-`` and 12 hex digits of a SHA-256 of the content (family, backtest model,
  table, float32 returns): the same sweep recorded twice has the same id and is stored once.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

FIRST_METRIC = "sharpe"  # the table's parameters are its columns before this one
ID_PREFIX = "sweep-"
FLOAT32_MAX = float(np.finfo(np.float32).max)


def plain(value: object) -> object:
    """JSON for values json cannot write: numpy scalars as Python numbers (so np.int64(20) is 20), else text."""
    return value.item() if isinstance(value, np.generic) else str(value)


def to_json(value: object) -> str:
    """Canonical JSON (sorted keys) of plain values; numpy scalars become Python numbers."""
    return json.dumps(value, sort_keys=True, default=plain)


@dataclass(frozen=True)
class CheckedSweep:
    """A sweep that passed `check_sweep`: parameter names, the matrix as float32, the table as JSON."""

    params: tuple[str, ...]
    matrix: pd.DataFrame
    table_json: str
    backtest_json: str


def parameter_names(table: pd.DataFrame) -> tuple[str, ...]:
    """The table's parameter columns: those before ``sharpe`` (the first metric)."""
    columns = list(table.columns)
    if FIRST_METRIC not in columns:
        raise ValueError(f"table has no {FIRST_METRIC!r} column (columns: {columns}); pass a sweep's table: "
                         f"its parameters, then its metrics from {FIRST_METRIC!r} on.")
    return tuple(str(name) for name in columns[:columns.index(FIRST_METRIC)])


def check_sweep(family: str, table: pd.DataFrame, returns: pd.DataFrame, backtest: dict) -> CheckedSweep:
    """Refuse a sweep whose parts do not fit together, saying which part and the fix; else its stored form."""
    if not isinstance(family, str) or not family.strip():
        raise ValueError(f"family is {family!r}; name the strategy family, e.g. 'rsi_thresholds'.")
    if not isinstance(backtest, dict):
        raise TypeError(f"backtest is a {type(backtest).__name__}; pass the backtest model as a dict of "
                        "run_backtest's keywords, e.g. {'cost_bps': 10.0}.")
    for name, frame in (("table", table), ("returns", returns)):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{name} is a {type(frame).__name__}; pass the sweep result's {name} (a DataFrame).")
    if table.empty:
        raise ValueError("table has no configuration; record a sweep with at least one configuration.")
    _check_labels(table, returns)
    params = parameter_names(table)
    if not params:
        raise ValueError(f"table has no parameter column before {FIRST_METRIC!r}; put each configuration's "
                         "parameters first.")
    _check_distinct_parameters(table, params)
    _check_columns_match(table, returns)
    _check_values(returns)
    return CheckedSweep(params, returns.astype(np.float32), table_to_json(table), to_json(backtest))


def _check_labels(table: pd.DataFrame, returns: pd.DataFrame) -> None:
    """Configuration labels are flat, distinct, and distinct as text (the matrix file stores them as text)."""
    for name, labels in (("table's index", table.index), ("returns' columns", returns.columns)):
        if isinstance(labels, pd.MultiIndex):
            raise TypeError(f"{name} is a MultiIndex of levels {list(labels.names)}; label each configuration "
                            "with one value (e.g. table.reset_index(drop=True), and returns' columns to match).")
    if not table.index.is_unique:
        raise ValueError(f"table's index repeats {_some(table.index[table.index.duplicated()].unique())}; "
                         "each configuration needs its own label (e.g. table.reset_index(drop=True)).")
    as_text = pd.Series(table.index, dtype=object).map(str)
    clashes = table.index[as_text.duplicated(keep=False).to_numpy()]
    if len(clashes):
        raise ValueError(f"table's index has labels that are the same as text, {_some(clashes)} (e.g. 1 and '1'); "
                         "the matrix file stores labels as text: use labels of one type "
                         "(e.g. table.reset_index(drop=True)).")


def _check_distinct_parameters(table: pd.DataFrame, params: tuple[str, ...]) -> None:
    """Two configurations with the same parameters are one trial counted twice: refused."""
    keys = pd.Series([to_json(row) for row in table[list(params)].itertuples(index=False, name=None)],
                     index=table.index)
    repeated = keys[keys.duplicated(keep=False)]
    if len(repeated):
        groups = [list(labels) for labels in repeated.groupby(repeated, sort=False).groups.values()]
        first = table.loc[groups[0][0], list(params)].to_dict()
        raise ValueError(f"configurations {_some(groups)} of table have the same parameters (e.g. {first}); "
                         "each configuration must differ in at least one parameter: drop the repeats "
                         "(e.g. table.drop_duplicates(subset=params)) and their returns columns.")


def _some(values, limit: int = 10) -> list:
    """The first ``limit`` values, as a list for a message."""
    return list(values)[:limit]


def _check_columns_match(table: pd.DataFrame, returns: pd.DataFrame) -> None:
    """Every configuration with a Sharpe ratio has a returns column, and every column such a configuration."""
    if not returns.columns.is_unique:
        raise ValueError(f"returns repeats the columns {sorted(set(returns.columns[returns.columns.duplicated()]))}; "
                         "give each configuration one column.")
    unknown = [c for c in returns.columns if c not in table.index]
    if unknown:
        raise ValueError(f"returns has columns {unknown[:10]} that are not configurations of table (its index); "
                         "pass the table and returns of the same sweep.")
    sharpe = pd.to_numeric(table[FIRST_METRIC], errors="coerce")
    nan_sharpe = [c for c in returns.columns if not np.isfinite(sharpe[c])]
    if nan_sharpe:
        raise ValueError(f"configurations {nan_sharpe[:10]} have returns but a NaN Sharpe ratio in table (returns "
                         "that never vary); drop their columns from returns, or fix the sweep's metrics.")
    missing = [c for c in table.index[np.isfinite(sharpe)] if c not in returns.columns]
    if missing:
        raise ValueError(f"configurations {missing[:10]} have a Sharpe ratio in table but no column in returns; "
                         "pass the returns of every configuration that trades (keep_returns=True).")


def _check_values(returns: pd.DataFrame) -> None:
    """Sessions in order, once each; finite returns (float32-sized) from each column's first one on."""
    if not (returns.index.is_unique and returns.index.is_monotonic_increasing):
        raise ValueError("returns' sessions are out of order or repeated; pass returns.sort_index() with each "
                         "session once.")
    if returns.shape[1] == 0:
        return  # no configuration trades: a sweep without trials, recorded all the same
    empty, bad = [], []
    for start, values in column_blocks(returns):
        present = ~np.isnan(values)
        first = present.argmax(axis=0) if len(values) else np.zeros(values.shape[1], dtype=int)
        empty += returns.columns[start + np.flatnonzero(~present.any(axis=0))].tolist()
        # after its first return, a configuration's returns are finite and within float32's range
        wrong = ~(np.abs(values) <= FLOAT32_MAX) & (np.arange(len(values))[:, None] >= first)
        bad += returns.columns[start + np.flatnonzero(wrong.any(axis=0))].tolist()
    if empty:
        raise ValueError(f"returns of configurations {empty[:10]} are empty (all NaN); a configuration that trades "
                         "has at least one return.")
    if bad:
        raise ValueError(f"returns of configurations {bad[:10]} have NaN, "
                         f"infinite values or values beyond float32's range ({FLOAT32_MAX:.1e}) after their first "
                         "return (NaN is allowed only before a configuration's first trade); fix the backtest or fill "
                         "the sessions it is in cash with 0.")


def sweep_id(checked: CheckedSweep, family: str) -> str:
    """``sweep-`` and 12 hex digits of the content's SHA-256: stable across runs and library versions."""
    digest = hashlib.sha256()
    for part in (family, checked.backtest_json, checked.table_json, to_json([str(c) for c in checked.matrix.columns]),
                 to_json([str(s) for s in checked.matrix.index])):
        digest.update(part.encode())
        digest.update(b"\0")
    values = checked.matrix.to_numpy()
    for start in range(0, len(values), _ROWS_HASHED):  # the row-major bytes, without a copy of the whole matrix
        digest.update(np.ascontiguousarray(values[start:start + _ROWS_HASHED]).tobytes())
    return ID_PREFIX + digest.hexdigest()[:12]


_ROWS_HASHED = 256  # sessions hashed at a time
_BLOCK_BYTES = 32 * 2**20  # a block of columns read as float64 at a time


def column_blocks(frame: pd.DataFrame):
    """``(first column, float64 values)`` of ``frame``'s columns, about `_BLOCK_BYTES` at a time (a
    float32 matrix of 10,000 configurations is never copied whole to float64)."""
    width = max(1, _BLOCK_BYTES // (8 * max(1, len(frame))))
    for start in range(0, frame.shape[1], width):
        yield start, frame.iloc[:, start:start + width].to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class ColumnMoments:
    """Per column of a returns matrix (NaN skipped): ``count``, ``mean``, ``std`` (ddof 1) and ``first``
    (the row of its first return; the number of rows when it has none), as arrays in column order."""

    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    first: np.ndarray

    def sharpe_usable(self) -> np.ndarray:
        """The columns with a Sharpe ratio by the registry's rule: at least 3 returns that vary
        (`statistics.is_flat`'s tolerance)."""
        return (self.count >= 3) & (self.std > 1e-12 * np.maximum(np.abs(self.mean), 1e-12))


def column_moments(frame: pd.DataFrame) -> ColumnMoments:
    """`ColumnMoments` of ``frame``, computed in float64 a block of columns at a time: the float32
    matrix of a wide sweep is never copied whole (to float64 or to a mask)."""
    parts: list[list[np.ndarray]] = [[np.zeros(0)], [np.zeros(0)], [np.zeros(0)], [np.zeros(0, dtype=int)]]
    for _, values in column_blocks(frame):
        present = ~np.isnan(values)
        n = present.sum(axis=0)
        mean = np.where(present, values, 0.0).sum(axis=0) / np.maximum(n, 1)
        squares = (np.where(present, values - mean, 0.0) ** 2).sum(axis=0)
        first = np.where(n > 0, present.argmax(axis=0), len(values)) if len(values) else np.zeros(len(n), dtype=int)
        for part, value in zip(parts, (n, mean, np.sqrt(squares / np.maximum(n - 1, 1)), first)):
            part.append(value)
    return ColumnMoments(*(np.concatenate(part) for part in parts))


def encode_matrix(matrix: pd.DataFrame) -> bytes:
    """The float32 returns matrix as parquet bytes (column labels as text; `decode_matrix` restores them)."""
    frame = matrix.astype(np.float32).set_axis([str(c) for c in matrix.columns], axis=1)
    buffer = io.BytesIO()
    # no dictionary (returns rarely repeat: it would grow the file); zstd packs the zeros of flat sessions
    frame.to_parquet(buffer, compression="zstd", use_dictionary=False)
    return buffer.getvalue()


def decode_matrix(payload: bytes, table: pd.DataFrame) -> pd.DataFrame:
    """The returns matrix as stored, float32, columns labelled as ``table``'s index.

    Read a block of columns at a time into one float32 array that the frame then holds without a
    copy: 40,000 books of 8,000 sessions take their 1.3 GB once, not again as Arrow buffers or float64.
    """
    source = pq.ParquetFile(io.BytesIO(payload))
    index_columns = _index_columns(source)  # parsed once: the metadata names every column
    names = [n for n in source.schema_arrow.names if n not in index_columns]
    width = max(1, _BLOCK_BYTES // (4 * max(1, source.metadata.num_rows)))
    values = np.empty((len(names), source.metadata.num_rows), dtype=np.float32)  # columns x sessions
    index = None
    for start in range(0, len(names), width) if names else [0]:
        part = source.read(columns=names[start:start + width], use_pandas_metadata=True).to_pandas()
        values[start:start + part.shape[1]] = part.to_numpy(dtype=np.float32).T
        index = part.index
    label = {str(c): c for c in table.index}
    columns = pd.Index([label[c] for c in names], name=table.index.name)
    return pd.DataFrame(values.T, index=index, columns=columns, copy=False)


def _index_columns(source: pq.ParquetFile) -> set[str]:
    """The stored columns that hold the frame's index (pandas' metadata names them)."""
    meta = source.schema_arrow.pandas_metadata or {}
    return {c for c in meta.get("index_columns", []) if isinstance(c, str)}


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def table_to_json(table: pd.DataFrame) -> str:
    """The table as JSON: its values, index and column types (floats keep every digit)."""
    split = table.to_dict(orient="split")
    return to_json({"columns": [str(c) for c in split["columns"]], "index": split["index"],
                    "index_name": table.index.name, "data": split["data"],
                    "dtypes": [str(t) for t in table.dtypes], "index_dtype": str(table.index.dtype)})


def table_from_json(text: str) -> pd.DataFrame:
    """The table `table_to_json` wrote, with its column types."""
    raw = json.loads(text)
    index = pd.Index(raw["index"], name=raw["index_name"])
    if raw["index_dtype"] != "object":
        index = index.astype(raw["index_dtype"])
    rows = raw["data"]
    # column by column, as objects first: inferring types would turn None (a trading row's reason) into NaN
    columns = {name: pd.Series([row[i] for row in rows], index=index, dtype=object) for i, name in
               enumerate(raw["columns"])}
    return pd.DataFrame({name: values if dtype == "object" else values.astype(dtype)
                         for (name, values), dtype in zip(columns.items(), raw["dtypes"])}, index=index)
