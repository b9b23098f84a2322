"""Reading the workspace's files for the dashboard without failing: a missing file is "none
yet", an unreadable one a note naming it (`problem`), a corrupt number None (`number`)."""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
from pathlib import Path
from urllib.parse import quote

import yaml

PROBLEMS = (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError, sqlite3.Error)


def number(value) -> float | None:
    """A finite float, or None (corrupt files carry strings, NaN, anything)."""
    if isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def href(reports_dir: Path, *parts: str) -> str | None:
    """The relative, URL-quoted link to ``reports_dir/parts...``, or None when no such file exists."""
    return "/".join(quote(str(p), safe="") for p in parts) if reports_dir.joinpath(*parts).is_file() else None


def problem(path: Path, root: Path, err: BaseException) -> str:
    try:
        name = path.relative_to(root)
    except ValueError:
        name = path
    return f"unreadable: {name} ({type(err).__name__}: {str(err)[:160]})"


def parse_time(value) -> dt.datetime | None:
    """An ISO 8601 time (naive times are taken as UTC), or None."""
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
