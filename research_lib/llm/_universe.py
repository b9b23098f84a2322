"""Which symbols the analyst is asked about each date: the most liquid ``llm.max_symbols``.

Liquidity is the mean dollar volume (close x volume) over the `LIQUIDITY_WINDOW_SESSIONS`
sessions ending at the decision date's close, both known then: point in time, never a later
session. The rank of each date uses only the rows up to that date.

When volume is missing (the bundled stocks carry none, and a symbol may lack it for a while), a
documented fallback decides: symbols with dollar volume in the window rank first, by it; those
without rank after them, by how many sessions of the window have a close (price availability),
then by symbol. The cap on the number of symbols (and so on cost) holds either way; the report
says on how many dates the fallback chose (``dates_ranked_without_volume``).

A symbol left out is not asked: it gets no view (NaN in the scores), never a zero view.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LIQUIDITY_WINDOW_SESSIONS = 63  # about three months of sessions
FALLBACK_RULE = ("symbols without volume in the window rank after those with it, by the number of sessions "
                 "with a close in the window, then by symbol")


def liquid_subset(tables: dict[pd.Timestamp, pd.DataFrame], close: pd.DataFrame, volume: pd.DataFrame | None,
                  max_symbols: int, window_sessions: int = LIQUIDITY_WINDOW_SESSIONS) -> tuple[dict, dict]:
    """``(tables, report)``: each date's table cut to its ``max_symbols`` most liquid symbols (rows
    kept in the table's order), and what was done.

    ``close`` and ``volume`` are sessions x symbols (``volume`` None: no volume at all). A table
    at a date with no session at or before it in ``close`` is kept whole.
    """
    if max_symbols < 1:
        raise ValueError(f"max_symbols must be at least 1, got {max_symbols}; set llm.max_symbols >= 1, or null for all")
    if volume is None:
        volume = pd.DataFrame(np.nan, index=close.index, columns=close.columns)
    dollar_volume = (close * volume.reindex(index=close.index, columns=close.columns)).rolling(
        window_sessions, min_periods=1).mean()  # NaN skipped; no volume in the window: NaN
    priced_sessions = close.notna().astype(float).rolling(window_sessions, min_periods=1).sum()
    kept, cut, without_volume, left_out = {}, 0, 0, 0
    for date, table in tables.items():
        rows = close.index[close.index <= date]
        if len(table) <= max_symbols or not len(rows):
            kept[date] = table
            continue
        ranked = rank_by_liquidity(list(table.index), dollar_volume.loc[rows[-1]], priced_sessions.loc[rows[-1]])
        chosen = set(ranked[:max_symbols])
        kept[date] = table[table.index.isin(chosen)]
        cut += 1
        left_out += len(table) - len(chosen)
        without_volume += bool(dollar_volume.loc[rows[-1]].reindex(ranked[:max_symbols]).isna().any())
    report = {"max_symbols": max_symbols, "window_sessions": window_sessions, "dates": len(tables),
              "dates_cut": cut, "symbol_dates_not_asked": left_out, "dates_ranked_without_volume": without_volume,
              "rule": f"mean dollar volume (close x volume) over the last {window_sessions} sessions to the date",
              "fallback": FALLBACK_RULE}
    return kept, report


def rank_by_liquidity(symbols: list[str], dollar_volume: pd.Series, priced_sessions: pd.Series) -> list[str]:
    """``symbols`` from most to least liquid (see the module docstring for the fallback)."""
    frame = pd.DataFrame({"symbol": symbols,
                          "dollar_volume": dollar_volume.reindex(symbols).to_numpy(dtype=float),
                          "priced": priced_sessions.reindex(symbols).fillna(0.0).to_numpy(dtype=float)})
    frame["no_volume"] = frame["dollar_volume"].isna()
    frame = frame.sort_values(["no_volume", "dollar_volume", "priced", "symbol"],
                              ascending=[True, False, False, True], na_position="last", kind="mergesort")
    return frame["symbol"].tolist()
