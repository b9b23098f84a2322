"""Your own prices from a CSV or parquet file; every problem is named, with its fix.

Two layouts are accepted:

- long: columns ``date``, ``symbol``, ``close`` and optionally ``open, high, low, volume``
  (one row per date and symbol; these names may be capitalized);
- wide: a ``date`` column and one column of adjusted closes per symbol, named by the
  symbol (symbols keep their case: ``LOW`` is a ticker, ``low`` or ``Low`` a field).

A CSV must be UTF-8 text, comma-separated, with a header line and no line longer than
it. An empty cell, a cell missing at the end of a short line, or a usual marker of a
missing value (``NA``, ``NaN``, ``null``, ``#N/A`` ...: pandas' ``na_values``) is a
missing price. Dates are exchange-local session dates (``YYYY-MM-DD``, no time of day,
no time zone). Every refusal is a ``DataValidationError`` naming the file, the line (CSV)
or row (parquet), the symbol and the value; no error of pandas, pyarrow or the csv
module reaches the caller.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
from pathlib import Path
from typing import NoReturn

import pandas as pd

from research_lib.data._cells import numbers, refuse, session_dates
from research_lib.data._frame import FIELDS, canonical_frame

_MAGIC = {b"PAR1": "a parquet file: give it the .parquet suffix",
          b"PK\x03\x04": "a zip archive or an Excel workbook: export it as 'CSV UTF-8'"}


def read_price_file(path: Path):
    """Read a long or wide price file into ``(prices, None)``: a canonical frame of every
    symbol in the file (not yet validated) and no split record (prices are adjusted)."""
    path = Path(path)
    if not path.is_file():
        refuse(path, " does not exist; set data.path to a CSV or parquet file.")
    table = _named_columns(_read_table(path), path)
    if "symbol" in table.columns:
        fields = _long_fields(table, path)
    else:
        fields = {"close": _wide_closes(table, path)}
    return canonical_frame(fields), None


# ----------------------------------------------------------------------------- reading


def _read_table(path: Path) -> pd.DataFrame:
    """The file's cells, indexed by where each row is (``"line 7"`` in a CSV, ``"row 6"`` in a parquet)."""
    data = path.read_bytes()
    if not data.removeprefix(codecs.BOM_UTF8).strip():
        refuse(path, f" is empty ({len(data)} bytes); write a header line (date, then symbol and close, or one column "
                    "per symbol) and one row per date.")
    table = _read_parquet(path) if path.suffix.lower() == ".parquet" else _read_csv(path, data)
    table = table.dropna(how="all")
    if table.empty:
        refuse(path, f" has no rows (only the header: {', '.join(map(str, table.columns))}); add one row per date "
                    "(long layout: per date and symbol).")
    return table


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow

    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as err:
        refuse(path, f" cannot be read as parquet ({err}); it is truncated or not a parquet file: write it again "
                    "(df.to_parquet(path, index=False)), or save it as CSV with the .csv suffix.")
    if not isinstance(table.index, pd.RangeIndex):  # saved with its index: the dates are usually there
        table = table.reset_index()
    table.index = [f"row {i + 1}" for i in range(len(table))]
    return table


def _read_csv(path: Path, data: bytes) -> pd.DataFrame:
    text = _utf8(path, data)
    try:
        header = next((row for _, row in _records(text)), [])
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # a first row longer than the header
            table = pd.read_csv(io.StringIO(text), dtype=str, index_col=False, skipinitialspace=True)
    except (csv.Error, pd.errors.ParserError, pd.errors.ParserWarning) as err:
        _refuse_unparsable(path, text, err)
    table.columns = [name.strip() for name in header]  # pandas would rename a repeated or blank name
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if line.strip()][1:]
    if len(lines) != len(table):  # a quoted value spans lines: ask the csv module
        lines = [n for n, _ in _records(text)][1:]
    table.index = [f"line {n}" for n in lines] if len(lines) == len(table) else [f"row {i + 1}" for i in range(len(table))]
    return table


def _refuse_unparsable(path: Path, text: str, err: Exception) -> NoReturn:
    """Name the first line longer than the header, else quote the parser (an unclosed quote...)."""
    try:
        records = list(_records(text))
    except csv.Error:
        records = []
    header = records[0][1] if records else []
    line, fields = next(((n, len(row)) for n, row in records if len(row) > len(header)), (None, 0))
    if line is None:
        refuse(path, f" cannot be read as CSV ({str(err).strip()}); save it again as comma-separated UTF-8 text, "
                    "with every quote closed.")
    refuse(path, f", line {line}: {fields} fields where the header has {len(header)} ({', '.join(header)}); "
                "give every line one value per column (an empty cell for a missing value).")


def _utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        kind = next((f" It looks like {what}." for magic, what in _MAGIC.items() if data.startswith(magic)), "")
        refuse(path, f" is not UTF-8 text: byte {data[err.start:err.start + 1]!r} on line {line} cannot be decoded.{kind} "
                    "Save it as UTF-8 (Excel: 'CSV UTF-8'; or iconv -f latin1 -t utf-8).")


def _records(text: str):
    """``(line, fields)`` of each CSV record but blank lines (as pandas skips them), header included."""
    reader = csv.reader(io.StringIO(text, newline=""))
    return ((reader.line_num, row) for row in reader if row and (len(row) > 1 or row[0].strip()))


def _named_columns(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Lower-case the known names (``Date``, ``Symbol``; field names only in a long file) and refuse
    blank or repeated column names."""
    names = [str(c) for c in table.columns]
    long = any(n.lower() == "symbol" for n in names)
    known = {"date", "symbol", *FIELDS} if long else {"date"}
    names = [n.lower() if n.lower() in known else n for n in names]
    for i, name in enumerate(names):
        if not name:
            refuse(path, f": column {i + 1} has no name; name it after its symbol or remove it (an index written by "
                        "df.to_csv? use index=False).")
        if name in names[:i]:
            refuse(path, f" has the column {name!r} twice (columns {names.index(name) + 1} and {i + 1}); keep one column "
                        "per symbol (wide) or per field (long): the second one would be read as another series.")
    if "date" not in names:
        single = names[0] if len(names) == 1 else ""
        hint = " It seems separated by ';' or tabs: save it comma-separated." if re.search(r"[;\t]", single) else ""
        refuse(path, f" has no 'date' column (columns: {names}); name the session-date column 'date'.{hint}")
    return table.set_axis(names, axis=1)


# ----------------------------------------------------------------------------- layouts


def _long_fields(table: pd.DataFrame, path: Path) -> dict[str, pd.DataFrame]:
    if "close" not in table.columns:
        refuse(path, " is in long layout (it has 'symbol') but has no 'close' column; add the adjusted closes.")
    table = table.assign(date=session_dates(table["date"], path), symbol=_symbols(table["symbol"], path))
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


def _wide_closes(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    fields = [c for c in table.columns if c.lower() in FIELDS and c in (c.lower(), c.title())]
    if fields:
        refuse(path, f" has the field columns {fields} but no 'symbol' column. A long file needs date, symbol, close "
                    "(one row per date and symbol); a wide file has a date column and one column of closes per symbol, "
                    "named by the symbol.")
    dates = session_dates(table["date"], path)
    repeated = dates[dates.duplicated(keep=False)]
    if len(repeated):
        day = repeated.iloc[0]
        refuse(path, f": date {day:%Y-%m-%d} is on more than one row ({', '.join(repeated.index[repeated == day])}); "
                    "keep one row per date (a long file needs a 'symbol' column).")
    closes = {s: numbers(table[s], path, lambda place, s=s: f"{s} close").to_numpy() for s in table.columns if s != "date"}
    return pd.DataFrame(closes, index=dates.to_numpy())


def _symbols(column: pd.Series, path: Path) -> pd.Series:
    missing = column.index[column.isna()]
    if len(missing):
        refuse(path, f", {missing[0]}: no symbol ({len(missing)} such rows); give every row of a long file its symbol.")
    return column.astype(str).str.strip()
