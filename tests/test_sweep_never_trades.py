"""Sweeps survive configurations that never take a position (thresholds no signal reaches,
windows longer than the data, no prices, zero-variance returns, weights only at the very end):
the sweep completes, those rows have NaN metrics and the reason, and every configuration that
trades gives exactly what it gives alone, checked against `run_backtest` and `research_lib.validation.metrics`."""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib import validation
from research_lib.validation import metrics, sweep
from research_lib.backtest import run_backtest
from research_lib.validation.sweep import METRICS, ma_crossover_sweep
from tests.conftest import make_prices

NEVER = "never takes a position: "
BACKTEST_NEVER_TRADES = "never takes a position|no trade falls inside the price history"  # run_backtest's refusals
OUTPUTS = [*METRICS, "n_obs", "reason"]  # what a row says of its configuration


@st.composite
def price_frames(draw) -> pd.DataFrame:
    """A random walk, one listed late (or never: all NaN) and delisted early, a constant price
    (zero-variance returns) and a steady fall, over 20 to 60 sessions."""
    n = draw(st.integers(20, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    walk = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    listed, delisted = sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))
    late = 50 * np.exp(np.cumsum(rng.normal(0, 0.03, n)))
    late[:listed], late[delisted:] = np.nan, np.nan
    return make_prices({"WALK": walk, "LATE": late, "FLAT": np.full(n, 100.0), "FALL": 100 * 0.99 ** np.arange(n)})


def zscore_weights(prices: pd.DataFrame, symbol: str, window: int, threshold: float, last_sessions: int | None,
                   lag: int) -> pd.DataFrame:
    """Long ``symbol`` after a session whose trailing mean return over its standard deviation
    exceeds ``threshold`` (only on the last ``last_sessions`` decision dates, when given)."""
    close = prices["close"]
    returns = close[symbol].pct_change(fill_method=None)
    score = returns.rolling(window).mean() / returns.rolling(window).std()
    beyond_the_end = np.arange(len(close)) + lag >= len(close)  # never traded: run_backtest drops them
    long = (score > threshold) & (close[symbol].shift(-lag).notna() | beyond_the_end)  # only what has a price
    if last_sessions is not None:
        long.iloc[:len(long) - last_sessions] = False
    weights = pd.DataFrame(0.0, index=close.index, columns=close.columns)
    weights[symbol] = long.astype(float)
    return weights


LIKELY_TO_TRADE = st.fixed_dictionaries({
    "symbol": st.sampled_from(["WALK", "LATE"]), "window": st.sampled_from([2, 5, 15]),
    "threshold": st.sampled_from([-1.0, 0.0, -math.inf]), "last_sessions": st.sampled_from([None, 5])})
ANY_CONFIGURATION = st.fixed_dictionaries({
    "symbol": st.sampled_from(["WALK", "LATE", "FALL", "FLAT"]),  # FLAT: zero-variance returns, no score
    "window": st.sampled_from([5, 2, 1, 59, 61, 10**6]),  # 1: no deviation; > sessions: no score
    "threshold": st.sampled_from([-1.0, 0.0, -math.inf, 0.3, 1e9, math.nan]),  # NaN, 1e9: never reached
    "last_sessions": st.sampled_from([None, 5, 2, 1]),  # 1 or 2 with lag 2: nothing left to trade
})
CONFIGURATIONS = st.one_of(LIKELY_TO_TRADE, ANY_CONFIGURATION)


def assert_row_is_the_backtest(row: pd.Series, returns: pd.Series, backtest) -> None:
    """The oracle for a configuration that trades: run_backtest's returns and research_lib.validation.metrics."""
    pd.testing.assert_series_equal(returns.dropna(), backtest.returns, check_names=False, check_freq=False)
    values = backtest.returns.to_numpy()
    expected = {"sharpe": metrics.sharpe_ratio(values), "cagr": metrics.cagr(values),
                "annual_volatility": metrics.annual_volatility(values), "max_drawdown": metrics.max_drawdown(values),
                "annual_turnover": backtest.turnover.sum() / (len(values) / 252)}
    for name, value in expected.items():
        assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), name
    assert row["n_obs"] == len(values) and row["reason"] is None


def assert_row_never_trades(row: pd.Series) -> None:
    assert row[list(METRICS)].isna().all() and row["n_obs"] == 0, row
    assert isinstance(row["reason"], str) and row["reason"].startswith(NEVER), row["reason"]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(prices=price_frames(), configurations=st.lists(CONFIGURATIONS, min_size=1, max_size=6),
       lag=st.sampled_from([1, 2]))
def test_a_grid_sweep_keeps_every_trading_row_and_explains_the_others(prices, configurations, lag):
    weights_fn = functools.partial(zscore_weights, lag=lag)
    model = {"cost_bps": 15.0, "execution_lag_sessions": lag}
    result = sweep.sweep(configurations, weights_fn, prices, record=False, **model)  # completes

    assert len(result.table) == len(configurations)
    for number, params in enumerate(configurations):
        row = result.table.loc[number]
        alone = sweep.sweep([params], weights_fn, prices, record=False, **model)
        pd.testing.assert_series_equal(row[OUTPUTS + ["annual_cost"]], alone.table.loc[0, OUTPUTS + ["annual_cost"]],
                                       check_names=False, check_dtype=False)  # the batch changes nothing
        try:
            backtest = run_backtest(weights_fn(prices, **params), prices, **model)
        except ValueError as error:
            assert re.search(BACKTEST_NEVER_TRADES, str(error)), error
            assert_row_never_trades(row)
            assert number not in result.returns.columns, "no returns: no column to distort a PBO"
            assert alone.returns.empty
        else:
            assert_row_is_the_backtest(row, result.returns[number], backtest)
            assert row["annual_cost"] == pytest.approx(backtest.costs.sum() / (len(backtest.returns) / 252))


@st.composite
def crossover_pairs(draw, n_sessions: int) -> list[tuple[int, int]]:
    fast = draw(st.lists(st.integers(1, 8), min_size=1, max_size=4))
    return [(f, f + draw(st.sampled_from([1, 3, 10, n_sessions, n_sessions + 5]))) for f in fast]  # some too long


@settings(max_examples=40, deadline=None, derandomize=True)
@given(prices=price_frames(), data=st.data())
def test_a_crossover_sweep_keeps_every_trading_row_and_explains_the_others(prices, data):
    close = prices["close"]
    pairs = data.draw(crossover_pairs(len(close)), label="pairs")
    result = ma_crossover_sweep(close, pairs, cost_bps=20, keep_returns=True)  # completes

    assert len(result.table) == len(pairs) * close.shape[1]
    for config, row in result.table.iterrows():
        fast, slow, symbol = row["fast"], row["slow"], row["symbol"]
        alone = ma_crossover_sweep(close[[symbol]], [(fast, slow)], cost_bps=20, keep_returns=True)
        pd.testing.assert_series_equal(row[OUTPUTS], alone.table.loc[0, OUTPUTS], check_names=False, check_dtype=False)
        long = close[symbol].rolling(fast).mean() > close[symbol].rolling(slow).mean()
        weights = (long & close[symbol].shift(-1).notna()).astype(float).to_frame(symbol)
        try:
            backtest = run_backtest(weights, prices, cost_bps=20)
        except ValueError as error:
            assert re.search(BACKTEST_NEVER_TRADES, str(error)), error
            assert_row_never_trades(row)
            assert config not in result.returns.columns and alone.returns.empty
        else:
            swept = result.returns[config]
            assert swept.loc[:backtest.returns.index[0]].iloc[:-1].isna().all(), "no series before its first trade"
            np.testing.assert_allclose(swept.loc[backtest.returns.index], backtest.returns, atol=1e-13)
            values = backtest.returns.to_numpy()  # evaluated from the first trade, as run_backtest
            assert row["sharpe"] == pytest.approx(metrics.sharpe_ratio(values), rel=1e-9, nan_ok=True)
            assert row["max_drawdown"] == pytest.approx(metrics.max_drawdown(values), rel=1e-9, abs=1e-15)
            assert row["n_obs"] == len(values) and row["reason"] is None


@pytest.mark.parametrize("symbol, pair, reason", [
    ("WALK", (2, 41), r"the slow window \(41 sessions\) is longer than close \(40 sessions\)"),
    ("GONE", (2, 5), r"no 5 consecutive closes for the slow mean"),
    ("GAPPY", (2, 5), r"no 5 consecutive closes for the slow mean"),
    ("FLAT", (2, 5), r"the 2-session mean close never exceeds the 5-session mean on a session followed by a close"),
    ("FALL", (2, 5), r"the 2-session mean close never exceeds the 5-session mean on a session followed by a close"),
])
def test_a_crossover_that_never_trades_says_why(symbol, pair, reason):
    n = 40
    gappy = np.where(np.arange(n) % 4 == 0, np.nan, 100.0 + np.arange(n))
    close = make_prices({"WALK": 100 + np.sin(np.arange(n)), "GONE": np.full(n, np.nan), "GAPPY": gappy,
                         "FLAT": np.full(n, 100.0), "FALL": 100 * 0.99 ** np.arange(n)})["close"]
    table = ma_crossover_sweep(close[[symbol]], [pair]).table
    assert re.fullmatch(NEVER + reason, table.loc[0, "reason"])


@pytest.mark.parametrize("weights, reason", [
    (lambda p: pd.DataFrame(0.0, index=p.index, columns=["A"]),
     r"every target weight is zero \(too little history for its lookback\?\)\."),
    (lambda p: pd.DataFrame(index=p.index[:0], columns=["A"], dtype=float),
     r"no trade falls inside the price history \(every decision date is within execution_lag_sessions \(2\) of "
     r"the end, or there is none\)\."),
    (lambda p: pd.DataFrame({"A": 1.0}, index=p.index[-2:]),
     r"no trade falls inside the price history \(every decision date is within execution_lag_sessions \(2\) of "
     r"the end, or there is none\)\."),
])
def test_a_grid_configuration_that_never_trades_says_why(weights, reason):
    prices = make_prices({"A": 100.0 + np.arange(30.0)})
    trades = pd.DataFrame({"A": 1.0}, index=prices.index[:1])
    result = sweep.sweep({"kind": ["trades", "never"]}, lambda p, kind: trades if kind == "trades" else weights(p),
                         prices, record=False, execution_lag_sessions=2)
    assert result.table["reason"].isna().tolist() == [True, False]
    assert re.fullmatch(NEVER + reason, result.table.loc[1, "reason"])
    assert list(result.returns.columns) == [0]


@pytest.mark.parametrize("weights, error, match", [
    (lambda p: None, TypeError, r"configuration 1 \{'kind': 'bad'\}: weights_fn returned NoneType, not target "
                                r"weights; return a DataFrame \(decision dates x symbols\)"),
    (lambda p: pd.DataFrame({"A": np.nan}, index=p.index[:1]), ValueError,
     r"configuration 1 \{'kind': 'bad'\}: weights contain NaN or infinite values; use 0 for 'not held'"),
    (lambda p: pd.DataFrame({"A": 0.0, "ZZZ": 1.0}, index=p.index[:1]), ValueError,
     r"configuration 1 .*: weights name symbols \['ZZZ'\] that are not in the price frame"),
    (lambda p: pd.DataFrame({"A": 1.0}, index=[pd.Timestamp("1999-01-01")]), ValueError,
     r"configuration 1 .*: weights are dated 1999-01-01, which is not a session"),
    (lambda p: pd.DataFrame({"A": ["x"]}, index=p.index[:1]), ValueError, r"configuration 1 .*: could not convert"),
    (lambda p: p.no_such_thing, AttributeError, r"no_such_thing"),  # a bug in weights_fn stays a bug
    # malformed and also never holding a position: the malformation is what the user must fix
    (lambda p: pd.DataFrame({"A": 0.0, "ZZZ": 0.0}, index=p.index[:1]), ValueError,
     r"configuration 1 .*: weights name symbols \['ZZZ'\]"),
    (lambda p: pd.DataFrame({"ZZZ": 1.0}, index=p.index[-1:]), ValueError,
     r"configuration 1 .*: weights name symbols \['ZZZ'\]"),
    (lambda p: pd.DataFrame({"A": 0.0}, index=p.index[[0, 0]]), ValueError,
     r"configuration 1 .*: weights have two rows dated"),
])
def test_malformed_weights_still_stop_the_sweep_naming_the_configuration(weights, error, match):
    """Only the absence of a position is a row; a malformed configuration is an error to fix."""
    prices = make_prices({"A": 100.0 + np.arange(30.0)})
    trades = pd.DataFrame({"A": 1.0}, index=prices.index[:1])
    with pytest.raises(error, match=match):
        sweep.sweep({"kind": ["good", "bad"]}, lambda p, kind: trades if kind == "good" else weights(p), prices,
                    record=False)


def momentum_weights(prices: pd.DataFrame, lookback_days: int) -> pd.DataFrame:
    """Long the symbols whose return over ``lookback_days`` is positive, equally weighted."""
    close = prices["close"]
    up = (close / close.shift(lookback_days) > 1.0) & close.shift(-1).notna()
    return up.div(up.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0).astype(float)


def test_never_trading_rows_change_neither_the_registry_nor_the_pbo(tmp_path, monkeypatch):
    """Downstream sees only configurations that trade: the registry counts them alone, and the
    PBO of the sweep's returns is that of the trading configurations swept without the others."""
    from research_lib.validation.registry import list_trials, trial_statistics

    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path))
    rng = np.random.default_rng(5)
    prices = make_prices({s: 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 400))) for s in "ABCD"})
    lookbacks = [5, 400, 20, 10**6, 60]  # 400 sessions: a lookback of 400 or more never trades
    trading = [days for days in lookbacks if days < 400]
    mixed = sweep.sweep({"lookback_days": lookbacks}, momentum_weights, prices)
    alone = sweep.sweep({"lookback_days": trading}, momentum_weights, prices, record=False)

    assert mixed.table["reason"].notna().tolist() == [days >= 400 for days in lookbacks]
    stats = trial_statistics(tmp_path / "data" / "spartan.sqlite")
    assert stats["n_trials"] == len(trading), "never-trading configurations are not trials"
    assert sorted(list_trials(tmp_path / "data" / "spartan.sqlite")["name"]) == sorted(f"lookback_days={days}"
                                                                                     for days in trading)
    pbo_mixed = validation.probability_of_backtest_overfitting(mixed.returns.dropna(), n_splits=8)
    pbo_alone = validation.probability_of_backtest_overfitting(alone.returns.dropna(), n_splits=8)
    assert pbo_mixed["pbo"] == pbo_alone["pbo"] and pbo_mixed["n_trials"] == len(trading)
    np.testing.assert_array_equal(pbo_mixed["logits"], pbo_alone["logits"])


@pytest.mark.parametrize("model, match", [
    ({"execution_lag_sessions": 0}, r"execution_lag_sessions must be a whole number >= 1"),
    ({"cost_bps": -5.0}, r"cost_bps must be a finite number >= 0"),
    ({"impact_coefficient": 1.0}, r"impact_coefficient=1.0 needs capital"),
])
def test_a_malformed_backtest_model_is_refused_even_when_no_configuration_trades(model, match):
    prices = make_prices({"A": 100.0 + np.arange(30.0)})
    zeros = pd.DataFrame({"A": 0.0}, index=prices.index[:5])
    with pytest.raises(ValueError, match=match):
        sweep.sweep({"kind": ["a", "b"]}, lambda p, kind: zeros, prices, record=False, **model)


@pytest.mark.parametrize("close", [pd.DataFrame({"A": []}, dtype=float), pd.DataFrame(index=pd.bdate_range("2020-01-02", periods=5))])
def test_a_crossover_sweep_on_an_empty_close_is_refused(close):
    with pytest.raises(ValueError, match=r"close has \d+ sessions and \d+ symbols; pass prices\['close'\]"):
        sweep.ma_crossover_sweep(close, [(2, 5)])


def test_an_entry_that_never_fires_is_named_as_the_reason_not_the_lag():
    from research_lib.sweeps import families, run_sweep

    prices = make_prices({"A": 100 + np.cumsum(np.random.default_rng(1).normal(0, 1, 300))})
    result = run_sweep(families.rsi_thresholds, {"window": [14], "lower": [-1, 101], "upper": [50]}, prices)
    assert result.table["reason"].tolist() == [
        NEVER + "the entry signal never fires, or only within execution_lag_sessions (1) of the end of the "
                      "price history.", None]
