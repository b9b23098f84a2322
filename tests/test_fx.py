"""Forex as a research source (issue 19): daily rates on the forex calendar, and prices or returns
in another currency converted at the rate known at each session's close."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.data import (calendar_sessions, canonical_frame, convert_prices, convert_returns, from_yfinance,
                               load_prices, publication_times, rate_on_sessions)

NY = calendar_sessions("XNYS", dt.date(2024, 2, 1), dt.date(2024, 4, 30))
FX_DAYS = calendar_sessions("24/5", dt.date(2024, 2, 1), dt.date(2024, 4, 30))


def _rates(seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(1.08 * np.exp(np.cumsum(rng.normal(0, 0.004, len(FX_DAYS)))), index=FX_DAYS, name="EURUSD=X")


def test_a_new_york_session_converts_at_the_last_rate_closed_before_it():
    rates = _rates(1)
    known = rate_on_sessions(rates, NY, "XNYS")
    # Monday 2024-03-11 16:00 New York (20:00 UTC): Friday's UTC day is the last that closed
    assert known["2024-03-11"] == rates["2024-03-08"]
    assert known["2024-03-12"] == rates["2024-03-11"]
    assert np.isnan(known.iloc[0])  # 2024-02-01: the rate of 2024-02-01 closes at midnight UTC, after New York


def test_a_constant_rate_leaves_returns_alone_and_a_rate_move_is_the_currency_return():
    returns = pd.Series(0.01, index=NY)
    flat = convert_returns(returns, pd.Series(1.1, index=FX_DAYS), "XNYS")
    assert flat.iloc[2:].to_numpy() == pytest.approx(0.01)
    rates = pd.Series(1.0, index=FX_DAYS)
    rates[rates.index >= "2024-03-12"] = 1.1  # the euro gains 10 % on Tuesday 2024-03-12 (UTC)
    moved = convert_returns(pd.Series(0.0, index=NY), rates, "XNYS")
    assert moved["2024-03-13"] == pytest.approx(0.10)  # known at Wednesday's close, not Tuesday's
    assert moved.drop(pd.Timestamp("2024-03-13")).iloc[2:].abs().max() == pytest.approx(0.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(1, len(NY) - 2))
def test_changing_later_rates_moves_no_converted_session_before_them(seed, cut):
    rng = np.random.default_rng(seed)
    closes = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.01, (len(NY), 2)), axis=0)), index=NY,
                          columns=["SAP", "ASML"])
    prices = canonical_frame({"close": closes, "volume": closes * 0 + 1e4})
    rates = _rates(seed)
    cutoff = publication_times(NY[cut:cut + 1], "XNYS")[0]
    later = publication_times(rates.index, "24/5") > cutoff
    changed = rates.copy()
    changed[later] *= rng.uniform(0.8, 1.25, int(later.sum()))  # a different change each day
    before, after = convert_prices(prices, rates, "XNYS"), convert_prices(prices, changed, "XNYS")
    pd.testing.assert_frame_equal(before.iloc[:cut + 1], after.iloc[:cut + 1])
    assert not before.iloc[cut + 1:].equals(after.iloc[cut + 1:])
    assert (after["volume"] == prices["volume"]).all().all()  # units traded do not change currency
    returns = closes["SAP"].pct_change()
    pd.testing.assert_series_equal(convert_returns(returns, rates, "XNYS").iloc[:cut + 1],
                                   convert_returns(returns, changed, "XNYS").iloc[:cut + 1])


@pytest.mark.parametrize("bad", [0.0, -1.1, np.inf])
def test_a_rate_that_converts_nothing_is_refused_with_its_date(bad):
    rates = _rates(2)
    rates.iloc[5] = bad
    with pytest.raises(ValueError, match=rf"on {FX_DAYS[5]:%Y-%m-%d} is {bad!r}; a rate must be a finite number > 0"):
        rate_on_sessions(rates, NY, "XNYS")


def test_yahoo_forex_and_crypto_tickers_convert_like_stocks():
    days = pd.DatetimeIndex(["2024-03-08", "2024-03-09", "2024-03-11"], name="Date")
    columns = pd.MultiIndex.from_product([["Close", "Open"], ["EURUSD=X", "BTC-USD"]], names=["Price", "Ticker"])
    raw = pd.DataFrame([[1.09, 68_000, 1.08, 67_000], [np.nan, 69_000, np.nan, 68_000], [1.10, 70_000, 1.09, 69_000]],
                       index=days, columns=columns)
    frame, splits = from_yfinance(raw, ["EURUSD=X", "BTC-USD"])
    assert splits is None and frame.loc["2024-03-09", ("close", "BTC-USD")] == 69_000
    assert frame.loc["2024-03-11", ("close", "EURUSD=X")] == 1.10


def test_the_synthetic_market_runs_on_the_forex_calendar(tmp_path):
    prices = load_prices("synthetic", None, "2021-01-01", "2021-03-31", calendar="24/5", snapshot_dir=tmp_path)
    assert set(prices.index.dayofweek) == {0, 1, 2, 3, 4} and len(prices) == len(
        calendar_sessions("24/5", dt.date(2021, 1, 1), dt.date(2021, 3, 31)))
