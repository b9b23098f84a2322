"""Progress on long work: one call for a terminal, a notebook and papermill's executed copy.

``progress(iterable, total=None, desc="walk-forward blocks", unit="block")`` wraps tqdm's text
bar on stderr: it updates in place in a terminal and in JupyterLab, and redraws at most every
``MIN_INTERVAL_S`` seconds, so an executed notebook keeps a few lines rather than thousands.
Work shorter than ``MIN_INTERVAL_S`` shows its final line only. ``SPARTAN_PROGRESS=0`` in the
environment turns every bar off (the test suite does).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["MIN_INTERVAL_S", "enabled", "progress"]

MIN_INTERVAL_S = 2.0
T = TypeVar("T")


def enabled() -> bool:
    """Whether bars are shown (``SPARTAN_PROGRESS`` is not ``0``)."""
    return os.environ.get("SPARTAN_PROGRESS", "1").strip() != "0"


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Iterate over ``iterable`` showing a progress bar labelled ``desc`` (``total`` when
    ``iterable`` has no length, e.g. a generator or ``as_completed``)."""
    if not enabled():
        yield from iterable
        return
    from tqdm import tqdm  # loaded by the work that shows a bar, not by every import of the library

    # tqdm's default disable=False shows the bar off a terminal too: a kernel run by papermill
    # writes to a pipe, and its notebook is where the user looks.
    with tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=MIN_INTERVAL_S,
              dynamic_ncols=False, ncols=100) as bar:
        yield from bar
