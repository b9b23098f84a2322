"""Every bad input of the data layer is refused with a message naming source, symbol, date and value."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.data import load_prices, validate_prices
from research_lib.errors import DataValidationError
from tests.conftest import make_prices

GOOD = [10.0, 10.5, 10.2, 10.8, 11.0, 10.9]


def test_clean_prices_pass():
    validate_prices(make_prices({"AAA": GOOD, "BBB": [20, 21, 22, 21, 20, 21]}), "test")


@pytest.mark.parametrize("bad, match", [
    (np.nan, r"test, AAA: missing \(NaN\) close on 2020-01-03 .*fill the gap"),
    (np.inf, r"test, AAA: infinite close \(inf\) on 2020-01-03.*re-fetch"),
    (-1.0, r"test, AAA: non-positive close -1 on 2020-01-03 .*prices must be > 0"),
    (0.0, r"test, AAA: non-positive close 0 on 2020-01-03"),
])
def test_bad_close_values_are_named(bad, match):
    closes = list(GOOD)
    closes[2] = bad
    with pytest.raises(DataValidationError, match=match):
        validate_prices(make_prices({"AAA": closes}), "test")


def test_leading_and_trailing_nan_are_a_listing_span_not_a_gap():
    validate_prices(make_prices({"AAA": [np.nan, *GOOD[1:-1], np.nan], "BBB": GOOD}), "test")


def test_duplicate_dates():
    prices = make_prices({"AAA": GOOD})
    prices = pd.concat([prices, prices.iloc[[3]]]).sort_index()
    with pytest.raises(DataValidationError, match=r"duplicated dates \(1: 2020-01-06\).*duplicated\(keep='last'\)"):
        validate_prices(prices, "test")


def test_unsorted_dates():
    prices = make_prices({"AAA": GOOD}).iloc[[0, 2, 1, 3, 4, 5]]
    with pytest.raises(DataValidationError, match=r"unsorted dates: 2020-01-02 comes after 2020-01-03 \(row 2\); sort it"):
        validate_prices(prices, "test")


def test_yfinance_silent_failure_all_nan_column():
    prices = make_prices({"AAA": GOOD, "NOPE": [np.nan] * 6})
    with pytest.raises(DataValidationError, match=r"yfinance returned no prices for NOPE \(an all-NaN column.*remove NOPE from data.symbols \(or change data.benchmark"):
        validate_prices(prices, "yfinance")


def test_stale_series():
    closes = [10.0] + [12.0] * 12 + [12.5]
    with pytest.raises(DataValidationError, match=r"test, AAA: stale series, the close did not change for 11 sessions in a row after 2020-01-02 \(stuck at 12\).*max_stale_sessions \(now 10\)"):
        validate_prices(make_prices({"AAA": closes}), "test", max_stale_sessions=10)
    validate_prices(make_prices({"AAA": closes}), "test", max_stale_sessions=11)


def test_impossible_jump_without_split():
    closes = [100.0, 101.0, 25.0, 25.5, 26.0, 25.8]
    with pytest.raises(DataValidationError, match=r"test, AAA: impossible one-day move on 2020-01-03, close 101 -> 25 \(x0.248\) with no split recorded"):
        validate_prices(make_prices({"AAA": closes}), "test")


def test_jump_explained_by_a_recorded_split_is_accepted():
    prices = make_prices({"AAA": [100.0, 101.0, 25.0, 25.5, 26.0, 25.8]})
    splits = pd.DataFrame({"AAA": [np.nan, np.nan, 4.0, np.nan, np.nan, np.nan]}, index=prices.index)
    validate_prices(prices, "test", splits=splits)


def test_bad_volume_and_ohlc_fields():
    prices = make_prices({"AAA": GOOD}, volume={"AAA": [1e6, 2e6, -5, 1e6, 1e6, 1e6]}, high={"AAA": [11, 11, 11, np.inf, 12, 12]})
    with pytest.raises(DataValidationError) as caught:
        validate_prices(prices, "test")
    assert caught.value.problems == [
        "test, AAA: invalid high inf on 2020-01-06 (1 such sessions); fix or re-fetch the data.",
        "test, AAA: invalid volume -5 on 2020-01-03 (1 such sessions); fix or re-fetch the data.",
    ]


def test_empty_and_undated_frames():
    empty = make_prices({"AAA": GOOD}).iloc[:0]
    with pytest.raises(DataValidationError, match="has no sessions; widen data.start/data.end"):
        validate_prices(empty, "test")
    undated = make_prices({"AAA": GOOD}).reset_index(drop=True)
    with pytest.raises(DataValidationError, match="is not indexed by dates"):
        validate_prices(undated, "test")


def test_many_problems_are_counted_in_one_paragraph():
    prices = make_prices({"AAA": [np.nan if i == 2 else v for i, v in enumerate(GOOD)], "BBB": [1, 2, -1, 2, 2, 2]})
    with pytest.raises(DataValidationError, match=r"test, AAA: missing \(NaN\) close .* Also: test, BBB: non-positive close -1") as caught:
        validate_prices(prices, "test")
    assert len(caught.value.problems) == 2
    assert "\n" not in str(caught.value), "one paragraph"


def test_unknown_bundled_symbol_suggests_the_right_one(tmp_path):
    with pytest.raises(DataValidationError, match=r"bundled has no symbols \['APPL'\]. 'APPL' -> did you mean 'AAPL'\?"):
        load_prices("bundled", ["APPL", "MSFT"], snapshot_dir=tmp_path)
    assert not any(tmp_path.iterdir()), "nothing is written when a load fails"


@pytest.mark.parametrize("asked, meant", [("aapl", "AAPL"), ("Msft", "MSFT"), ("^vix", "^VIX"), ("sp500", "SP500"),
                                          ("wti", "WTI"), ("appl", "AAPL")])
def test_did_you_mean_ignores_case(tmp_path, asked, meant):
    with pytest.raises(DataValidationError, match=rf"bundled has no symbols \['{re.escape(asked)}'\]. '{re.escape(asked)}' -> "
                                                  rf"did you mean '{re.escape(meant)}'\?"):
        load_prices("bundled", [asked], snapshot_dir=tmp_path)


def test_empty_date_range(tmp_path):
    with pytest.raises(DataValidationError, match=r"bundled returned no sessions for \['AAPL'\] between 2030-01-01 and 2030-12-31; check the symbols and widen"):
        load_prices("bundled", ["AAPL"], "2030-01-01", "2030-12-31", snapshot_dir=tmp_path)


def test_real_bundled_history_before_1993_is_refused_as_stale(tmp_path):
    """RRC's early-1990s quotes really are stale; the default start (1993) avoids them."""
    with pytest.raises(DataValidationError, match=r"bundled, RRC: stale series, the close did not change for 68 sessions in a row after 1990-01-02 \(stuck at 3.322\)"):
        load_prices("bundled", ["RRC"], "1990-01-01", "1992-12-31", snapshot_dir=tmp_path)


def test_unknown_source_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data source 'bloomberg'; valid sources: \['bundled', 'yfinance', 'alpaca', 'polygon', 'file', 'synthetic'\]"):
        load_prices("bloomberg", snapshot_dir=tmp_path)


def test_unsorted_file_is_reported_before_any_date_slicing(tmp_path):
    (tmp_path / "p.csv").write_text("date,AAA\n2021-01-05,10\n2021-01-04,11\n2021-01-06,12\n")
    with pytest.raises(DataValidationError, match=r"unsorted dates: 2021-01-04 comes after 2021-01-05"):
        load_prices("file", path=tmp_path / "p.csv", start="2021-01-01", snapshot_dir=tmp_path / "snap")


BAR_BREAKS = {  # how a bar is broken -> the orderings it breaks, as (lower, upper) fields
    "high below low": [("low", "high"), ("close", "high")],
    "close above high": [("close", "high")],
    "close below low": [("low", "close")],
}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data())
def test_a_bar_needs_low_below_close_below_high(data):
    """Every broken bar is named by symbol, fields, values and first date, with its count; NaN
    fields and absent fields are not checked, intact bars pass."""
    n = data.draw(st.integers(2, 11))  # at most 10 unchanged closes: never a stale series
    close = 50.0 * np.cumprod(1 + np.array(data.draw(st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n))))
    low = close * (1 - np.array(data.draw(st.lists(st.floats(0, 0.05), min_size=n, max_size=n))))
    high = close * (1 + np.array(data.draw(st.lists(st.floats(0, 0.05), min_size=n, max_size=n))))
    present = data.draw(st.sampled_from([("low", "high"), ("low",), ("high",)]))
    kinds = [k for k, pairs in BAR_BREAKS.items() if all(f in (*present, "close") for pair in pairs for f in pair)]
    rows = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    broken, blank = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    expected = {}
    for row in sorted(broken):
        kind, factor = data.draw(st.sampled_from(kinds)), data.draw(st.floats(1.001, 1.5))
        if kind == "high below low":
            high[row] = low[row] / factor
        elif kind == "close above high":
            close[row] = high[row] * factor
        else:
            close[row] = low[row] / factor
        for pair in BAR_BREAKS[kind]:
            expected.setdefault(pair, []).append(row)
    for row in blank:  # a missing low or high on an intact bar is not checked
        (low if "low" in present and row % 2 else high)[row] = np.nan
    values = {"low": low, "close": close, "high": high}
    prices = make_prices({"AAA": list(close)}, **{f: {"AAA": list(values[f])} for f in present})
    if not expected:
        validate_prices(prices, "test")
        return
    with pytest.raises(DataValidationError) as caught:
        validate_prices(prices, "test")
    problems = [p for p in caught.value.problems if "above" in p]
    assert len(problems) == len(expected), caught.value.problems
    for (lower, upper), hit in expected.items():
        first = hit[0]
        sentence = (f"test, AAA: {lower} {values[lower][first]:g} above {upper} {values[upper][first]:g} on "
                    f"{prices.index[first]:%Y-%m-%d} ({len(hit)} such sessions); a bar needs low <= close <= high")
        assert any(p.startswith(sentence) for p in problems), (sentence, problems)
