"""The cells of a price file, read by one parser per format, each row labelled by where it is.

- CSV: UTF-8 text read by the ``csv`` module alone (header and body alike: comma-separated,
  ``"`` quotes, a quote inside a quoted cell written twice, spaces before a cell ignored),
  strictly (an unclosed quote or text after a closing quote is refused with its line). Rows
  are labelled ``"line 7"`` (the line the record starts on); every cell is stripped text,
  ``<NA>`` when empty or missing at the end of a short line.
- parquet: read from its arrow schema and table. pandas' metadata is used only to tell which
  columns were the frame's index (it may be stale or broken: the table edited with pyarrow,
  written by another tool). An index is kept as a column only when it is the dates (an index
  named ``date`` or ``symbol`` in any case, or a datetime index); row numbers (a
  ``RangeIndex``, the integers of a filtered frame) are dropped. Rows are labelled ``"row 6"``.

Compressed files, archives and other binary formats are recognised by their first bytes and
refused with what to do.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import NoReturn

import pandas as pd
from pandas.api import types

from research_lib.data._cells import refuse, refuse_repeated

PARQUET_MAGIC = b"PAR1"
# First bytes of the formats a price file is sometimes saved in by mistake.
_FOREIGN = {
    b"\x1f\x8b": "is compressed (gzip); decompress it first (gunzip {name})",
    b"BZh": "is compressed (bzip2); decompress it first (bunzip2 {name})",
    b"\xfd7zXZ\x00": "is compressed (xz); decompress it first (unxz {name})",
    b"\x28\xb5\x2f\xfd": "is compressed (zstd); decompress it first (unzstd {name})",
    b"PK\x03\x04": "is a zip archive or an Excel workbook; unzip it, or export the sheet as 'CSV UTF-8'",
    b"ARROW1": "is an Arrow/Feather file; save it as parquet (df.to_parquet(path)) or CSV",
}
_KEPT_INDEX_NAMES = {"date", "symbol"}
_INDEX_COLUMN = re.compile(r"__index_level_\d+__")  # an index column pandas wrote, seen without its metadata


def read_table(path: Path, data: bytes) -> tuple[pd.DataFrame, bool]:
    """The file's cells, and whether they are text: parquet when ``data`` starts with ``PAR1`` or
    the suffix says so, else CSV."""
    for magic, what in _FOREIGN.items():
        if data.startswith(magic):
            refuse(path, f" {what.format(name=path.name)}; then set data.path to the CSV or parquet file.")
    if data.startswith(PARQUET_MAGIC) or path.suffix.lower() in (".parquet", ".pq"):
        return parquet_table(path, data), False
    return csv_table(path, data), True


# ----------------------------------------------------------------------------- CSV


def csv_table(path: Path, data: bytes) -> pd.DataFrame:
    """Text cells of a CSV file (stripped; ``NA`` when empty), columns named by its header line
    (repeats and blanks kept, for the caller to refuse), rows labelled by their line; blank lines
    and rows of empty cells skipped."""
    header, lines, rows = None, [], []
    for line, row in _records(path, _utf8(path, data)):
        if not "".join(row).strip():
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            continue
        if len(row) > len(header):
            if "".join(row[len(header):]).strip():
                refuse(path, f", line {line}: {len(row)} fields where the header has {len(header)} ({', '.join(header)}); "
                            "give every line one value per column (an empty cell for a missing value; quote a value "
                            'holding a comma: "1,5").')
            row = row[:len(header)]  # trailing empty fields (a comma at the end of the line) lose nothing
        rows.append(row + [""] * (len(header) - len(row)))
        lines.append(f"line {line}")
    header = header or []
    table = pd.DataFrame(rows, index=lines, columns=range(len(header)), dtype="string")
    table = table.apply(lambda cells: cells.str.strip().replace("", pd.NA))
    return table.set_axis(header, axis=1)


def _records(path: Path, text: str):
    """``(first line, fields)`` of each CSV record, read strictly; a malformed record is refused
    with the line it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            _refuse_record(path, line, str(err))
        yield line, row


def _refuse_record(path: Path, line: int, reason: str) -> NoReturn:
    if "field limit" in reason:
        limit = csv.field_size_limit()
        refuse(path, f", line {line}: a cell longer than {limit:,} characters (an unclosed quote?); close every quote, "
                    "and keep one price, date or symbol per cell.")
    if "end of data" in reason:
        refuse(path, f", line {line}: a quote opened on this line is never closed; close it (a quote inside a quoted "
                    'cell is written twice: "A""B").')
    refuse(path, f", line {line}: text after a closing quote (or a stray quote); quote whole cells (\"1,5\"), and write "
                'a quote inside a quoted cell twice ("A""B").')


def _utf8(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        hint = " It looks like a parquet file: give it the .parquet suffix." if data.startswith(PARQUET_MAGIC) else ""
        refuse(path, f" is not UTF-8 text: byte {data[err.start:err.start + 1]!r} on line {line} cannot be decoded.{hint} "
                    "Save it as UTF-8 (Excel: 'CSV UTF-8'; or iconv -f latin1 -t utf-8).")


# ----------------------------------------------------------------------------- parquet


def parquet_table(path: Path, data: bytes) -> pd.DataFrame:
    """Cells of a parquet file, its date index (if any) as a leading column, rows labelled ``"row 1"``..."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pyarrow.BufferReader(data))
        refuse_repeated(path, parquet.schema_arrow.names)  # pyarrow cannot select among same-named columns
        table = parquet.read()
    except (OSError, ValueError, pyarrow.ArrowException):
        refuse(path, " cannot be read as parquet: it is truncated or not a parquet file. Write it again "
                    "(df.to_parquet(path)), or save it as CSV with the .csv suffix.")
    metadata = _pandas_metadata(table)
    levels = metadata.get("column_indexes")
    if isinstance(levels, list) and len(levels) > 1:
        refuse(path, f" has {len(levels)} levels of column names (a canonical frame, or a snapshot?); save one level: "
                    "prices['close'] (wide) or prices.stack('symbol', future_stack=True).reset_index() (long).")
    index = _index_columns(table, metadata)
    try:
        frame = table.replace_schema_metadata(None).to_pandas()
    except (NotImplementedError, ValueError, TypeError, pyarrow.ArrowException):
        refuse(path, f" has columns that pandas cannot read ({', '.join(map(str, table.schema.types))}); write "
                    "dates as a date or timestamp column and prices as numbers.")
    frame = _with_dates_as_columns(frame, index)
    frame.index = [f"row {i + 1}" for i in range(len(frame))]
    return frame


def _pandas_metadata(table) -> dict:
    """What pandas wrote about the frame (its index, its column levels), or ``{}`` if nothing readable."""
    try:
        metadata = json.loads(table.schema.metadata[b"pandas"])
    except (TypeError, KeyError, ValueError):  # no metadata at all, none from pandas, or not JSON
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _index_columns(table, metadata: dict) -> list[str]:
    """The columns pandas wrote from a frame's index: those its metadata names, when they are there
    (it may be stale: the table edited with pyarrow), and those named ``__index_level_<n>__``."""
    named = metadata.get("index_columns")
    named = [n for n in named if isinstance(n, str)] if isinstance(named, list) else []
    return [c for c in table.column_names if c in named or _INDEX_COLUMN.fullmatch(c)]


def _with_dates_as_columns(frame: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """Keep the ``index`` columns that are the dates, as leading columns: one named date or symbol
    (any case), or one of datetimes, renamed ``date``, when no other column is the dates; drop the
    others (row numbers: a ``RangeIndex``, a filtered frame's integers)."""
    kept, names = [], {}
    data = [c for c in frame.columns if c not in index]
    for column in index:
        if column.lower() in _KEPT_INDEX_NAMES:
            kept.append(column)
        elif types.is_datetime64_any_dtype(frame[column]) and "date" not in {
                str(c).lower() for c in [*data, *kept, *names.values()]}:
            kept.append(column)
            names[column] = "date"
    return frame[[*kept, *data]].rename(columns=names)
