"""Your own prices from a CSV or parquet file; every problem is named, with its fix.

Two layouts are accepted:

- long: columns ``date``, ``symbol``, ``close`` and optionally ``open, high, low, volume``
  (one row per date and symbol; these names may be capitalized);
- wide: a ``date`` column and one column of adjusted closes per symbol, named by the
  symbol (symbols keep their case: ``LOW`` is a ticker, ``low`` or ``Low`` a field).

A CSV must be UTF-8 text, comma-separated, with a header line and no line longer than
it (a trailing empty field aside); see ``_tables`` for how it is parsed. An empty cell, a
cell missing at the end of a short line, or a usual marker of a missing value (``NA``,
``NaN``, ``null``, ``#N/A`` ...: pandas' ``na_values``) is a missing price; a long file's
symbols are kept as written (``NA`` is a symbol). Dates are exchange-local session dates,
with no time of day and no time zone: ``YYYY-MM-DD`` text in a CSV (nothing else: no
month-first or day-first guess), date or timestamp columns in a parquet file. Every refusal
is a ``DataValidationError`` naming the file, the line (CSV) or row (parquet), the symbol
and the value; no error of pandas, pyarrow, the csv module or the file system reaches the
caller.
"""

from __future__ import annotations

import codecs
import re
import stat
from pathlib import Path

import pandas as pd

from research_lib.data._cells import numbers, refuse, refuse_repeated, session_dates
from research_lib.data._frame import FIELDS, canonical_frame
from research_lib.data._tables import read_table

# The version of how a file is read, part of its snapshot's key: raise it when the same bytes
# would now give other prices, so that snapshots made by an older reader are not reused.
READER_VERSION = 2
# Names a long file's symbol column is often given instead of ``symbol`` (lower or title case only:
# ``SYM`` or ``TICKER`` may be a ticker).
_SYMBOL_ALIASES = ("ticker", "tickers", "sym", "symbols")


def file_bytes(path: Path) -> bytes:
    """The bytes of the price file at ``path``; a missing, unreadable or special file (a directory,
    a pipe) is refused with what to do."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            refuse(path, " is a directory (a partitioned parquet dataset? give one file); set data.path to a CSV or "
                        "parquet file.")
        if not stat.S_ISREG(mode):
            refuse(path, " is not a regular file (a device or a pipe); set data.path to a CSV or parquet file.")
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        refuse(path, " does not exist; set data.path to a CSV or parquet file.")
    except OSError as err:
        refuse(path, f" cannot be read ({type(err).__name__}: {err}); check its permissions, or copy it where you "
                    "can read it.")


def read_price_file(path: Path, data: bytes):
    """Read the price file ``path`` whose bytes are ``data`` into ``(prices, None)``: a canonical
    frame of every symbol in the file (not yet validated) and no split record (prices are adjusted)."""
    path = Path(path)
    fix = "write a header line (date, then symbol and close, or one column per symbol) and one row per date."
    if not data.removeprefix(codecs.BOM_UTF8).strip():
        refuse(path, f" is empty ({len(data)} bytes); {fix}")
    table, text = read_table(path, data)
    if not len(table.columns):
        refuse(path, f" holds no column, only empty cells; {fix}")
    table = table.dropna(how="all")
    if table.empty:
        refuse(path, f" has no rows (only the header: {', '.join(map(str, table.columns))}); add one row per date "
                    "(long layout: per date and symbol).")
    table = _named_columns(table, path)
    if "symbol" in table.columns:
        fields = _long_fields(table, path, text)
    else:
        fields = {"close": _wide_closes(table, path, text)}
    return canonical_frame(fields), None


def _named_columns(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Lower-case the known names (``Date``, ``Symbol``; field names only in a long file) and refuse
    blank or repeated column names, and a symbol column under another name."""
    names = [str(c) for c in table.columns]
    long = any(n.lower() == "symbol" for n in names)
    known = {"date", "symbol", *FIELDS} if long else {"date"}
    names = [n.lower() if n.lower() in known else n for n in names]
    for i, name in enumerate(names):
        if not name:
            refuse(path, f": column {i + 1} has no name; name it after its symbol or remove it (an index written by "
                        "df.to_csv? use index=False).")
    refuse_repeated(path, names)
    alias = next((n for n in names if n in _SYMBOL_ALIASES or n.lower() in _SYMBOL_ALIASES and n == n.title()), None)
    if not long and alias:
        refuse(path, f" has no 'symbol' column: rename column {alias!r} to 'symbol' (a long file has the columns date, "
                    "symbol, close; a wide file a date column and one column of closes per symbol).")
    if "date" not in names:
        single = names[0] if len(names) == 1 else ""
        hint = " It seems separated by ';' or tabs: save it comma-separated." if re.search(r"[;\t]", single) else ""
        refuse(path, f" has no 'date' column (columns: {names}); name the session-date column 'date'.{hint}")
    return table.set_axis(names, axis=1)


# ----------------------------------------------------------------------------- layouts


def _long_fields(table: pd.DataFrame, path: Path, text: bool) -> dict[str, pd.DataFrame]:
    if "close" not in table.columns:
        refuse(path, " is in long layout (it has 'symbol') but has no 'close' column; add the adjusted closes.")
    table = table.assign(date=session_dates(table["date"], path, text=text), symbol=_symbols(table["symbol"], path))
    repeated = table[table.duplicated(["date", "symbol"], keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        places = repeated.index[(repeated["date"] == first["date"]) & (repeated["symbol"] == first["symbol"])]
        refuse(path, f": {first['symbol']} has more than one row on {first['date']:%Y-%m-%d} ({', '.join(places)}); "
                    "keep one row per date and symbol.")
    present = [f for f in FIELDS if f in table.columns]
    for field in present:
        table[field] = numbers(table[field], path, lambda place: f"{table.at[place, 'symbol']} {field}")
    return {f: table.pivot(index="date", columns="symbol", values=f) for f in present}


def _wide_closes(table: pd.DataFrame, path: Path, text: bool) -> pd.DataFrame:
    fields = [c for c in table.columns if c.lower() in FIELDS and c in (c.lower(), c.title())]
    if fields:
        refuse(path, f" has the field columns {fields} but no 'symbol' column. A long file needs date, symbol, close "
                    "(one row per date and symbol); a wide file has a date column and one column of closes per symbol, "
                    "named by the symbol.")
    dates = session_dates(table["date"], path, text=text)
    repeated = dates[dates.duplicated(keep=False)]
    if len(repeated):
        day = repeated.iloc[0]
        refuse(path, f": date {day:%Y-%m-%d} is on more than one row ({', '.join(repeated.index[repeated == day])}); "
                    "keep one row per date (a long file needs a 'symbol' column).")
    closes = {s: numbers(table[s], path, lambda place, s=s: f"{s} close").to_numpy() for s in table.columns if s != "date"}
    return pd.DataFrame(closes, index=dates.to_numpy())


def _symbols(column: pd.Series, path: Path) -> pd.Series:
    """A long file's symbols as text, kept as written (``NA`` or ``None`` is a symbol); an empty
    cell is refused."""
    missing = column.index[column.isna()]
    if len(missing):
        refuse(path, f", {missing[0]}: no symbol ({len(missing)} such rows); give every row of a long file its symbol.")
    return column.astype(str).str.strip()
