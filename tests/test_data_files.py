"""Your own price files: every defect is a DataValidationError naming the file, the line (CSV)
or row (parquet), the symbol and the value; dates must be sessions of the exchange calendar.

The files are generated (CSV and parquet, long and wide), then one defect is planted at a
drawn place; the expected message is derived from what was planted, not from the reader.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime as dt
import io
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.config import load_config
from research_lib.data import BUNDLED_START, BUNDLED_SYMBOLS, load_prices
from research_lib.errors import ConfigError, DataValidationError
from research_lib.run import run_prices
from tests.conftest import REPO

# The NYSE's published holidays of 2021 (New Year's Day 2022 fell on a Saturday: 2021-12-31 traded).
HOLIDAYS_2021 = {dt.date(2021, 1, 1), dt.date(2021, 1, 18), dt.date(2021, 2, 15), dt.date(2021, 4, 2),
                 dt.date(2021, 5, 31), dt.date(2021, 7, 5), dt.date(2021, 9, 6), dt.date(2021, 11, 25),
                 dt.date(2021, 12, 24)}
DAYS_2021 = [dt.date(2021, 1, 1) + dt.timedelta(days=i) for i in range(365)]
SESSIONS_2021 = [d for d in DAYS_2021 if d.weekday() < 5 and d not in HOLIDAYS_2021]
OFF_2021 = [d for d in DAYS_2021 if d not in SESSIONS_2021]
TICKERS = ["AAA", "BRK.B", "^IX", "LOW", "Zz9"]  # LOW: a real ticker spelled like a field
FAST = settings(max_examples=20, deadline=None, derandomize=True)


@dataclasses.dataclass(frozen=True)
class Case:
    """A clean price file: ``layout`` long or wide, ``fmt`` csv or parquet."""

    layout: str
    fmt: str
    symbols: tuple[str, ...]
    dates: tuple[dt.date, ...]
    seed: int

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
    """The file's bytes: CSV text, or parquet where a column holding any text is all text."""
    if case.fmt == "csv":
        cells = [[_text(v) for v in row] for row in rows]
        return "\n".join(",".join(_quoted(c) for c in line) for line in [header, *cells]).encode(encoding) + b"\n"
    columns = {}
    for j, name in enumerate(header):
        values = [row[j] for row in rows]
        if any(isinstance(v, str) for v in values):
            values = [None if v is None else _text(v) for v in values]
        columns[name] = pd.Series(values, dtype=None if values else "float64")
    buffer = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buffer, index=False)
    return buffer.getvalue()


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dt.date, pd.Timestamp)):
        return f"{value:%Y-%m-%d}"
    return repr(value) if isinstance(value, float) else str(value)


def _quoted(cell: str) -> str:
    return f'"{cell}"' if "," in cell else cell


@st.composite
def cases(draw, layouts=("long", "wide"), fmts=("csv", "parquet"), min_dates=2) -> Case:
    dates = draw(st.lists(st.sampled_from(SESSIONS_2021), min_size=min_dates, max_size=6, unique=True))
    return Case(draw(st.sampled_from(layouts)), draw(st.sampled_from(fmts)),
                tuple(draw(st.lists(st.sampled_from(TICKERS), min_size=1, max_size=3, unique=True))),
                tuple(sorted(dates)), draw(st.integers(0, 2**32 - 1)))


def load(content: bytes, fmt: str, folder: Path, **kwargs) -> pd.DataFrame:
    path = folder / f"prices.{fmt}"
    path.write_bytes(content)
    return load_prices("file", path=path, snapshot_dir=folder / "snap", **kwargs)


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
    return whole[:data.draw(st.integers(1, len(whole) - 1))], ["cannot be read as parquet", "write it again"]


def _zoned_date(case, header, rows, data):
    if case.fmt == "parquet":
        zone = data.draw(st.sampled_from(["UTC", "America/New_York", "Asia/Tokyo"]))
        for row in rows:
            row[0] = pd.Timestamp(row[0]).tz_localize(zone)
        return render(case, header, rows), ["row 1: date", "carries a time zone"]
    row = data.draw(st.integers(0, len(rows) - 1))
    rows[row][0] = f"{rows[row][0]:%Y-%m-%d}T00:00:00{data.draw(st.sampled_from(['Z', '+01:00', '-05:00', '+05:30']))}"
    return render(case, header, rows), [f"{case.place(row)}: date {rows[row][0]!r} carries a time zone"]


def _impossible_date(case, header, rows, data):
    year, month, day = data.draw(st.tuples(st.integers(2015, 2021), st.integers(0, 13), st.integers(0, 32)).filter(_no_such_day))
    row = data.draw(st.integers(0, len(rows) - 1))
    rows[row][0] = f"{year:04d}-{month:02d}-{day:02d}"
    for other in rows:  # parquet: a text column, as a spreadsheet export would have it
        other[0] = _text(other[0])
    return render(case, header, rows), [f"{case.place(row)}: date {rows[row][0]!r} is not a date"]


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
    return render(case, *case.table()), ["dates after today", f"{later:%Y-%m-%d}"]


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
    "impossible date": (_impossible_date, ANY, BOTH),
    "weekend or holiday": (_off_calendar, ANY, BOTH),
    "date after today": (_future_date, ANY, BOTH),
    "high < low, close outside [low, high]": (_bad_bar, LONG, BOTH),
    "duplicated column name": (_duplicated_column, ANY, CSV),
    "long file without a symbol column": (_no_symbol_column, LONG, BOTH),
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
    with tempfile.TemporaryDirectory() as folder:
        with pytest.raises(DataValidationError, match=re.escape(f"prices.{case.fmt}")) as caught:
            load(content, case.fmt, Path(folder))
        assert not (Path(folder) / "snap").exists(), "nothing is written when a load fails"
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"


CSV_ALPHABET = st.sampled_from(list('date,symbolclose"\n\r;\t 0123456789.-+:/TZéAAA\x00'))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(fmt=st.sampled_from(["csv", "parquet"]), content=st.one_of(
    st.binary(max_size=200),
    st.text(CSV_ALPHABET, max_size=120).map(lambda t: ("date,AAA\n" + t).encode()),
    st.text(CSV_ALPHABET, max_size=120).map(lambda t: ("date,symbol,close\n2021-01-04,A,1\n" + t).encode()),
))
def test_whatever_the_bytes_a_load_gives_prices_or_a_data_validation_error(fmt, content):
    """Never a raw pandas, pyarrow, csv or UnicodeDecodeError: fuzzed bytes and near-CSV text."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            prices = load(content, fmt, Path(folder))
        except DataValidationError as err:
            assert f"prices.{fmt}" in str(err)
        else:
            assert len(prices) and prices.index.is_monotonic_increasing


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=cases(min_dates=1), pick=st.integers(0, 2))
def test_a_clean_file_loads_exactly_what_it_holds(case, pick):
    asked = [case.symbols[pick % len(case.symbols)]]
    with tempfile.TemporaryDirectory() as folder:
        content = render(case, *case.table())
        everything = load(content, case.fmt, Path(folder))
        one = load(content, case.fmt, Path(folder), symbols=asked)
    dates = pd.DatetimeIndex(case.dates)
    wide_order = list(case.symbols) if case.layout == "wide" else sorted(case.symbols)
    expected = pd.DataFrame(case.closes(), index=dates, columns=list(case.symbols))[wide_order]
    np.testing.assert_array_equal(everything["close"].to_numpy(), expected.to_numpy())
    assert list(everything.index) == list(dates) and list(everything["close"].columns) == wide_order
    np.testing.assert_array_equal(one["close"].to_numpy(), expected[asked].to_numpy())
    if case.layout == "long":
        np.testing.assert_allclose(everything["high"].to_numpy(), expected.to_numpy() * 1.01)


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
                                                      rf"\(weekends, holidays .*\): {shown}.*set data.calendar"):
            load(content, "csv", Path(folder), calendar="XNYS")


@pytest.mark.parametrize("calendar", ["XNYS", "24/7", None])
def test_dates_after_today_are_refused_whatever_the_calendar(tmp_path, calendar):
    later = dt.date.today() + dt.timedelta(days=3)
    case = Case("wide", "csv", ("AAA",), (dt.date(2021, 1, 4), later), 0)
    content = render(case, *case.table())
    with pytest.raises(DataValidationError, match=rf"has 1 dates after today \(.*\): {later:%Y-%m-%d}.*remove those rows"):
        load(content, "csv", tmp_path, calendar=calendar)


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
                                                  r"\(1997-01-01\); set data.start"):
        load(render(case, *case.table()), "csv", tmp_path, calendar="XTKS")


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
    with pytest.raises(DataValidationError, match=re.escape(f"Available: {', '.join(in_file)}. Fix {' and '.join(missing)}.")):
        run_prices(config, tmp_path / "run")


def test_a_file_with_the_benchmark_and_vix_loads_all_its_symbols(workspace, tmp_path):
    config = _file_config(tmp_path, ("AAA", "SP500", "BBB", "^VIX"), ["data.symbols=null"])
    assert list(run_prices(config, tmp_path / "run")["close"].columns) == ["AAA", "SP500", "BBB", "^VIX"]
    config = _file_config(tmp_path, ("AAA", "SP500", "BBB", "^VIX"), ["data.symbols=[BBB]"])
    assert list(run_prices(config, tmp_path / "run")["close"].columns) == ["BBB", "SP500", "^VIX"]
