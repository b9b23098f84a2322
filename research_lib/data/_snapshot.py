"""Parquet snapshots with provenance, written atomically.

A snapshot is two files: ``<name>.parquet`` (the canonical frame) and ``<name>.json``
(source, symbols, dates, retrieval time, sha256 of the parquet bytes). Both are written
to temporary names and renamed into place, parquet first, so a crash never leaves a
snapshot that looks complete.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from research_lib._io import read_json, write_json, write_parquet
from research_lib.data._validate import validate_prices
from research_lib.errors import DataValidationError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_snapshot(prices: pd.DataFrame, path: str | Path, provenance: dict) -> dict:
    """Save ``prices`` to ``path`` (parquet) and its provenance beside it (json).

    Returns the provenance as written, with ``sha256``, ``rows``, ``first_date`` and
    ``last_date`` filled in.
    """
    path = Path(path)
    # Drop the old provenance first: a crash before the new one is written leaves a parquet
    # without provenance, which is treated as "not cached", never as a mismatched pair.
    path.with_suffix(".json").unlink(missing_ok=True)
    write_parquet(prices, path)
    record = {
        **provenance,
        "rows": len(prices),
        "first_date": prices.index[0].strftime("%Y-%m-%d") if len(prices) else None,
        "last_date": prices.index[-1].strftime("%Y-%m-%d") if len(prices) else None,
        "sha256": sha256_of(path),
    }
    write_json(path.with_suffix(".json"), record)
    return record


def read_provenance(path: str | Path) -> dict | None:
    return read_json(Path(path).with_suffix(".json"))


def read_snapshot(path: str | Path, *, max_stale_sessions: int = 10, max_daily_price_ratio: float = 3.0) -> pd.DataFrame:
    """Load and re-validate a snapshot; the frame's ``attrs["provenance"]`` holds its record.

    Raises ``DataValidationError`` naming the file if its content is invalid or if it was
    changed after it was written (sha256 mismatch).
    """
    path = Path(path)
    record = read_provenance(path)
    if record is None:
        raise DataValidationError([f"Snapshot {path} has no provenance file {path.with_suffix('.json').name} (an interrupted write?); delete {path} so it is fetched again."])
    try:
        prices = pd.read_parquet(path)
    except (OSError, ValueError):
        raise DataValidationError([f"Snapshot {path} cannot be read (truncated, or not a parquet file); delete it so it "
                                   "is fetched again."]) from None
    try:
        validate_prices(prices, f"snapshot {path}", max_stale_sessions=max_stale_sessions,
                        max_daily_price_ratio=max_daily_price_ratio)
    except DataValidationError as err:
        fix = f" The snapshot is corrupt: delete {path.name} or run with --set data.refresh=true to fetch it again."
        raise DataValidationError([err.problems[0] + fix, *err.problems[1:]]) from None
    actual = sha256_of(path)
    if actual != record.get("sha256"):
        raise DataValidationError([
            f"Snapshot {path} changed after it was written (sha256 {actual[:12]} != recorded {str(record.get('sha256'))[:12]}); "
            "a run on it could not be repeated. Delete it to fetch again, or load your own data with data.source: file."
        ])
    prices.attrs["provenance"] = record
    return prices

