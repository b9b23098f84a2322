"""Your own price files: every defect is a DataValidationError naming the file, the line (CSV)
or row (parquet), the symbol and the value, in our words (never a library's); dates must be
sessions of the exchange calendar that have closed.

The files are generated (CSV and parquet, long and wide; parquet written with and without
its index, of every kind), then one defect is planted at a drawn place; the expected message
is derived from what was planted, not from the reader.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import dataclasses
import datetime as dt
import gzip
import io
import json
import lzma
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.config import load_config
from research_lib.data import BUNDLED_START, BUNDLED_SYMBOLS, load_prices
from research_lib.errors import ConfigError, DataValidationError
from research_lib.stages import RunFolder
from tests.conftest import REPO

# Text of pandas, pyarrow, the csv module or Python that must never reach a user.
RAW_TEXT = ("pyarrow", "C error", "FieldRef", "Traceback", "Error tokenizing", "__index_level", "Errno 2", "_csv.Error")

# The NYSE's published holidays of 2021 (New Year's Day 2022 fell on a Saturday: 2021-12-31 traded).
HOLIDAYS_2021 = {dt.date(2021, 1, 1), dt.date(2021, 1, 18), dt.date(2021, 2, 15), dt.date(2021, 4, 2),
                 dt.date(2021, 5, 31), dt.date(2021, 7, 5), dt.date(2021, 9, 6), dt.date(2021, 11, 25),
                 dt.date(2021, 12, 24)}
DAYS_2021 = [dt.date(2021, 1, 1) + dt.timedelta(days=i) for i in range(365)]
SESSIONS_2021 = [d for d in DAYS_2021 if d.weekday() < 5 and d not in HOLIDAYS_2021]
OFF_2021 = [d for d in DAYS_2021 if d not in SESSIONS_2021]
TICKERS = ["AAA", "BRK.B", "^IX", "LOW", "Zz9"]  # LOW: a real ticker spelled like a field
FAST = settings(max_examples=20, deadline=None, derandomize=True)
# How a parquet file keeps its index: not at all (index=False), pandas' default (a RangeIndex kept
# in the metadata only), a RangeIndex kept as a column, a filtered frame's integers, or the dates (wide: a DatetimeIndex named
# date; long: a (date, symbol) MultiIndex); "unnamed dates": a DatetimeIndex without a name.
INDEXES = ("none", "range", "offset range", "filtered", "dates")
ALL_INDEXES = (*INDEXES, "unnamed dates")


@dataclasses.dataclass(frozen=True)
class Case:
    """A clean price file: ``layout`` long or wide, ``fmt`` csv or parquet."""

    layout: str
    fmt: str
    symbols: tuple[str, ...]
    dates: tuple[dt.date, ...]
    seed: int
    index: str = "none"  # parquet only: see INDEXES

    def closes(self) -> np.ndarray:
        """dates x symbols, moves of at most 5 % a day: a clean file passes every check."""
        moves = np.random.default_rng(self.seed).uniform(-0.05, 0.05, (len(self.dates), len(self.symbols)))
        return np.round(50.0 * np.cumprod(1.0 + moves, axis=0), 4)

    def table(self) -> tuple[list[str], list[list]]:
        """Header and rows (typed cells); long rows are date-major, one per date and symbol."""
        closes = self.closes()
        if self.layout == "wide":
            return ["date", *self.symbols], [[d, *map(float, closes[i])] for i, d in enumerate(self.dates)]
        rows = [[d, s, float(c * 0.99), float(c * 1.01), float(c), float(1000 + i)]
                for i, d in enumerate(self.dates) for s, c in zip(self.symbols, closes[i])]
        return ["date", "symbol", "low", "high", "close", "volume"], rows

    def place(self, row: int) -> str:
        return f"line {row + 2}" if self.fmt == "csv" else f"row {row + 1}"

    def symbol_at(self, row: int, column: int) -> str:
        """The symbol of a value cell."""
        return self.symbols[row % len(self.symbols)] if self.layout == "long" else self.symbols[column - 1]


def render(case: Case, header: list[str], rows: list[list], encoding: str = "utf-8") -> bytes:
    """The file's bytes: CSV text, or parquet where a column holding any text is all text, its
    index kept as ``case.index`` says (repeated names: written by pyarrow, which allows them)."""
    if case.fmt == "csv":
        cells = [[_text(v) for v in row] for row in rows]
        return "\n".join(",".join(_quoted(c) for c in line) for line in [header, *cells]).encode(encoding) + b"\n"
    columns = []
    for j in range(len(header)):
        values = [row[j] for row in rows]
        if any(isinstance(v, str) for v in values):
            values = [None if v is None else _text(v) for v in values]
        columns.append(pd.Series(values, dtype=None if values else "float64"))
    buffer = io.BytesIO()
    if len(set(header)) < len(header):
        pq.write_table(pa.Table.from_arrays([pa.array(c) for c in columns], names=header), buffer)
        return buffer.getvalue()
    frame = _indexed(pd.DataFrame(dict(zip(header, columns))), case.index)
    frame.to_parquet(buffer, index={"none": False, "range": None}.get(case.index, True))  # None: pandas' default
    return buffer.getvalue()


def _indexed(frame: pd.DataFrame, index: str) -> pd.DataFrame:
    n = len(frame)
    if index == "offset range":
        return frame.set_axis(pd.RangeIndex(5, 5 + n))
    if index == "filtered":
        return frame.set_axis(pd.Index(np.arange(n) * 3 + 2))
    if index == "dates":
        return frame.set_index([c for c in ("date", "symbol") if c in frame.columns])
    if index == "unnamed dates":
        return frame.set_axis(pd.DatetimeIndex(frame.pop("date")).rename(None))
    return frame


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dt.date, pd.Timestamp)):
        return f"{value:%Y-%m-%d}"
    return repr(value) if isinstance(value, float) else str(value)


def _quoted(cell: str) -> str:
    return f'"{cell}"' if "," in cell else cell


@st.composite
def cases(draw, layouts=("long", "wide"), fmts=("csv", "parquet"), min_dates=2, indexes=INDEXES) -> Case:
    dates = draw(st.lists(st.sampled_from(SESSIONS_2021), min_size=min_dates, max_size=6, unique=True))
    layout, fmt = draw(st.sampled_from(layouts)), draw(st.sampled_from(fmts))
    index = draw(st.sampled_from([i for i in indexes if layout == "wide" or i != "unnamed dates"])) if fmt == "parquet" else "none"
    return Case(layout, fmt, tuple(draw(st.lists(st.sampled_from(TICKERS), min_size=1, max_size=3, unique=True))),
                tuple(sorted(dates)), draw(st.integers(0, 2**32 - 1)), index)


def load(content: bytes, fmt: str, folder: Path, **kwargs) -> pd.DataFrame:
    path = folder / f"prices.{fmt}"
    path.write_bytes(content)
    return load_prices("file", path=path, snapshot_dir=folder / "snap", **kwargs)


def refused(content: bytes, fmt: str, **kwargs) -> str:
    """The message of the DataValidationError a load of ``content`` raises, checked to be in our
    words and to name the file; nothing is written."""
    with tempfile.TemporaryDirectory() as folder:
        with pytest.raises(DataValidationError, match=re.escape(f"prices.{fmt}")) as caught:
            load(content, fmt, Path(folder), **kwargs)
        assert not (Path(folder) / "snap").exists(), "nothing is written when a load fails"
    return ours(str(caught.value))


def ours(message: str) -> str:
    """``message``, checked to hold no text of the libraries we use."""
    leaked = [raw for raw in RAW_TEXT if raw in message]
    assert not leaked, f"raw library text {leaked} in: {message}"
    return message


# ----------------------------------------------------------------------------- the defects
# Each plants one defect in a drawn case and returns (file bytes, fragments the message must hold).


def _empty(case, header, rows, data):
    return data.draw(st.sampled_from([b"", b"\n", b" \r\n\n", codecs.BOM_UTF8])), ["is empty ("]


def _header_only(case, header, rows, data):
    return render(case, header, []), ["has no rows (only the header: date"]


def _value_cell(case, header, rows, data) -> tuple[int, int, str]:
    """A drawn (row, column) of a price or volume and the field it holds."""
    row = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.integers(1, len(header) - 1).filter(lambda j: header[j] != "symbol"))
    return row, column, "close" if case.layout == "wide" else header[column]


def _plant_text(text: st.SearchStrategy[str], fragment: str):
    def plant(case, header, rows, data):
        row, column, field = _value_cell(case, header, rows, data)
        cell = data.draw(text)
        rows[row][column] = cell
        return render(case, header, rows), [case.place(row), f"{case.symbol_at(row, column)} {field} {cell!r} is not a number",
                                            fragment]
    return plant


def _not_utf8(case, header, rows, data):
    row, column, _ = _value_cell(case, header, rows, data)
    rows[row][column] = f"{rows[row][column]}é"
    return render(case, header, rows, encoding="latin-1"), [f"is not UTF-8 text: byte b'\\xe9' on {case.place(row)}"]


def _truncated(case, header, rows, data):
    whole = render(case, header, rows)
    return whole[:data.draw(st.integers(1, len(whole) - 1))], ["cannot be read as parquet", "Write it again"]


def _zoned_date(case, header, rows, data):
    if case.fmt == "parquet":
        zone = data.draw(st.sampled_from(["UTC", "America/New_York", "Asia/Tokyo"]))
        for row in rows:
            row[0] = pd.Timestamp(row[0]).tz_localize(zone)
        return render(case, header, rows), ["row 1: date", "carries a time zone"]
    row = data.draw(st.integers(0, len(rows) - 1))
    rows[row][0] = f"{rows[row][0]:%Y-%m-%d}T00:00:00{data.draw(st.sampled_from(['Z', '+01:00', '-05:00', '+05:30']))}"
    return render(case, header, rows), [f"{case.place(row)}: date {rows[row][0]!r} carries a time zone"]


DATE_FIX = "write dates as YYYY-MM-DD (e.g. 2021-01-04)"


def _impossible_date(case, header, rows, data):
    year, month, day = data.draw(st.tuples(st.integers(2015, 2021), st.integers(0, 13), st.integers(0, 32)).filter(_no_such_day))
    row = data.draw(st.integers(0, len(rows) - 1))
    rows[row][0] = f"{year:04d}-{month:02d}-{day:02d}"
    return render(case, header, rows), [f"{case.place(row)}: date {rows[row][0]!r} is not a date", DATE_FIX]


# Dates a spreadsheet or a script may write, none of them YYYY-MM-DD: month-first, day-first, named
# months, other separators, digits only, a time of day, a time zone; each with its reason.
NOT_ISO = {
    "%m/%d/%Y": "is not a date in the form YYYY-MM-DD", "%d/%m/%Y": "is not a date in the form YYYY-MM-DD",
    "%b %d, %Y": "is not a date in the form YYYY-MM-DD", "%d-%b-%y": "is not a date in the form YYYY-MM-DD",
    "%Y.%m.%d": "is not a date in the form YYYY-MM-DD", "%Y%m%d": "is not a date in the form YYYY-MM-DD",
    "%Y/%m/%d": "is not a date in the form YYYY-MM-DD", "%d.%m.%Y": "is not a date in the form YYYY-MM-DD",
    "%y-%m-%d": "is not a date in the form YYYY-MM-DD", "%Y-%m-%dT16:00:00": "has a time of day",
    "%Y-%m-%d 09:30": "has a time of day", "%Y-%m-%dT00:00:00Z": "carries a time zone",
    "%Y-%m-%d 00:00:00+01:00": "carries a time zone",
}


def _not_iso_date(case, header, rows, data):
    fmt = data.draw(st.sampled_from(sorted(NOT_ISO)))
    row = data.draw(st.integers(0, len(rows) - 1))
    rows[row][0] = f"{rows[row][0]:{fmt}}"
    return render(case, header, rows), [f"{case.place(row)}: date {rows[row][0]!r} {NOT_ISO[fmt]}", DATE_FIX]


def _text_dates_in_parquet(case, header, rows, data):
    for row in rows:
        row[0] = _text(row[0])
    return render(case, header, rows), [f"row 1: date {rows[0][0]!r} is text, not a date", "date or timestamp type"]


def _no_such_day(ymd) -> bool:
    try:
        dt.date(*ymd)
    except ValueError:
        return True
    return False


def _off_calendar(case, header, rows, data):
    off = data.draw(st.sampled_from([d for d in OFF_2021 if d not in case.dates]))
    case = dataclasses.replace(case, dates=tuple(sorted({*case.dates, off})))
    return render(case, *case.table()), ["has 1 dates that are not XNYS sessions", f"{off:%Y-%m-%d} ({off:%a})"]


def _future_date(case, header, rows, data):
    later = dt.date.today() + dt.timedelta(days=data.draw(st.integers(2, 4000)))
    case = dataclasses.replace(case, dates=(*case.dates, later))
    return render(case, *case.table()), ["1 dates whose session has not closed yet", f"{later:%Y-%m-%d}"]


def _bad_bar(case, header, rows, data):
    row = data.draw(st.integers(0, len(rows) - 1))
    low, high, close = rows[row][2:5]
    factor = data.draw(st.floats(1.01, 1.5))
    kind = data.draw(st.sampled_from(["high below low", "close above high", "close below low"]))
    if kind == "high below low":
        rows[row][3] = high = low / factor
        expected = f"low {low:g} above high {high:g}"
    elif kind == "close above high":
        rows[row][4] = close = high * factor
        expected = f"close {close:g} above high {high:g}"
    else:
        rows[row][4] = close = low / factor
        expected = f"low {low:g} above close {close:g}"
    return render(case, header, rows), [f"{case.symbols[row % len(case.symbols)]}: {expected} on {rows[row][0]:%Y-%m-%d}"]


def _duplicated_column(case, header, rows, data):
    column = data.draw(st.integers(1, len(header) - 1))
    at = data.draw(st.integers(1, len(header)))
    header.insert(at, header[column])
    for row in rows:
        row.insert(at, row[column])
    return render(case, header, rows), [f"has the column {header[at]!r} twice"]


def _no_symbol_column(case, header, rows, data):
    for row in rows:
        del row[1]
    return render(case, header[:1] + header[2:], rows), ["but no 'symbol' column. A long file needs date, symbol, close"]


def _symbol_column_misnamed(case, header, rows, data):
    header[1] = data.draw(st.sampled_from(["ticker", "Ticker", "sym", "Sym", "tickers", "symbols"]))
    return render(case, header, rows), [f"has no 'symbol' column: rename column {header[1]!r} to 'symbol'"]


def _unclosed_quote(case, header, rows, data):
    row, column, _ = _value_cell(case, header, rows, data)
    text = render(case, header, rows).decode()
    lines = text.split("\n")
    cells = lines[row + 1].split(",")
    cells[column] = '"' + cells[column]
    lines[row + 1] = ",".join(cells)
    return "\n".join(lines).encode(), [f"{case.place(row)}: a quote opened on this line is never closed"]


def _huge_cell(case, header, rows, data):
    row = data.draw(st.integers(0, len(rows) - 1))
    column = data.draw(st.integers(1, len(header) - 1))
    rows[row][column] = data.draw(st.sampled_from(["x", "1", "A\x85B "])) * (csv.field_size_limit() + 1)
    return render(case, header, rows), [f"{case.place(row)}: a cell longer than {csv.field_size_limit():,} characters"]


COMPRESSORS = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}


def _compressed(case, header, rows, data):
    kind = data.draw(st.sampled_from([*COMPRESSORS, "zip"]))
    whole = render(case, header, rows)
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"prices.{case.fmt}", whole)
        return buffer.getvalue(), ["is a zip archive or an Excel workbook; unzip it"]
    return COMPRESSORS[kind](whole), [f"is compressed ({kind}); decompress it first"]


def _ragged_line(case, header, rows, data):
    row = data.draw(st.integers(0, len(rows) - 1))
    rows[row].append(data.draw(st.sampled_from(["1.0", "x"])))  # a trailing empty field loses nothing: accepted
    return render(case, header, rows), [f"{case.place(row)}: {len(header) + 1} fields where the header has {len(header)}"]


def _missing_date(case, header, rows, data):
    row = data.draw(st.integers(0, len(rows) - 1))
    rows[row][0] = None
    return render(case, header, rows), [f"{case.place(row)}: no date"]


def _repeated_date(case, header, rows, data):
    row = data.draw(st.integers(1, len(rows) - 1))
    rows[row][0] = rows[row - 1][0]
    return render(case, header, rows), [f"date {rows[row][0]:%Y-%m-%d} is on more than one row "
                                        f"({case.place(row - 1)}, {case.place(row)})"]


def _unnamed_column(case, header, rows, data):
    for i, row in enumerate(rows):
        row.insert(0, i)
    return render(case, ["", *header], rows), ["column 1 has no name", "index=False"]


def _year_typo(case, header, rows, data):
    row = data.draw(st.integers(0, len(rows) - 1))
    rows[row][0] = rows[row][0].replace(year=rows[row][0].year + data.draw(st.sampled_from([-300, 1000, 7000])))
    return render(case, header, rows), [f"{case.place(row)}: date", f"is in the year {rows[row][0].year}"]


def _numeric_dates(case, header, rows, data):
    for row in rows:
        row[0] = int(f"{row[0]:%Y%m%d}")
    return render(case, header, rows), [f"row 1: date {rows[0][0]!r} is a number, not a date"]


def _boolean_prices(case, header, rows, data):
    row, column, field = _value_cell(case, header, rows, data)
    for r in rows:
        r[column] = bool(r[column] > 50)
    return render(case, header, rows), [f"row 1: {case.symbol_at(0, column)} {field} holds bool values, not numbers"]


BOTH, CSV, PARQUET = ("csv", "parquet"), ("csv",), ("parquet",)
LONG, WIDE, ANY = ("long",), ("wide",), ("long", "wide")
WORDS = st.text("abcdfghjklmopqrstuvwxyz", min_size=1, max_size=6)  # no e, i, n: never inf, nan or 1e5
DEFECTS = {  # name: (defect, layouts, formats)
    "empty file": (_empty, ANY, BOTH),
    "header without rows": (_header_only, ANY, BOTH),
    "bytes that are not UTF-8": (_not_utf8, ANY, CSV),
    "truncated parquet": (_truncated, ANY, PARQUET),
    "text in a price column": (_plant_text(WORDS, "write a plain number"), ANY, BOTH),
    "thousands separators": (_plant_text(st.integers(1000, 10**9).map(lambda n: f"{n:,}.5"), "remove the thousands separators"),
                             ANY, BOTH),
    "decimal comma": (_plant_text(st.tuples(st.integers(1, 999), st.integers(1, 99)).map(lambda t: f"{t[0]},{t[1]}"),
                                  "use a dot for decimals"), ANY, BOTH),
    "timezone-aware dates": (_zoned_date, ANY, BOTH),
    "impossible date": (_impossible_date, ANY, CSV),
    "date not written YYYY-MM-DD": (_not_iso_date, ANY, CSV),
    "text dates in a parquet file": (_text_dates_in_parquet, ANY, PARQUET),
    "weekend or holiday": (_off_calendar, ANY, BOTH),
    "date after today": (_future_date, ANY, BOTH),
    "high < low, close outside [low, high]": (_bad_bar, LONG, BOTH),
    "duplicated column name": (_duplicated_column, ANY, BOTH),
    "long file without a symbol column": (_no_symbol_column, LONG, BOTH),
    "symbol column under another name": (_symbol_column_misnamed, LONG, BOTH),
    "unclosed quote": (_unclosed_quote, ANY, CSV),
    "cell over the csv module's field limit": (_huge_cell, ANY, CSV),
    "compressed file or archive": (_compressed, ANY, BOTH),
    "line with an extra field": (_ragged_line, ANY, CSV),
    "missing date": (_missing_date, ANY, BOTH),
    "repeated date in a wide file": (_repeated_date, WIDE, BOTH),
    "unnamed index column": (_unnamed_column, ANY, CSV),
    "year typo": (_year_typo, ANY, BOTH),
    "dates written as numbers": (_numeric_dates, ANY, PARQUET),
    "booleans in a price column": (_boolean_prices, ANY, PARQUET),
}


@pytest.mark.parametrize("name", DEFECTS)
@FAST
@given(data=st.data())
def test_every_defect_of_a_file_is_a_data_validation_error_naming_file_place_symbol_and_value(name, data):
    defect, layouts, fmts = DEFECTS[name]
    case = data.draw(cases(layouts, fmts))
    header, rows = case.table()
    content, fragments = defect(case, header, rows, data)
    message = refused(content, case.fmt)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"


CSV_ALPHABET = st.sampled_from(list('date,symbolclose"\n\r;\t 0123456789.-+:/TZéAAA\x00\x85\u2028\''))
HEADER_NAME = st.text(st.sampled_from(list('AB x,"é\t')), max_size=4)  # spaces, quotes, commas; may be empty


def _header_cell(name: str, style: str) -> str:
    """``name`` written as a CSV header cell: bare, quoted (a quote inside written twice), or quoted
    after spaces."""
    quoted = '"' + name.replace('"', '""') + '"'
    return {"bare": name, "quoted": quoted, "spaced": "  " + quoted}[style]


@st.composite
def headed_csv(draw, styles=("bare", "quoted", "spaced")) -> tuple[bytes, list[str]]:
    """A wide CSV whose header is generated (repeats and empty names included), and its names."""
    names = draw(st.lists(HEADER_NAME, min_size=1, max_size=4))
    header = ",".join(["date", *(_header_cell(n, draw(st.sampled_from(styles))) for n in names)])
    body = [f"{d:%Y-%m-%d}," + ",".join(f"{j + 1}.{i}" for j in range(len(names))) for i, d in enumerate(SESSIONS_2021[:2])]
    return "\n".join([header, *body, ""]).encode(), names


@settings(max_examples=300, deadline=None, derandomize=True)
@given(fmt=st.sampled_from(["csv", "parquet"]), content=st.one_of(
    st.binary(max_size=200),
    st.text(CSV_ALPHABET, max_size=120).map(lambda t: ("date,AAA\n" + t).encode()),
    st.text(CSV_ALPHABET, max_size=120).map(lambda t: ("date,symbol,close\n2021-01-04,A,1\n" + t).encode()),
    headed_csv().map(lambda made: made[0]),
))
def test_whatever_the_bytes_a_load_gives_prices_or_a_data_validation_error(fmt, content):
    """Never a raw pandas, pyarrow, csv or UnicodeDecodeError, nor their text: fuzzed bytes, near-CSV
    text and generated headers."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            prices = load(content, fmt, Path(folder))
        except DataValidationError as err:
            assert f"prices.{fmt}" in ours(str(err))
        else:
            assert len(prices) and prices.index.is_monotonic_increasing


@settings(max_examples=150, deadline=None, derandomize=True)
@given(made=headed_csv(styles=("quoted", "spaced")))
def test_a_header_is_read_like_the_body(made):
    """A header cell is a symbol as the CSV rules read it, quotes and spaces before them included:
    ``date, "A,B"`` names A,B; an empty or repeated name is refused."""
    content, names = made
    symbols = [n.strip() for n in names]
    if "" in symbols:
        message = refused(content, "csv")
        assert f"column {symbols.index('') + 2} has no name" in message, message
        return
    repeated = next((s for i, s in enumerate(symbols) if s in symbols[:i]), None)
    if repeated is not None:
        message = refused(content, "csv")
        assert f"has the column {repeated!r} twice" in message, message
        return
    with tempfile.TemporaryDirectory() as folder:
        prices = load(content, "csv", Path(folder))
    assert list(prices["close"].columns) == symbols
    assert prices["close"].iloc[1].tolist() == [j + 1.1 for j in range(len(symbols))]


def assert_holds_exactly(case: Case, prices: pd.DataFrame, symbols: list[str] | None = None) -> None:
    """``prices`` hold the case's sessions and closes (of ``symbols``, else all), and nothing else."""
    dates = pd.DatetimeIndex(case.dates)
    order = list(case.symbols) if case.layout == "wide" else sorted(case.symbols)
    expected = pd.DataFrame(case.closes(), index=dates, columns=list(case.symbols))[symbols or order]
    assert list(prices.index) == list(dates) and list(prices["close"].columns) == list(expected.columns)
    np.testing.assert_array_equal(prices["close"].to_numpy(), expected.to_numpy())
    if case.layout == "long" and symbols is None:
        np.testing.assert_allclose(prices["high"].to_numpy(), expected.to_numpy() * 1.01)


@pytest.mark.parametrize("fmt, index", [("csv", "none"), *(("parquet", index) for index in ALL_INDEXES)])
@settings(max_examples=12, deadline=None, derandomize=True)
@given(data=st.data())
def test_a_clean_file_loads_exactly_what_it_holds(fmt, index, data):
    """Whatever index a parquet file was saved with: row numbers are dropped (never a symbol
    'index'), a date index is the dates."""
    layouts = ("wide",) if index == "unnamed dates" else ("long", "wide")
    case = data.draw(cases(layouts, (fmt,), min_dates=1, indexes=(index,)))
    asked = [data.draw(st.sampled_from(case.symbols))]
    with tempfile.TemporaryDirectory() as folder:
        content = render(case, *case.table())
        everything = load(content, case.fmt, Path(folder))
        one = load(content, case.fmt, Path(folder), symbols=asked)
    assert_holds_exactly(case, everything)
    assert_holds_exactly(case, one, asked)


METADATA_DAMAGE = {  # how a parquet file's pandas metadata stops matching its columns
    "not JSON": lambda table: table.replace_schema_metadata({b"pandas": b"{not json"}),
    "null": lambda table: table.replace_schema_metadata({b"pandas": b"null"}),
    "wrong types": lambda table: table.replace_schema_metadata({b"pandas": json.dumps({"index_columns": 5, "columns": "x"}).encode()}),
    "an index column that is not there": lambda table: table.replace_schema_metadata({b"pandas": json.dumps(
        {"index_columns": ["nope"], "column_indexes": [], "columns": []}).encode()}),
    "the index column dropped, the metadata kept": lambda table: table.select(
        [n for n in table.column_names if not n.startswith("__index_level")]),
}


@pytest.mark.parametrize("index", INDEXES)
@pytest.mark.parametrize("damage", METADATA_DAMAGE)
@settings(max_examples=3, deadline=None, derandomize=True)
@given(data=st.data())
def test_a_parquet_whose_pandas_metadata_does_not_match_is_read_from_its_columns(damage, index, data):
    case = data.draw(cases(fmts=("parquet",), min_dates=1, indexes=(index,)))
    table = METADATA_DAMAGE[damage](pq.read_table(io.BytesIO(render(case, *case.table()))))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with tempfile.TemporaryDirectory() as folder:
        assert_holds_exactly(case, load(buffer.getvalue(), "parquet", Path(folder)))


def test_a_saved_canonical_frame_is_refused_with_how_to_save_one_level(tmp_path):
    case = Case("wide", "parquet", ("AAA", "LOW"), tuple(SESSIONS_2021[:3]), 2)
    frame = pd.concat({"close": pd.DataFrame(case.closes(), index=pd.DatetimeIndex(case.dates, name="date"),
                                             columns=list(case.symbols))}, axis=1, names=["field", "symbol"])
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    message = refused(buffer.getvalue(), "parquet")
    assert "has 2 levels of column names (a canonical frame, or a snapshot?); save one level: prices['close']" in message


def test_a_file_that_cannot_be_read_says_why(tmp_path, monkeypatch):
    dataset = tmp_path / "prices.parquet"  # a partitioned dataset is a folder
    dataset.mkdir()
    (dataset / "part-0.parquet").write_bytes(b"PAR1")
    locked = tmp_path / "locked.csv"
    locked.write_text("date,AAA\n2021-01-04,1\n")
    read_bytes = Path.read_bytes

    def denied(path: Path) -> bytes:
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    for path, expected in [(dataset, r"prices.parquet is a directory \(a partitioned parquet dataset\? give one file\)"),
                           (tmp_path / "nope.csv", r"nope.csv does not exist; set data.path"),
                           (locked, r"locked.csv cannot be read \(PermissionError: \[Errno 13\] Permission denied")]:
        with pytest.raises(DataValidationError, match=expected) as caught:
            load_prices("file", path=path, snapshot_dir=tmp_path / "snap")
        ours(str(caught.value))
    assert not (tmp_path / "snap").exists()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=cases(fmts=("csv",)), data=st.data())
def test_iso_dates_with_spaces_or_a_midnight_time_are_the_same_sessions(case, data):
    header, rows = case.table()
    for row in rows:
        row[0] = data.draw(st.sampled_from(["{:%Y-%m-%d}", "  {:%Y-%m-%d} ", "{:%Y-%m-%d}T00:00:00", "{:%Y-%m-%d} 00:00:00"])
                           ).format(row[0])
    with tempfile.TemporaryDirectory() as folder:
        assert_holds_exactly(case, load(render(case, header, rows), "csv", Path(folder)))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_long_files_symbols_are_kept_as_written(tmp_path, fmt):
    """Symbols that spell a missing value (NA is a ticker) are symbols, not gaps."""
    symbols = ("NA", "NULL", "None", "nan", "N/A", "null", "NaN", "#N/A")
    case = Case("long", fmt, symbols, tuple(SESSIONS_2021[:3]), 3)
    assert_holds_exactly(case, load(render(case, *case.table()), fmt, tmp_path))


@FAST
@given(case=cases(layouts=("wide",)), data=st.data())
def test_available_lists_every_symbol_of_the_file_and_did_you_mean_ignores_case(case, data):
    """A symbol asked in another case is pointed to the file's spelling; every symbol of the file
    is listed, one whose column is blank too."""
    header, rows = case.table()
    blank = data.draw(st.integers(1, len(header) - 1))
    for row in rows:
        row[blank] = None
    target = data.draw(st.sampled_from(case.symbols))
    asked = data.draw(st.sampled_from([target.lower(), target.swapcase()]))
    message = refused(render(case, header, rows), case.fmt, symbols=[asked])
    assert (f"has no symbols [{asked!r}]. {asked!r} -> did you mean {target!r}? Available: {', '.join(case.symbols)}. "
            "Fix data.symbols.") in message, message


# ----------------------------------------------------------------------------- the calendar


@settings(max_examples=60, deadline=None, derandomize=True)
@given(days=st.lists(st.sampled_from(DAYS_2021), min_size=1, max_size=12, unique=True), seed=st.integers(0, 99))
def test_only_sessions_of_the_calendar_are_accepted_unless_the_market_trades_every_day(days, seed):
    case = Case("wide", "csv", ("AAA", "BBB"), tuple(sorted(days)), seed)
    off = [d for d in case.dates if d.weekday() >= 5 or d in HOLIDAYS_2021]
    with tempfile.TemporaryDirectory() as folder:  # the XNYS load reuses the snapshot made under "24/7"
        content = render(case, *case.table())
        for calendar in ("24/7", None):
            assert list(load(content, "csv", Path(folder), calendar=calendar).index.date) == list(case.dates)
        if not off:
            assert list(load(content, "csv", Path(folder)).index.date) == list(case.dates)
            return
        shown = ", ".join(f"{d:%Y-%m-%d} \\({d:%a}\\)" for d in off[:10])
        with pytest.raises(DataValidationError, match=rf"prices.csv has {len(off)} dates that are not XNYS sessions "
                                                      rf"\(weekends, holidays .*\): {shown}.*set data.calendar") as caught:
            load(content, "csv", Path(folder), calendar="XNYS")
        ours(str(caught.value))


def _xnys_close(day: dt.date) -> pd.Timestamp:
    """The NYSE closes at 16:00 New York time; 13:00 on the day after Thanksgiving (2021-11-26)."""
    return pd.Timestamp(f"{day} {'13:00' if day == dt.date(2021, 11, 26) else '16:00'}", tz="America/New_York")


def _midnight_after(day: dt.date) -> pd.Timestamp:
    """A market open every day: its day ends at midnight UTC."""
    return pd.Timestamp(day + dt.timedelta(days=1), tz="UTC")


CLOSES = {"XNYS": (SESSIONS_2021, _xnys_close), "24/7": (DAYS_2021, _midnight_after), None: (DAYS_2021, _midnight_after)}


@settings(max_examples=80, deadline=None, derandomize=True)
@given(calendar=st.sampled_from(list(CLOSES)), data=st.data())
def test_a_date_is_accepted_only_once_its_session_has_closed(calendar, data):
    """Today's date before the close (or a later date) is refused with the dates listed and why;
    from the close on, it is accepted."""
    days, close = CLOSES[calendar]
    dates = sorted(data.draw(st.lists(st.sampled_from(days), min_size=1, max_size=5, unique=True)))
    minutes = data.draw(st.one_of(st.just(0), st.integers(-36 * 60, 36 * 60)))
    now = close(dates[-1]) + pd.Timedelta(minutes=minutes)
    case = Case("wide", "csv", ("AAA",), tuple(dates), 1)
    content = render(case, *case.table())
    unclosed = [d for d in dates if close(d) > now]
    if not unclosed:
        with tempfile.TemporaryDirectory() as folder:
            assert_holds_exactly(case, load(content, "csv", Path(folder), calendar=calendar, now=now.to_pydatetime()))
        return
    message = refused(content, "csv", calendar=calendar, now=now.to_pydatetime())
    shown = ", ".join(f"{d:%Y-%m-%d} ({d:%a})" for d in unclosed)
    assert f"has {len(unclosed)} dates whose session has not closed yet" in message, message
    assert f"): {shown}; a close is known only once its session has closed: remove those rows" in message, message


def test_a_calendar_is_a_known_exchange_code(tmp_path):
    with pytest.raises(ValueError, match=r"calendar 'xnys' is not an exchange_calendars code; use e.g. XNYS .*Did you mean 'XNYS'\?"):
        load_prices("bundled", ["KO"], snapshot_dir=tmp_path, calendar="xnys")
    with pytest.raises(ConfigError, match=r"data.calendar: .*is not an exchange_calendars code.*\(got 'xlon'\)"):
        load_config(REPO / "params" / "smoke.yaml", ["data.calendar=xlon"])
    for accepted in ("XLON", "24/7", "null"):
        load_config(REPO / "params" / "smoke.yaml", [f"data.calendar={accepted}"])


def test_data_before_the_calendars_first_session_says_so(tmp_path):
    case = Case("wide", "csv", ("AAA",), (dt.date(1995, 1, 4), dt.date(1995, 1, 5)), 0)
    with pytest.raises(DataValidationError, match=r"starts on 1995-01-04, before the first XTKS session the calendar knows "
                                                  r"\(1997-01-01\); set data.start") as caught:
        load(render(case, *case.table()), "csv", tmp_path, calendar="XTKS")
    ours(str(caught.value))


# ----------------------------------------------------------------------------- bundled defaults


def test_bundled_defaults_start_at_the_first_session_that_passes_validation(tmp_path):
    """``load_prices()`` works as is; one session earlier, some bundled series fails validation."""
    prices = load_prices(snapshot_dir=tmp_path)
    assert prices.index[0].date() == BUNDLED_START
    everything = load_prices("bundled", list(BUNDLED_SYMBOLS), snapshot_dir=tmp_path)
    assert everything.index[0].date() == BUNDLED_START
    session_before = BUNDLED_START - dt.timedelta(days=1)  # 1992-05-11, a Monday
    with pytest.raises(DataValidationError, match=r"bundled, RRC: stale series, the close did not change for 11 sessions"):
        load_prices("bundled", list(BUNDLED_SYMBOLS), session_before, snapshot_dir=tmp_path)


# ----------------------------------------------------------------------------- benchmark and VIX


def _file_config(tmp_path: Path, symbols: tuple[str, ...], overrides: list[str]):
    case = Case("wide", "csv", symbols, tuple(d for d in SESSIONS_2021[:30]), 7)
    path = tmp_path / "mine.csv"
    path.write_bytes(render(case, *case.table()))
    return load_config(REPO / "params" / "smoke.yaml", ["data.source=file", f"data.path={path}", "data.start=null",
                                                         "data.end=null", *overrides])


@pytest.mark.parametrize("universe", ["[AAA, BBB]", "null"])
@pytest.mark.parametrize("in_file, missing", [
    (("AAA", "BBB", "CCC", "^VIX"), ["data.benchmark"]),
    (("AAA", "BBB", "CCC", "SP500"), ["features.vix_symbol"]),
    (("AAA", "BBB", "CCC"), ["data.benchmark", "features.vix_symbol"]),
])
def test_a_file_without_the_benchmark_or_vix_names_that_parameter_and_lists_every_symbol(workspace, tmp_path, universe,
                                                                                         in_file, missing):
    config = _file_config(tmp_path, in_file, [f"data.symbols={universe}"])
    with pytest.raises(DataValidationError, match=re.escape(f"Available: {', '.join(in_file)}. Fix {' and '.join(missing)}.")) as caught:
        RunFolder(config, tmp_path / "run").prices
    ours(str(caught.value))


def test_a_file_with_the_benchmark_and_vix_loads_all_its_symbols(workspace, tmp_path):
    config = _file_config(tmp_path, ("AAA", "SP500", "BBB", "^VIX"), ["data.symbols=null"])
    assert list(RunFolder(config, tmp_path / "run").prices["close"].columns) == ["AAA", "SP500", "BBB", "^VIX"]
    config = _file_config(tmp_path, ("AAA", "SP500", "BBB", "^VIX"), ["data.symbols=[BBB]"])
    assert list(RunFolder(config, tmp_path / "run").prices["close"].columns) == ["BBB", "SP500", "^VIX"]
