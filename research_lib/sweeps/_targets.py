"""What a strategy function returns, checked and written as the kernel's decision rows
(sessions x symbols of target weights, NaN where nothing is decided); errors name the configuration."""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.sweeps import _kernel


def fill_targets(out: np.ndarray, returned, strategy, per_symbol: bool, close: pd.DataFrame,
                 number: int, params: dict) -> None:
    """Write into ``out`` the decision rows (sessions x symbols, NaN: no decision) of what the
    ``strategy`` (an engine `Strategy`) ``returned`` for configuration ``number``."""
    where = f"configuration {number} {params}"
    if strategy.kind == "entry_exit":
        if not (isinstance(returned, tuple) and len(returned) == 2):
            raise TypeError(f"{where}: {strategy.function.__qualname__} returned {type(returned).__name__}; an "
                            "entry/exit strategy returns (entries, exits), two sessions x symbols booleans.")
        signals = []
        for frame, label in zip(returned, ("entries", "exits")):
            _check_booleans(frame, f"{where}: the {label} {strategy.function.__qualname__} returned")
            signals.append(_as_array(frame, close, where, label, bool))
        _kernel.signals_to_targets(*signals, strategy.short, per_symbol, out)
        return
    weights = _as_array(returned, close, where, "weights", float)
    if np.isinf(weights).any():
        raise ValueError(f"{where}: weights contain infinite values; use NaN for 'no decision' and 0 for 'not held'.")
    if not per_symbol:  # a row with any decision is a full decision row: its NaN entries are 0
        decided = ~np.isnan(weights).all(axis=1)
        weights[decided] = np.nan_to_num(weights[decided], nan=0.0)
    out[:] = weights


def _check_booleans(frame, what: str) -> None:
    """Entries and exits are booleans: a NaN or a number would be read as True."""
    found = None
    if isinstance(frame, pd.DataFrame):
        wrong = [(column, kind) for column, kind in frame.dtypes.items() if kind != np.dtype(bool)]
        found = f"have column {wrong[0][0]!r} of dtype {wrong[0][1]}" if wrong else None
    elif isinstance(frame, np.ndarray) and frame.dtype != bool:
        found = f"are a {frame.dtype} array"
    if found:  # anything else that is not a frame is refused with its shape by _as_array
        raise TypeError(f"{what} {found}, not bool (a NaN or a number would be read as True); return booleans, "
                        "e.g. signal > 0, or signal.fillna(False).astype(bool) after a shift.")


def _as_array(returned, close: pd.DataFrame, where: str, label: str, dtype) -> np.ndarray:
    """``returned`` as a sessions x symbols array, refused unless it is aligned with ``close``."""
    if isinstance(returned, pd.DataFrame):
        if not (returned.index.equals(close.index) and returned.columns.equals(close.columns)):
            raise ValueError(f"{where}: {label} are not indexed like prices['close'] ({len(close)} sessions x "
                             f"{list(close.columns)}); return a frame with its index and columns, e.g. "
                             f"frame.reindex_like(ind.close).")
        returned = returned.to_numpy()
    if not isinstance(returned, np.ndarray) or returned.shape != close.shape:
        shape = getattr(returned, "shape", type(returned).__name__)
        raise TypeError(f"{where}: {label} is {shape}, not {close.shape} (sessions x symbols); return a DataFrame "
                        "indexed like prices['close'].")
    try:
        return np.array(returned, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {label} cannot be read as {dtype.__name__}: {error}") from None
