"""The canonical price frame.

Rows are exchange session dates (a sorted, unique, tz-naive ``DatetimeIndex`` named
``date``); columns are a two-level index ``(field, symbol)`` with fields among
``open, high, low, close, volume``. ``close`` is always present and adjusted for splits
and dividends. A field a source does not have for a symbol is an all-NaN column. A symbol
may start later or end earlier than others (NaN before its first and after its last
quote), never have a gap in between.

``prices["close"]`` is then a dates x symbols frame of closes.
"""

from __future__ import annotations

import pandas as pd

from research_lib.errors import DataValidationError

FIELDS = ("open", "high", "low", "close", "volume")


def canonical_frame(fields: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Assemble per-field (dates x symbols) frames into the canonical frame.

    Parameters
    ----------
    fields : mapping of field name to a frame indexed by date with one column per symbol.
        ``close`` is required; unknown field names are refused.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown price fields {sorted(unknown)}; valid fields: {list(FIELDS)}")
    if "close" not in fields:
        raise ValueError("a price frame needs a 'close' field")
    symbols = list(fields["close"].columns)
    parts = {}
    for name in FIELDS:
        if name in fields:
            parts[name] = fields[name].reindex(columns=symbols).astype("float64")
    frame = pd.concat(parts, axis=1, names=["field", "symbol"])
    frame.index = pd.DatetimeIndex(frame.index).astype("datetime64[ns]").rename("date")
    return frame


def symbols_of(prices: pd.DataFrame) -> list[str]:
    """The symbols of a canonical frame, in column order."""
    return list(prices["close"].columns)


def select(prices: pd.DataFrame, symbols: list[str] | None = None, start=None, end=None) -> pd.DataFrame:
    """Rows from ``start`` to ``end`` (inclusive) and the given symbols, in that order."""
    out = prices.loc[slice(pd.Timestamp(start) if start else None, pd.Timestamp(end) if end else None)]
    if symbols is not None:
        fields = out.columns.get_level_values("field").unique()
        out = out.reindex(columns=pd.MultiIndex.from_product([fields, symbols], names=["field", "symbol"]))
    return out


def bars_frame(table: pd.DataFrame, symbols: list[str], source: str) -> pd.DataFrame:
    """One bar per row (columns ``symbol``, ``date`` and the fields) -> canonical frame over ``symbols``.

    Exact repeats of a row are dropped; two different bars of a symbol on one date raise
    ``DataValidationError`` naming them (there is no right one to keep).
    """
    table = table.astype({f: "float64" for f in FIELDS if f in table}).drop_duplicates()
    clash = table[table.duplicated(["symbol", "date"], keep=False)]
    if len(clash):
        first = clash.iloc[0]
        raise DataValidationError([
            f"{source} returned {int((clash['symbol'] == first['symbol']).sum())} different bars for "
            f"{first['symbol']} on {first['date']:%Y-%m-%d} ({clash[['symbol', 'date']].drop_duplicates().shape[0]} "
            "symbol-dates in all); re-fetch with data.refresh: true, and report it to the data vendor if it persists."
        ])
    fields = {f: table.pivot(index="date", columns="symbol", values=f).reindex(columns=symbols).sort_index()
              for f in FIELDS if f in table}
    return canonical_frame(fields)
