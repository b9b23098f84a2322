"""Cells of a price file: session dates and numbers, each refusal naming the file, the place
(``"line 7"`` of a CSV, ``"row 6"`` of a parquet: the column's index), the value and the fix."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pandas as pd
from pandas.api import types

from research_lib.errors import DataValidationError

_GROUPED = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")  # 1,234.5
# Text that means "no value" in a price cell: pandas' default na_values.
MISSING_MARKERS = frozenset({"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                             "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def refuse(path: Path, sentence: str) -> NoReturn:
    """Raise the ``DataValidationError`` of ``Price file <path><sentence>``."""
    raise DataValidationError([f"Price file {path}{sentence}"])


def refuse_repeated(path: Path, names: list[str]) -> None:
    """Refuse a column name that appears twice (the second would be read as another series)."""
    for i, name in enumerate(names):
        if name in names[:i]:
            refuse(path, f" has the column {name!r} twice (columns {names.index(name) + 1} and {i + 1}); keep one column "
                        "per symbol (wide) or per field (long): the second one would be read as another series.")


def session_dates(column: pd.Series, path: Path, *, text: bool) -> pd.Series:
    """Session dates (tz-naive midnight timestamps) of a date column, refusing the first missing,
    impossible, zoned, timed, non-ISO or out-of-range value.

    ``text``: the column is CSV text, where only ``YYYY-MM-DD`` (optionally followed by a
    midnight ``T00:00:00`` or `` 00:00:00``) is a date; otherwise (parquet) only date and
    timestamp types are.
    """
    column = _decoded(column)
    missing = column.index[column.isna()]
    if len(missing):
        refuse(path, f", {missing[0]}: no date ({len(missing)} such rows); give every row its session date.")
    if text:
        return _iso_dates(column, path)
    if types.is_datetime64_any_dtype(column):
        return _typed_dates(column, path)
    first = column.iloc[0]
    if isinstance(first, dt.date) and all(isinstance(v, dt.date) and not isinstance(v, dt.datetime) for v in column):
        years = column.map(lambda d: d.year)
        _refuse_date(path, years.index[~years.between(*_YEARS)], column, text=False)
        return pd.to_datetime(column).astype("datetime64[ns]")
    kind = ("a number" if types.is_numeric_dtype(column) or types.is_bool_dtype(column) else
            "text" if isinstance(first, str) else f"of type {type(first).__name__}")
    shown = repr(first) if isinstance(first, str) else str(first)
    refuse(path, f", {column.index[0]}: date {shown} is {kind}, not a date; a parquet date column must be of a date or "
                "timestamp type (df['date'] = pd.to_datetime(df['date'], format='%Y-%m-%d')).")


_ISO = r"\d{4}-\d{2}-\d{2}(?:[T ]00:00(?::00(?:\.0+)?)?)?"
_YEARS = (1800, 2200)  # a year outside is a typo (and outside the nanosecond timestamps pandas holds)
_ZONED = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+)?\s*(?:Z|UTC|[+-]\d{2}(?::?\d{2})?)", re.IGNORECASE)
_TIMED = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?")
_DATE_FIX = ("write dates as YYYY-MM-DD (e.g. 2021-01-04): exchange-local session dates, without a time of day or "
             "time zone.")


def _iso_dates(column: pd.Series, path: Path) -> pd.Series:
    text = column.astype("string").str.strip()
    shaped = text.str.fullmatch(_ISO).fillna(False).astype(bool)
    years = pd.to_numeric(text.str.slice(0, 4).where(shaped), errors="coerce")
    in_range = shaped & years.between(*_YEARS)
    parsed = pd.to_datetime(text.str.slice(0, 10).where(in_range), format="%Y-%m-%d", errors="coerce")
    _refuse_date(path, parsed.index[parsed.isna()], column, text=True)
    return parsed.astype("datetime64[ns]")


def _typed_dates(column: pd.Series, path: Path) -> pd.Series:
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        _refuse_date(path, column.index, column, text=False)
    bad = (column != column.dt.normalize()) | ~column.dt.year.between(*_YEARS)
    _refuse_date(path, column.index[bad.to_numpy()], column, text=False)
    return column.astype("datetime64[ns]")


def _refuse_date(path: Path, bad: pd.Index, column: pd.Series, *, text: bool) -> None:
    """Refuse the first of the ``bad`` places of ``column`` (if any), saying what is wrong with its value."""
    if not len(bad):
        return
    value = column[bad[0]]
    more = f" (and {len(bad) - 1} more rows with a bad date)" if len(bad) > 1 else ""
    refuse(path, f", {bad[0]}: date {str(value).strip()!r} {_date_fault(value, text)}{more}; {_DATE_FIX}")


def _date_fault(value, text: bool) -> str:
    """What is wrong with a refused date: CSV text, or a value of a parquet date or timestamp column."""
    if text:
        value = str(value).strip()
        if _ZONED.fullmatch(value):
            return "carries a time zone"
        if _TIMED.fullmatch(value):
            return "has a time of day"
        if not re.fullmatch(_ISO, value):
            return "is not a date in the form YYYY-MM-DD"
        if not _YEARS[0] <= int(value[:4]) <= _YEARS[1]:
            return f"is in the year {int(value[:4])} (a typo?)"
        return "is not a date: there is no such day"
    if getattr(value, "tzinfo", None) is not None:  # a Timestamp of a datetime column, or a date
        return "carries a time zone"
    if not _YEARS[0] <= value.year <= _YEARS[1]:
        return f"is in the year {value.year} (a typo?)"
    return "has a time of day"


def numbers(column: pd.Series, path: Path, label: Callable[[str], str]) -> pd.Series:
    """A price or volume column as floats; refuses text, thousands separators and non-numeric
    types, naming the first cell with ``label(place)`` (symbol and field). An empty cell or a
    usual marker of a missing value (``NA``, ``NaN``, ``null``, ``#N/A``...) is NaN."""
    column = _decoded(column)
    if types.is_bool_dtype(column) or types.is_datetime64_any_dtype(column) or types.is_timedelta64_dtype(column):
        refuse(path, f", {column.index[0]}: {label(column.index[0])} holds {column.dtype} values, not numbers; "
                    "write prices and volumes as plain numbers.")
    if types.is_numeric_dtype(column):
        return column.astype("float64")
    text = column.astype("string").str.strip()
    text = text.mask(text.isin(MISSING_MARKERS) | (text == ""))
    values = pd.to_numeric(text, errors="coerce")
    bad = text.index[text.notna() & values.isna()]
    if len(bad):
        cell = str(text[bad[0]])
        fix = ("remove the thousands separators (1234.5, not 1,234.5)" if _GROUPED.match(cell) else
               "use a dot for decimals, no thousands separators (1234.5)" if "," in cell else
               "write a plain number (1234.5), or leave the cell empty for a missing value")
        refuse(path, f", {bad[0]}: {label(bad[0])} {cell!r} is not a number ({len(bad)} such cells); {fix}.")
    return values.astype("float64")


def _decoded(column: pd.Series) -> pd.Series:
    """A dictionary-encoded (categorical) parquet column as plain values."""
    return column.astype(column.cat.categories.dtype) if isinstance(column.dtype, pd.CategoricalDtype) else column
