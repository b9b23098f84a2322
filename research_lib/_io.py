"""Small file helpers shared by the library: atomic writes and UTC timestamps."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_bytes(Path(path), json.dumps(payload, indent=2, default=str).encode())
    return Path(path)


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
