"""Checks every price frame passes before anything downstream sees it.

Each problem is one sentence naming the source, symbol, date and value, and the fix.
``validate_prices`` collects them all and raises one ``DataValidationError``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.errors import DataValidationError

_MAX_PROBLEMS = 25
# Adjusted bars rescale each field apart, so a close may pass its high by a rounding error;
# a relative excess above this is a wrong bar.
_BAR_TOLERANCE = 1e-6


def validate_prices(
    prices: pd.DataFrame,
    source: str,
    *,
    max_stale_sessions: int = 10,
    max_daily_price_ratio: float = 3.0,
    splits: pd.DataFrame | None = None,
) -> None:
    """Raise ``DataValidationError`` if ``prices`` is not a clean canonical frame.

    Parameters
    ----------
    prices : canonical price frame (see ``research_lib.data``).
    source : where the data came from, quoted in messages (e.g. ``"yfinance"`` or a path).
    max_stale_sessions : longest accepted run of sessions whose close did not change.
    max_daily_price_ratio : a close above this multiple of the previous close, or below
        its inverse, is an error unless ``splits`` records a split that day.
    splits : optional dates x symbols frame of split ratios (e.g. 2.0 for 2-for-1).
    """
    problems = _index_problems(prices, source)
    if not problems:
        # Each field sliced once, without attrs (pandas deep-copies attrs into every result, and a
        # provenance record lists every symbol): a 500-name frame is checked in linear time.
        bare = prices.copy(deep=False)
        bare.attrs = {}
        by_field = {name: bare[name] for name in bare.columns.get_level_values(0).unique()}
        for symbol in by_field["close"].columns:
            problems += _close_problems(by_field["close"][symbol], symbol, source, max_stale_sessions, max_daily_price_ratio, splits)
            problems += _other_field_problems(by_field, symbol, source)
            problems += _bar_problems(by_field, symbol, source)
            if len(problems) >= _MAX_PROBLEMS:
                break
    if problems:
        raise DataValidationError(problems[:_MAX_PROBLEMS])


def validate_index(prices: pd.DataFrame, source: str) -> None:
    """Raise ``DataValidationError`` unless rows are unique, sorted session dates with a close."""
    problems = _index_problems(prices, source, allow_empty=True)
    if problems:
        raise DataValidationError(problems)


def _day(ts) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%d")


def _index_problems(prices: pd.DataFrame, source: str, allow_empty: bool = False) -> list[str]:
    index = prices.index
    if not isinstance(index, pd.DatetimeIndex):
        return [f"Data from {source} is not indexed by dates (got {type(index).__name__}); index it by session date."]
    if len(index) == 0 and not allow_empty:
        return [f"Data from {source} has no sessions; widen data.start/data.end or check the symbols."]
    if "close" not in prices.columns.get_level_values(0):
        return [f"Data from {source} has no 'close' field; every source must provide adjusted closes."]
    problems = []
    dupes = index[index.duplicated()].unique()
    if len(dupes):
        shown = ", ".join(_day(d) for d in dupes[:5])
        problems.append(
            f"Data from {source} has duplicated dates ({len(dupes)}: {shown}); keep one row per session, "
            "e.g. df[~df.index.duplicated(keep='last')], or re-fetch with data.refresh: true."
        )
    if not index.is_monotonic_increasing:
        i = int(np.flatnonzero(np.diff(index.asi8) < 0)[0])
        problems.append(
            f"Data from {source} has unsorted dates: {_day(index[i + 1])} comes after {_day(index[i])} "
            f"(row {i + 1}); sort it with df.sort_index()."
        )
    return problems


def _close_problems(close: pd.Series, symbol: str, source: str, max_stale: int, max_ratio: float, splits) -> list[str]:
    values = close.to_numpy(dtype="float64")
    where = f"{source}, {symbol}"
    present = np.flatnonzero(~np.isnan(values))
    if present.size == 0:
        why = " (an all-NaN column, which is how yfinance reports a failed or delisted ticker)" if "yfinance" in source else ""
        return [
            f"{source} returned no prices for {symbol}{why}; check the ticker spelling for this source, or remove "
            f"{symbol} from data.symbols (or change data.benchmark / features.vix_symbol if it is one of those)."
        ]
    problems = []
    first, last = present[0], present[-1]
    span = values[first : last + 1]
    dates = close.index[first : last + 1]
    gaps = np.flatnonzero(np.isnan(span))
    if gaps.size:
        problems.append(
            f"{where}: missing (NaN) close on {_day(dates[gaps[0]])} ({gaps.size} such sessions between its first "
            f"quote {_day(dates[0])} and last {_day(dates[-1])}); fill the gap from another source, narrow "
            "data.start/data.end, or drop the symbol."
        )
    bad = np.flatnonzero(np.isinf(span))
    if bad.size:
        problems.append(f"{where}: infinite close ({span[bad[0]]}) on {_day(dates[bad[0]])}; the source data is corrupt, re-fetch it (data.refresh: true).")
    bad = np.flatnonzero(span <= 0)
    if bad.size:
        problems.append(
            f"{where}: non-positive close {span[bad[0]]:g} on {_day(dates[bad[0]])} ({bad.size} such sessions); "
            "prices must be > 0: fix or re-fetch the data, or drop the symbol."
        )
    if problems:
        return problems
    problems += _stale_problem(span, dates, where, max_stale)
    problems += _jump_problem(span, dates, symbol, where, max_ratio, splits)
    return problems


def _stale_problem(span: np.ndarray, dates: pd.DatetimeIndex, where: str, max_stale: int) -> list[str]:
    unchanged = np.concatenate([[False], span[1:] == span[:-1]])
    if not unchanged.any():
        return []
    # Length of the run of unchanged closes ending at each session.
    run_id = np.cumsum(~unchanged)
    run_length = np.bincount(run_id, weights=unchanged)
    longest = int(np.argmax(run_length))
    if run_length[longest] <= max_stale:
        return []
    start = np.flatnonzero(run_id == longest)[0]
    return [
        f"{where}: stale series, the close did not change for {int(run_length[longest])} sessions in a row after "
        f"{_day(dates[start])} (stuck at {span[start]:g}); the quote feed likely stopped. Narrow data.start/data.end, "
        f"drop the symbol, or raise data.max_stale_sessions (now {max_stale})."
    ]


def _jump_problem(span, dates, symbol, where, max_ratio, splits) -> list[str]:
    ratio = span[1:] / span[:-1]
    jumps = np.flatnonzero((ratio > max_ratio) | (ratio < 1.0 / max_ratio))
    if jumps.size and splits is not None and symbol in splits.columns:
        split_days = set(splits[symbol].dropna().loc[lambda s: s != 1.0].index)
        jumps = np.array([j for j in jumps if dates[j + 1] not in split_days], dtype=int)
    if not jumps.size:
        return []
    j = jumps[0]
    return [
        f"{where}: impossible one-day move on {_day(dates[j + 1])}, close {span[j]:g} -> {span[j + 1]:g} "
        f"(x{ratio[j]:.3g}) with no split recorded; load split-adjusted prices (yfinance auto_adjust, alpaca "
        f"adjustment 'all') or raise data.max_daily_price_ratio (now {max_ratio:g})."
    ]


def _other_field_problems(by_field: dict[str, pd.DataFrame], symbol: str, source: str) -> list[str]:
    problems = []
    for name in ("open", "high", "low", "volume"):
        if name not in by_field:
            continue
        values = by_field[name][symbol].dropna()
        lowest_ok = 0.0 if name == "volume" else np.nextafter(0.0, 1.0)
        bad = values[~np.isfinite(values) | (values < lowest_ok)]
        if len(bad):
            problems.append(
                f"{source}, {symbol}: invalid {name} {bad.iloc[0]:g} on {_day(bad.index[0])} ({len(bad)} such sessions); "
                "fix or re-fetch the data."
            )
    return problems


def _bar_problems(by_field: dict[str, pd.DataFrame], symbol: str, source: str) -> list[str]:
    """A bar needs ``low <= high``, ``low <= close`` and ``close <= high``, for the fields it has."""
    problems = []
    for lower, upper in (("low", "high"), ("low", "close"), ("close", "high")):
        if lower not in by_field or upper not in by_field:
            continue
        below, above = by_field[lower][symbol], by_field[upper][symbol]
        bad = below.index[(below > above + _BAR_TOLERANCE * above.abs()).to_numpy()]
        if len(bad):
            day = bad[0]
            problems.append(
                f"{source}, {symbol}: {lower} {below[day]:g} above {upper} {above[day]:g} on {_day(day)} ({len(bad)} such "
                f"sessions); a bar needs low <= close <= high: fix or re-fetch the data (are {lower} and {upper} "
                "adjusted alike?)."
            )
    return problems
