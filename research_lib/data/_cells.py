"""Cells of a price file: session dates and numbers, each refusal naming the file, the place
(``"line 7"`` of a CSV, ``"row 6"`` of a parquet: the column's index), the value and the fix."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pandas as pd
from pandas.api import types

from research_lib.errors import DataValidationError

_GROUPED = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")  # 1,234.5


def refuse(path: Path, sentence: str) -> NoReturn:
    """Raise the ``DataValidationError`` of ``Price file <path><sentence>``."""
    raise DataValidationError([f"Price file {path}{sentence}"])


def session_dates(column: pd.Series, path: Path) -> pd.Series:
    """Session dates (tz-naive midnight timestamps) of a date column; refuses missing, impossible,
    zoned, timed or numeric values, naming the first."""
    missing = column.index[column.isna()]
    if len(missing):
        refuse(path, f", {missing[0]}: no date ({len(missing)} such rows); give every row its session date.")
    if types.is_bool_dtype(column) or types.is_numeric_dtype(column):
        refuse(path, f", {column.index[0]}: date {column.iloc[0]} is a number, not a date; write dates as YYYY-MM-DD.")
    parsed = _parse_dates(column)
    problem = _first_bad_date(column, parsed)
    if problem:
        place, why = problem
        refuse(path, f", {place}: date {str(column[place])!r} {why}; write exchange-local session dates as YYYY-MM-DD, "
                    "without a time or time zone.")
    return parsed.astype("datetime64[ns]")


def _parse_dates(column: pd.Series) -> pd.Series:
    """``pd.to_datetime`` with the column's inferred format (an unparsable value becomes NaT); with
    mixed time zones, an object column of the zoned timestamps."""
    with warnings.catch_warnings():  # "could not infer format": each value is then parsed alone
        warnings.simplefilter("ignore", UserWarning)
        try:
            return pd.to_datetime(column, errors="coerce")
        except (ValueError, TypeError):  # mixed time zones (or types): value by value
            values = column.map(_one_date)
            zoned = values.map(lambda v: getattr(v, "tzinfo", None) is not None)
            return values if zoned.any() else pd.to_datetime(values)


def _one_date(value):
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        return pd.NaT


def _first_bad_date(column: pd.Series, parsed: pd.Series) -> tuple[str, str] | None:
    """``(place, reason)`` of the first value that is not a session date, or ``None``."""
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.first_valid_index(), "carries a time zone"
    if parsed.dtype == object:  # mixed time zones
        return next(p for p, v in parsed.items() if getattr(v, "tzinfo", None) is not None), "carries a time zone"
    unparsed = parsed.index[parsed.isna()]
    if len(unparsed):
        alone = _one_date(column[unparsed[0]])
        return unparsed[0], ("is not a date (no such day, or not a date at all)" if pd.isna(alone) else
                             _date_fault(alone) or f"is not in the format of the first date {str(column.iloc[0])!r}")
    bad = (parsed != parsed.dt.normalize()) | (parsed.dt.year < 1800) | (parsed.dt.year > 2200)
    return (bad.idxmax(), _date_fault(parsed[bad.idxmax()])) if bad.any() else None


def _date_fault(date: pd.Timestamp) -> str | None:
    if date.tzinfo is not None:
        return "carries a time zone"
    if date != date.normalize():
        return "has a time of day"
    if not 1800 <= date.year <= 2200:
        return f"is in the year {date.year} (a typo?)"
    return None


def numbers(column: pd.Series, path: Path, label: Callable[[str], str]) -> pd.Series:
    """A price or volume column as floats; refuses text, thousands separators and non-numeric
    types, naming the first cell with ``label(place)`` (symbol and field)."""
    if types.is_bool_dtype(column) or types.is_datetime64_any_dtype(column) or types.is_timedelta64_dtype(column):
        refuse(path, f", {column.index[0]}: {label(column.index[0])} holds {column.dtype} values, not numbers; "
                    "write prices and volumes as plain numbers.")
    if types.is_numeric_dtype(column):
        return column.astype("float64")
    values = pd.to_numeric(column, errors="coerce")
    bad = column.index[column.notna() & values.isna()]
    if len(bad):
        text = str(column[bad[0]])
        fix = ("remove the thousands separators (1234.5, not 1,234.5)" if _GROUPED.match(text) else
               "use a dot for decimals, no thousands separators (1234.5)" if "," in text else
               "write a plain number (1234.5), or leave the cell empty for a missing value")
        refuse(path, f", {bad[0]}: {label(bad[0])} {text!r} is not a number ({len(bad)} such cells); {fix}.")
    return values.astype("float64")
