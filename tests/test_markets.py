"""Markets and calendars (issue 19): a symbol's market decides its sessions, a mixed universe is
aligned point in time, and annualization follows the calendar."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.backtest import run_backtest
from research_lib.config import load_config
from research_lib.data import (align_point_in_time, asset_class, calendar_sessions, canonical_frame, load_prices,
                               publication_times, sessions_per_year, symbol_calendar, universe_calendar)
from research_lib.errors import DataValidationError
from research_lib.validation.metrics import headline_metrics
from tests.conftest import REPO

NY_SESSIONS = calendar_sessions("XNYS", dt.date(2024, 2, 1), dt.date(2024, 4, 30))
DAYS = calendar_sessions("24/7", dt.date(2024, 2, 1), dt.date(2024, 4, 30))


@pytest.mark.parametrize("symbol, market", [
    ("AAPL", "stock"), ("BRK-B", "stock"), ("^GSPC", "stock"), ("SP500", "stock"),
    ("BTC/USD", "crypto"), ("ETH-USD", "crypto"), ("ETH/BTC", "crypto"), ("SOL/USDT", "crypto"),
    ("EURUSD=X", "forex"), ("JPY=X", "forex"), ("EUR/USD", "forex"), ("GBP-JPY", "forex"),
])
def test_a_symbols_spelling_says_its_market(symbol, market):
    assert asset_class(symbol) == market
    assert symbol_calendar(symbol, "XNYS") == {"stock": "XNYS", "crypto": "24/7", "forex": "24/5"}[market]


def test_data_markets_names_what_the_spelling_does_not_and_is_checked():
    assert asset_class("BTCUSD", {"BTCUSD": "crypto"}) == "crypto"
    config = load_config(REPO / "params" / "smoke.yaml", ["data.symbols=[BTCUSD, ETHUSD]", "data.benchmark=BTCUSD",
                                                          "data.markets={BTCUSD: crypto, ETHUSD: crypto}"])
    assert config.data.universe_calendar() == "24/7" and config.sessions_per_year == 365
    with pytest.raises(Exception, match=r"data\.markets\.BTCUSD: Input should be 'stock', 'crypto' or 'forex'"):
        load_config(REPO / "params" / "smoke.yaml", ["data.markets={BTCUSD: coin}"])


def test_the_universe_follows_the_stock_exchange_when_it_holds_a_stock():
    assert universe_calendar(["AAPL", "BTC/USD"], "XNYS") == "XNYS"
    assert universe_calendar(["BTC/USD", "ETH/USD"], "XNYS") == "24/7"
    assert universe_calendar(["BTC/USD", "EURUSD=X"], "XNYS") == "24/5"
    assert universe_calendar(["BTC/USD"], None) is None  # no calendar checked: as configured


def test_a_year_has_the_sessions_of_its_calendar():
    assert sessions_per_year("XNYS") == 252 and sessions_per_year("24/7") == 365 and sessions_per_year("24/5") == 260
    assert sessions_per_year(None) == 365
    # an exchange without a convention: the mean of its last ten whole years, from its own calendar
    xlon = calendar_sessions("XLON", dt.date(2014, 1, 1), dt.date(2026, 12, 31))
    counts = pd.Series(1, index=xlon).groupby(xlon.year).sum()
    last = min(pd.Timestamp.now().year - 1, 2026)
    assert sessions_per_year("XLON") == round(counts.loc[last - 9:last].mean())


def test_annualization_follows_the_calendar_in_metrics_and_in_the_backtest():
    returns = pd.Series(np.tile([0.01, -0.005], 365), index=pd.date_range("2021-01-01", periods=730, freq="D"))
    crypto, stock = headline_metrics(returns, 365), headline_metrics(returns, 252)
    assert crypto["annual_volatility"] == pytest.approx(returns.std(ddof=1) * 365 ** 0.5)
    assert crypto["sharpe"] == pytest.approx(returns.mean() / returns.std(ddof=1) * 365 ** 0.5)
    assert crypto["cagr"] == pytest.approx((1 + returns).prod() ** (365 / 730) - 1)
    assert crypto["sharpe"] / stock["sharpe"] == pytest.approx((365 / 252) ** 0.5)
    # a year of cash on a 24/7 calendar earns the annual rate, compounded daily, not 365/252 of it
    days = pd.date_range("2021-01-01", periods=366, freq="D")
    prices = canonical_frame({"close": pd.DataFrame({"BTC/USD": np.full(366, 100.0)}, index=days)})
    weights = pd.DataFrame({"BTC/USD": [1e-9]}, index=days[:1])  # all but nothing in cash
    result = run_backtest(weights, prices, cost_bps=0.0, cash_rate_per_year=0.05, sessions_per_year=365)
    assert (1 + result.returns).prod() - 1 == pytest.approx((1 + 0.05 / 365) ** 365 - 1, rel=1e-6)
    with pytest.raises(ValueError, match=r"sessions_per_year must be a positive whole number \(got 0\)"):
        run_backtest(weights, prices, sessions_per_year=0)


@pytest.mark.parametrize("year", [0, -252, 252.0, True, "252", None])
def test_the_backtest_and_the_hedge_refuse_a_year_that_is_not_a_positive_whole_number(year):
    """(The simulated account's refusal: tests/test_crypto_trading.py.)"""
    from research_lib.hedging import HedgeConfig, HedgeInputError, hedge_overlay

    days = pd.bdate_range("2021-01-01", periods=60)
    prices = canonical_frame({"close": pd.DataFrame({"SPY": np.linspace(100.0, 110.0, 60)}, index=days)})
    message = r"sessions_per_year must be a positive whole number \(got .*\), e.g. 252 for New York"
    with pytest.raises(ValueError, match=message):
        run_backtest(pd.DataFrame({"SPY": [1.0]}, index=days[:1]), prices, sessions_per_year=year)
    with pytest.raises(HedgeInputError, match=message):
        hedge_overlay(prices["close"]["SPY"].pct_change().iloc[30:], prices["close"]["SPY"],
                      HedgeConfig(kind="protective_put"), None, year)


def test_a_value_is_known_at_its_sessions_close():
    friday, saturday = pd.Timestamp("2024-03-08"), pd.Timestamp("2024-03-09")
    assert publication_times(pd.DatetimeIndex([friday]), "XNYS")[0] == pd.Timestamp("2024-03-08 21:00", tz="UTC")
    assert publication_times(pd.DatetimeIndex([saturday]), "24/7")[0] == pd.Timestamp("2024-03-10 00:00", tz="UTC")
    with pytest.raises(ValueError, match=r"1 dates are not XNYS sessions \(first 2024-03-09\)"):
        publication_times(pd.DatetimeIndex([saturday]), "XNYS")


def _market(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(days, symbols):
        close = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.02, (len(days), len(symbols))), axis=0)),
                             index=days, columns=symbols)
        spread = pd.DataFrame(rng.uniform(0.001, 0.02, close.shape), index=days, columns=symbols)
        return canonical_frame({"open": close * (1 + spread / 2), "high": close * (1 + spread),
                                "low": close * (1 - spread), "close": close,
                                "volume": pd.DataFrame(rng.uniform(1e3, 1e4, close.shape), index=days, columns=symbols)})

    return frame(NY_SESSIONS, ["AAPL", "MSFT"]), frame(DAYS, ["BTC/USD", "ETH/USD"])


def _perturbed_after(frame: pd.DataFrame, calendar: str, cutoff: pd.Timestamp, seed: int) -> pd.DataFrame:
    """``frame`` with every value published after ``cutoff`` changed, differently per symbol and day."""
    out = frame.copy()
    late = publication_times(frame.index, calendar) > cutoff
    noise = np.random.default_rng(seed).uniform(0.5, 2.0, (int(late.sum()), out.shape[1]))
    out.iloc[np.flatnonzero(late)] = out.iloc[np.flatnonzero(late)].to_numpy() * noise
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(0, len(NY_SESSIONS) - 2), on_crypto=st.booleans())
def test_changing_the_future_moves_no_aligned_row_before_it(seed, cut, on_crypto):
    stocks, crypto = _market(seed)
    target, sessions = ("24/7", DAYS) if on_crypto else ("XNYS", NY_SESSIONS)
    cut = min(cut, len(sessions) - 2)
    cutoff = publication_times(sessions[cut:cut + 1], target)[0]
    before = align_point_in_time([(stocks, "XNYS"), (crypto, "24/7")], sessions, target)
    after = align_point_in_time([(_perturbed_after(stocks, "XNYS", cutoff, seed + 1), "XNYS"),
                                 (_perturbed_after(crypto, "24/7", cutoff, seed + 2), "24/7")], sessions, target)
    pd.testing.assert_frame_equal(before.iloc[:cut + 1], after.iloc[:cut + 1])
    assert not before.iloc[cut + 1:].equals(after.iloc[cut + 1:])  # the change did reach the future


def test_a_new_york_session_sees_the_crypto_day_that_closed_before_it():
    stocks, crypto = _market(7)
    aligned = align_point_in_time([(stocks, "XNYS"), (crypto, "24/7")], NY_SESSIONS, "XNYS")
    monday, friday = pd.Timestamp("2024-03-11"), pd.Timestamp("2024-03-08")
    btc = crypto.xs("BTC/USD", axis=1, level="symbol")
    # Monday 16:00 New York: Sunday's crypto day closed at midnight UTC, Monday's has not
    assert aligned.loc[monday, ("close", "BTC/USD")] == btc.loc["2024-03-10", "close"]
    # the bars of Saturday to Sunday (published after Friday's close) make Monday's row
    weekend = btc.loc["2024-03-08":"2024-03-10"]
    assert aligned.loc[monday, ("open", "BTC/USD")] == weekend["open"].iloc[0]
    assert aligned.loc[monday, ("high", "BTC/USD")] == weekend["high"].max()
    assert aligned.loc[monday, ("low", "BTC/USD")] == weekend["low"].min()
    assert aligned.loc[monday, ("volume", "BTC/USD")] == pytest.approx(weekend["volume"].sum())
    assert aligned.loc[monday, ("close", "AAPL")] == stocks.loc[monday, ("close", "AAPL")]
    assert aligned.loc[friday, ("close", "BTC/USD")] == btc.loc["2024-03-07", "close"]


def test_on_a_crypto_calendar_a_stock_repeats_its_close_on_days_it_does_not_trade():
    stocks, crypto = _market(3)
    aligned = align_point_in_time([(stocks, "XNYS"), (crypto, "24/7")], DAYS, "24/7")
    saturday, friday = pd.Timestamp("2024-03-09"), pd.Timestamp("2024-03-08")
    aapl_friday = stocks.loc[friday, ("close", "AAPL")]
    assert aligned.loc[friday, ("close", "AAPL")] == aapl_friday  # 21:00 UTC, before the crypto day closes
    row = aligned.loc[saturday].xs("AAPL", level="symbol")
    assert row["close"] == row["open"] == row["high"] == row["low"] == aapl_friday and row["volume"] == 0
    assert np.isnan(aligned.loc[DAYS[0], ("close", "AAPL")]) or DAYS[0] in NY_SESSIONS


def test_a_mixed_file_is_validated_per_calendar_then_aligned(tmp_path):
    days = pd.date_range("2024-03-01", "2024-03-20", freq="D")
    rng = np.random.default_rng(0)
    btc = 60_000 * np.exp(np.cumsum(rng.normal(0, 0.02, len(days))))
    aapl = pd.Series(170 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days)))), index=days)
    aapl[~days.isin(NY_SESSIONS)] = np.nan  # a stock has no weekend close
    table = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "AAPL": aapl.to_numpy(), "BTC-USD": btc})
    path = tmp_path / "mixed.csv"
    table.to_csv(path, index=False)
    now = dt.datetime(2024, 4, 1, tzinfo=dt.timezone.utc)
    prices = load_prices("file", ["AAPL", "BTC-USD"], path=path, snapshot_dir=tmp_path / "snap", now=now,
                         context={"AAPL": "data.benchmark"})
    assert list(prices.index) == [d for d in days if d in NY_SESSIONS]
    assert prices.loc["2024-03-11", ("close", "BTC-USD")] == pytest.approx(btc[days.get_loc("2024-03-10")])
    assert prices.attrs["provenance"]["calendar"] == "XNYS" and "aligned" in prices.attrs["provenance"]
    crypto_only = load_prices("file", ["BTC-USD"], path=path, snapshot_dir=tmp_path / "snap", now=now,
                              context={"BTC-USD": "data.benchmark"})
    assert len(crypto_only) == len(days)  # every day: a crypto universe follows 24/7
    # each part is validated on its own calendar: a stock close on a Saturday is refused
    table.loc[days.get_loc("2024-03-09"), "AAPL"] = 171.0
    table.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"1 dates that are not XNYS sessions.*2024-03-09 \(Sat\)"):
        load_prices("file", ["AAPL", "BTC-USD"], path=path, snapshot_dir=tmp_path / "snap", now=now,
                    context={"AAPL": "data.benchmark"})


def test_a_schedule_on_the_crypto_calendar_fires_every_day_before_the_utc_close():
    from research_lib.scheduler import SessionTrigger

    trigger = SessionTrigger("24/7", -15, "UTC")
    friday = dt.datetime(2024, 3, 8, 12, 0, tzinfo=dt.timezone.utc)
    fires = [trigger.get_next_fire_time(None, friday)]
    for _ in range(3):
        fires.append(trigger.get_next_fire_time(fires[-1], friday))
    assert [f.strftime("%a %H:%M") for f in fires] == ["Fri 23:45", "Sat 23:45", "Sun 23:45", "Mon 23:45"]
    assert trigger.session_of(fires[1]) == dt.date(2024, 3, 9)  # Saturday is a session


def test_offline_crypto_is_the_synthetic_market_on_the_24_7_calendar(tmp_path):
    config = load_config(REPO / "params" / "smoke.yaml", ["data.source=synthetic", "data.calendar=24/7",
                                                          "data.symbols=null", "data.benchmark=INDEX"])
    assert config.sessions_per_year == 365
    prices = load_prices("synthetic", None, "2021-01-01", "2021-01-31", calendar="24/7", snapshot_dir=tmp_path,
                         context={"INDEX": "data.benchmark"})
    assert len(prices) == 31 and prices.index.dayofweek.nunique() == 7


def test_unsorted_or_repeated_dates_are_refused_not_aligned_into_the_past():
    stocks, crypto = _market(5)
    with pytest.raises(ValueError, match=r"sessions must be sorted and unique to be aligned point in time"):
        align_point_in_time([(stocks, "XNYS"), (crypto, "24/7")], NY_SESSIONS[::-1], "XNYS")
    with pytest.raises(ValueError, match=r"the dates of BTC/USD, ETH/USD must be sorted and unique"):
        align_point_in_time([(stocks, "XNYS"), (crypto.iloc[::-1], "24/7")], NY_SESSIONS, "XNYS")


def test_any_day_calendar_aligns_whatever_the_dates_unit():
    days = pd.date_range("2024-03-01", periods=10, freq="D").as_unit("s")  # pandas 3 may give s or us
    frame = canonical_frame({"close": pd.DataFrame({"X": np.arange(10.0)}, index=days)})
    aligned = align_point_in_time([(frame, None)], days.as_unit("us"), None)
    assert aligned["close"]["X"].tolist() == list(np.arange(10.0))


def test_a_failed_mixed_load_leaves_no_snapshot_and_a_mixed_file_needs_no_symbol_list(tmp_path):
    days = pd.date_range("2024-03-01", "2024-03-20", freq="D")
    aapl = pd.Series(170.0 + np.arange(len(days)), index=days).where(days.isin(NY_SESSIONS))
    table = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "AAPL": aapl.to_numpy(),
                          "BTC-USD": 60_000.0 + np.arange(len(days))})
    path, snapshots = tmp_path / "mixed.csv", tmp_path / "snap"
    table.to_csv(path, index=False)
    late = dt.datetime(2024, 3, 20, 21, 0, tzinfo=dt.timezone.utc)  # BTC's 03-20 has not closed; AAPL's has
    with pytest.raises(DataValidationError, match=r"session has not closed yet"):
        load_prices("file", ["AAPL", "BTC-USD"], path=path, snapshot_dir=snapshots, now=late,
                    context={"AAPL": "data.benchmark"})
    assert not snapshots.exists() or not any(snapshots.iterdir())  # AAPL's part was not left behind
    every = load_prices("file", None, path=path, snapshot_dir=snapshots, now=late + dt.timedelta(days=1),
                        context={"AAPL": "data.benchmark"})
    assert list(every["close"].columns) == ["AAPL", "BTC-USD"] and every.index.isin(NY_SESSIONS).all()


def test_execution_algorithms_are_refused_for_a_universe_that_trades_around_the_clock():
    with pytest.raises(Exception, match=r"execution.algorithm 'twap' works orders over New York's session"):
        load_config(REPO / "params" / "smoke.yaml", ["data.symbols=[AAPL, BTC/USD]", "execution.algorithm=twap"])
    assert load_config(REPO / "params" / "smoke.yaml", ["data.symbols=[AAPL, BTC/USD]"]).execution.algorithm == "market"
    for named in (["data.symbols=null", "data.benchmark=BTC/USD"], ["data.markets={XBTUSD: crypto}"]):
        with pytest.raises(Exception, match=r"data.symbols, data.benchmark or data.markets name crypto or forex"):
            load_config(REPO / "params" / "smoke.yaml", [*named, "execution.algorithm=vwap"])


@pytest.mark.parametrize("year", [252, 365])
def test_a_sweeps_table_annualizes_with_the_calendars_year(year):
    from research_lib.sweeps import families, run_sweep

    stocks, crypto = _market(9)
    result = run_sweep(families.rsi_thresholds, {"window": [5, 9], "lower": [35], "upper": [60]}, crypto,
                       cost_bps=5.0, borrow_bps_per_year=80.0, sessions_per_year=year, keep_returns=True)
    for config, row in result.table.iterrows():
        returns = result.returns[config].dropna()
        oracle = headline_metrics(returns, year)
        assert row["sharpe"] == pytest.approx(oracle["sharpe"], rel=1e-9)
        assert row["cagr"] == pytest.approx(oracle["cagr"], rel=1e-9)
        assert row["annual_volatility"] == pytest.approx(oracle["annual_volatility"], rel=1e-9)
