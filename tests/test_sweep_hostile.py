"""The sweep engine, hardened after a hostile review: what it refuses (and how it says so),
what a strategy cannot break, and what a recorded sweep keeps.

The tests of each defect failed before its fix (a few others pin what must not change): a
configuration that trades without a Sharpe ratio aborted the recording; batch sizes, lags,
infinite costs, unsorted dates, non-positive prices and non-boolean signals were read as
something else; a memoized indicator changed by one configuration changed the others; the kernel
could not be imported without a writable numba cache; a leveraged book whose NAV reached 0 raised
ZeroDivisionError; errors did not name the configuration, and only the first one was checked.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.backtest import run_backtest
from research_lib.sweeps import Indicators, entry_exit, families, run_sweep, target_weights
from research_lib.sweeps import _kernel
from research_lib.validation import sweep
from research_lib.validation.registry import list_trials, load_sweep, record_sweep
from tests.conftest import make_prices

N = 40  # sessions of the small frames


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """A random walk, a constant price and a steady rise, 40 sessions."""
    rng = np.random.default_rng(11)
    return make_prices({"WALK": 100 * np.exp(np.cumsum(rng.normal(0, 0.02, N))), "FLAT": np.full(N, 50.0),
                        "RISE": 100 * 1.001 ** np.arange(N)})


@pytest.fixture
def workspace_db(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path))
    return tmp_path / "data" / "spartan.sqlite"


@entry_exit
def enter_on(ind, when):
    """Long every symbol from the close after session ``when`` (never, when past the end)."""
    entries = pd.DataFrame(False, index=ind.close.index, columns=ind.close.columns)
    if when < len(entries):
        entries.iloc[when] = True
    return entries, pd.DataFrame(False, index=entries.index, columns=entries.columns)


# --- 1. a configuration that trades without a Sharpe ratio is recorded, left out of the matrix ------

def test_configurations_that_trade_without_a_sharpe_ratio_are_left_out_of_the_recording(prices, workspace_db):
    """Entering on the second-to-last session trades once (one return); FLAT without costs never
    varies; past the end never trades. The sweep completes and records the rest."""
    result = sweep.sweep({"when": [5, N - 2, N + 5]}, enter_on, prices, cost_bps=0.0)

    config = {(row["when"], row["symbol"]): label for label, row in result.table.iterrows()}
    table = result.table
    assert math.isnan(table.loc[config[N - 2, "WALK"], "sharpe"]) and table.loc[config[N - 2, "WALK"], "n_obs"] == 1
    assert math.isnan(table.loc[config[5, "FLAT"], "sharpe"]) and table.loc[config[5, "FLAT"], "reason"] is None
    assert set(result.left_out.index) == {config[5, "FLAT"], *(config[when, s] for when in (N - 2, N + 5)
                                                                for s in ("WALK", "FLAT", "RISE"))}
    assert result.left_out[config[N - 2, "WALK"]] == ("trades, but its Sharpe ratio is undefined: it has one daily "
                                                       "return (a standard deviation needs two).")
    assert result.left_out[config[5, "FLAT"]] == ("trades, but its Sharpe ratio is undefined: its 34 daily returns "
                                                   "are all equal (no variation).")
    assert result.left_out[config[N + 5, "WALK"]] == table.loc[config[N + 5, "WALK"], "reason"]

    loaded = load_sweep(workspace_db, result.sweep_id)
    assert sorted(loaded.returns.columns) == [config[5, "WALK"], config[5, "RISE"]]
    assert sorted(list_trials(workspace_db)["name"]) == ["when=5, symbol=RISE", "when=5, symbol=WALK"]
    assert config[N - 2, "WALK"] in result.returns.columns, "the result keeps every configuration that trades"


# --- 2. batch_size ----------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size, shown", [(0, "0"), (-3, "-3"), (2.5, "2.5"), (True, "True"), ("10", "'10'"),
                                               (np.int64(0), "0")])
def test_a_batch_size_that_is_not_a_whole_number_of_at_least_one_is_refused(prices, batch_size, shown):
    with pytest.raises(ValueError, match=rf"batch_size must be a whole number of configurations >= 1 \(got "
                                         rf"{shown}\); e.g. batch_size=100\."):
        run_sweep(enter_on, {"when": [3, 5]}, prices, batch_size=batch_size)


def test_a_numpy_batch_size_is_a_whole_number(prices):
    whole = run_sweep(enter_on, {"when": [3, 5, 7]}, prices)
    pd.testing.assert_frame_equal(run_sweep(enter_on, {"when": [3, 5, 7]}, prices, batch_size=np.int64(2)).table,
                                  whole.table)


# --- 3. returns kept as float32 for the registry --------------------------------------------------------

def test_float32_returns_are_the_float64_ones_rounded_and_the_table_does_not_change(prices):
    grid = {"fast": [2, 3], "slow": [5, 8, N + 1]}  # a slow window longer than the prices never trades
    wide = run_sweep(families.ma_crossover, grid, prices, keep_returns=True, cost_bps=10)
    narrow = run_sweep(families.ma_crossover, grid, prices, keep_returns=True, returns_dtype="float32", cost_bps=10)
    trading = narrow.table.index[narrow.table["reason"].isna()]
    assert (narrow.returns.dtypes == np.float32).all() and list(narrow.returns.columns) == list(trading)
    assert 0 < len(trading) < len(narrow.table), "some books never trade: their rows are not kept"
    pd.testing.assert_frame_equal(narrow.returns, wide.returns.astype(np.float32), check_exact=True)
    pd.testing.assert_frame_equal(narrow.table, wide.table)
    with pytest.raises(ValueError, match=r"returns_dtype must be one of \['float64', 'float32'\] \(got 'float16'\)"):
        run_sweep(families.ma_crossover, grid, prices, returns_dtype="float16")


def test_a_recorded_sweep_is_the_one_recorded_from_float64_returns(prices, workspace_db, tmp_path):
    """Same id (the registry hashes the float32 matrix), same trials, Sharpe ratios within float32's precision."""
    grid = {"fast": [2, 3], "slow": [5, 8, 13]}
    recorded = sweep.sweep(grid, families.ma_crossover, prices, cost_bps=10)
    wide = sweep.sweep(grid, families.ma_crossover, prices, cost_bps=10, record=False)
    trading = wide.returns.columns[np.isfinite(wide.table.loc[wide.returns.columns, "sharpe"])]
    other_db = tmp_path / "other" / "spartan.sqlite"
    assert record_sweep(other_db, f"sweep:{families.ma_crossover.name}", wide.table, wide.returns[trading],
                        {"cost_bps": 10}) == recorded.sweep_id
    ours, theirs = (list_trials(db).set_index("name")["sharpe"].sort_index() for db in (workspace_db, other_db))
    pd.testing.assert_series_equal(ours, theirs, rtol=1e-5)


# --- 4. dates ---------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data(), n=st.integers(4, 12), repeat=st.booleans())
def test_dates_out_of_order_or_repeated_are_refused_naming_the_first(prices, data, n, repeat):
    frame = prices.iloc[:n]
    row = data.draw(st.integers(1, n - 1), label="row")
    dates = frame.index.to_list()
    if repeat:
        dates[row] = dates[row - 1]
        match = rf"prices have two rows dated {dates[row]:%Y-%m-%d}; keep one row per session \(e\.g\. "
    else:
        dates[row - 1], dates[row] = dates[row], dates[row - 1]
        match = (rf"prices' dates are out of order: {dates[row]:%Y-%m-%d} comes after {dates[row - 1]:%Y-%m-%d}; "
                 r"sort them \(prices\.sort_index\(\)\)")
    with pytest.raises(ValueError, match=match):
        run_sweep(enter_on, {"when": [1]}, frame.set_axis(pd.DatetimeIndex(dates), axis=0))


def test_prices_not_indexed_by_dates_are_refused(prices):
    with pytest.raises(ValueError, match=r"prices are indexed by a RangeIndex, not by session dates"):
        run_sweep(enter_on, {"when": [1]}, prices.reset_index(drop=True))


# --- 5. signals are booleans --------------------------------------------------------------------------

def shifted(frame):
    return frame.shift(1)  # object dtype: NaN on the first row


@pytest.mark.parametrize("make, found", [
    (lambda signal: signal.astype(float).where(signal), r"have column 'WALK' of dtype float64"),  # NaN: False
    (lambda signal: signal.astype(float), r"have column 'WALK' of dtype float64"),
    (shifted, r"have column 'WALK' of dtype object"),
    (lambda signal: signal.astype("boolean"), r"have column 'WALK' of dtype boolean"),
    (lambda signal: signal.to_numpy().astype(float), r"are a float64 array"),
])
def test_signals_that_are_not_booleans_are_refused_naming_configuration_strategy_and_column(prices, make, found):
    @entry_exit
    def rule(ind, variant):
        entries = ind.close > ind.sma(3)
        return (make(entries) if variant == "bad" else entries), ~entries

    with pytest.raises(TypeError, match=r"configuration 1 \{'variant': 'bad'\}: the entries .*rule returned "
                                        + found + r", not bool \(a NaN or a number would be read as True\); return "
                                                  r"booleans"):
        run_sweep(rule, {"variant": ["good", "bad"]}, prices)


# --- 6. shared indicators cannot be changed by one configuration --------------------------------------

MUTATIONS = {
    "iloc": lambda frame: frame.iloc.__setitem__((slice(None), 0), 1e9),
    "column": lambda frame: frame.__setitem__("WALK", -1.0),
    "in place": lambda frame: frame.__imul__(-1.0),
    "clip in place": lambda frame: frame.clip(upper=0.0, inplace=True),
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_a_strategy_that_changes_an_indicator_changes_no_other_configuration(prices, mutate):
    @entry_exit
    def crossover(ind, vandal):
        fast, slow = ind.sma(2), ind.sma(5)
        if vandal:
            for frame in (fast, slow, ind.close):
                mutate(frame)
        return fast > slow, fast <= slow

    together = run_sweep(crossover, {"vandal": [True, False]}, prices, keep_returns=True)
    alone = run_sweep(crossover, {"vandal": [False]}, prices, keep_returns=True)
    honest = together.table["vandal"] == False  # noqa: E712
    pd.testing.assert_frame_equal(together.table[honest].reset_index(drop=True),
                                  alone.table.reset_index(drop=True), check_index_type=False)


def test_an_indicators_arrays_are_read_only_and_its_frames_stay_as_computed(prices):
    ind = Indicators(prices)
    with pytest.raises(ValueError, match="read-only"):
        ind.sma(3).to_numpy()[0, 0] = 1.0
    sma, close, month_ends = ind.sma(3), ind.close, ind.month_ends()
    sma.iloc[5, 0] = 1e9
    sma.index.name = "changed"
    close.iloc[5, 0] = 1e9
    month_ends.iloc[0] = True
    pd.testing.assert_frame_equal(ind.sma(3), prices["close"].rolling(3).mean())
    pd.testing.assert_frame_equal(ind.close, prices["close"])
    assert not ind.month_ends().iloc[0]
    assert ind.computed[("sma", 3)] == 1
    mine = ind.memo("mine", lambda: np.zeros(3))  # a user's own indicator, as a numpy array
    with pytest.raises(ValueError, match="read-only"):
        mine[0] = 1.0
    assert not ind.memo("mine", lambda: np.ones(3)).any()


# --- 7. the kernel without a writable numba cache ---------------------------------------------------------

def test_the_kernel_compiles_without_a_cache_where_numba_cannot_write_one(tmp_path):
    """A read-only install: the kernel's folder has no usable __pycache__ (a file stands there),
    and NUMBA_CACHE_DIR and the user's cache folder are under a file. The kernel imports nothing
    from research_lib, so a copy of it alone is the module as installed."""
    shutil.copy(_kernel.__file__, tmp_path / "_kernel.py")
    (tmp_path / "__pycache__").write_text("not a folder")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder either")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(blocker / "numba"), "XDG_CACHE_HOME": str(blocker / "cache"),
           "HOME": str(blocker / "home"), "PYTHONDONTWRITEBYTECODE": "1"}
    code = textwrap.dedent("""
        import numpy as np, _kernel
        out = np.empty((3, 1))
        _kernel.signals_to_targets(np.array([[True], [False], [False]]), np.array([[False], [False], [True]]),
                                   False, True, out)
        print(out.ravel().tolist())
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1.0, nan, 0.0]"
    assert "set NUMBA_CACHE_DIR to a writable folder" in done.stderr


# --- 8. prices are positive ----------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, derandomize=True)
@given(row=st.integers(0, N - 1), column=st.integers(0, 2), value=st.sampled_from([0.0, -3.5, math.inf, -math.inf]))
def test_a_close_that_is_not_a_positive_number_is_refused_naming_symbol_and_date(prices, row, column, value):
    symbol, date = prices["close"].columns[column], prices.index[row]
    bad = prices.copy()
    bad.loc[date, ("close", symbol)] = value
    with pytest.raises(ValueError, match=rf"prices\['close'\] of {symbol} on {date:%Y-%m-%d} is "
                                         rf"{re.escape(repr(value))}; a close must be a finite number > 0: fix the "
                                         r"data, or mark that session's price missing \(NaN\)\."):
        run_sweep(enter_on, {"when": [1]}, bad)


def test_a_book_whose_nav_reaches_zero_is_run_backtest_not_a_zero_division():
    """Short 1 at 100, the price doubles: the NAV is 0; run_backtest's numpy gives NaN, and so does the kernel."""
    frame = make_prices({"A": [100.0, 100.0, 200.0, 200.0, 210.0]})
    weights = pd.DataFrame({"A": [-1.0]}, index=frame.index[:1])

    @target_weights
    def short_once(ind):
        return weights.reindex(ind.close.index)

    swept = run_sweep(short_once, [{}], frame, cost_bps=0, keep_returns=True).returns[0]
    with np.errstate(all="ignore"):
        expected = run_backtest(weights, frame, cost_bps=0).returns
    assert np.isnan(expected.iloc[2]), "the NAV is 0 after the second session"
    np.testing.assert_array_equal(swept.loc[expected.index].to_numpy(), expected.to_numpy())


# --- 9. the backtest model's numbers ---------------------------------------------------------------------

@pytest.mark.parametrize("model, match", [
    ({"cost_bps": math.inf}, r"cost_bps must be a finite number >= 0 \(got inf\); pass e.g. cost_bps=0 for none"),
    ({"spread_bps": math.inf}, r"spread_bps must be a finite number >= 0 \(got inf\)"),
    ({"spread_bps": "5"}, r"spread_bps must be a finite number >= 0 \(got '5'\)"),
    ({"borrow_bps_per_year": math.inf}, r"borrow_bps_per_year must be a finite number >= 0 \(got inf\)"),
    ({"impact_coefficient": math.inf, "capital": 1e6}, r"impact_coefficient must be a finite number >= 0 \(got inf\)"),
    ({"impact_coefficient": 0.5, "capital": math.inf}, r"capital must be a finite number \(got inf\); pass e.g. "
                                                       r"capital=1e6"),
    ({"cash_rate_per_year": math.inf}, r"cash_rate_per_year must be a finite number \(got inf\)"),
    ({"cash_rate_per_year": -math.inf}, r"cash_rate_per_year must be a finite number \(got -inf\)"),
    ({"cash_rate_per_year": math.nan}, r"cash_rate_per_year must be a finite number \(got nan\)"),
    ({"execution_lag_sessions": 1.5}, r"execution_lag_sessions must be a whole number >= 1 \(got 1.5\)"),
    ({"execution_lag_sessions": True}, r"execution_lag_sessions must be a whole number >= 1 \(got True\)"),
    ({"execution_lag_sessions": 0}, r"execution_lag_sessions must be a whole number >= 1 \(got 0\)"),
])
def test_a_model_number_that_is_not_finite_or_a_lag_that_is_not_whole_is_refused(prices, model, match):
    # run_backtest refuses them (a lag of 1.5 was an IndexError, an infinite cost a return of -inf),
    # and the engine, which checks its model with run_backtest, with the same words
    with pytest.raises(ValueError, match=match):
        run_backtest(pd.DataFrame({"WALK": [1.0]}, index=prices.index[:1]), prices, **model)
    with pytest.raises(ValueError, match=match):
        run_sweep(enter_on, {"when": [1]}, prices, **model)


def test_an_infinite_rate_in_a_cash_rate_series_is_no_rate_as_in_run_backtest(prices):
    rates = pd.Series(0.02, index=prices.index)
    rates.iloc[10] = math.inf
    match = rf"cash_rate_per_year has no rate for {prices.index[10]:%Y-%m-%d}"
    with pytest.raises(ValueError, match=match):
        run_backtest(pd.DataFrame({"WALK": [1.0]}, index=prices.index[:1]), prices, cash_rate_per_year=rates)
    with pytest.raises(ValueError, match=r"configuration 0 \{'when': 1\}: " + match):
        run_sweep(enter_on, {"when": [1]}, prices, cash_rate_per_year=rates)


# --- 10. errors name the configuration; every configuration is checked ---------------------------------------

@target_weights
def fragile(ind, window, bug=False):
    if bug:
        return {}["no such key"]
    return ind.sma(window) * 0 + 1 / 3


def test_an_error_a_strategy_raises_names_its_configuration_and_keeps_the_original(prices):
    with pytest.raises(ValueError, match=r"configuration 1 \{'window': 0\}: window must be a whole number of "
                                         r"sessions >= 1 \(got 0\)") as raised:
        run_sweep(fragile, {"window": [3, 0]}, prices)
    assert isinstance(raised.value.__cause__, ValueError) and str(raised.value.__cause__).startswith("window must")
    with pytest.raises(KeyError, match=r"raised by the strategy for configuration 1 \{'window': 3, 'bug': True\}"):
        run_sweep(fragile, [{"window": 3, "bug": False}, {"window": 3, "bug": True}], prices)


@pytest.mark.parametrize("grid, error, match", [
    ([{"window": 3}, {"widnow": 5}], ValueError, r"grid names 'widnow', which is not a parameter of fragile; its "
                                                 r"parameters: \['window', 'bug'\]\. Did you mean 'window'\?"),
    ([{"window": 3, "bug": False}, {"bug": True}], ValueError, r"configuration 1 \{'bug': True\} gives no value for "
                                                               r"\['window'\], which other configurations name"),
    ([{"window": 3}, ("window", 5)], TypeError, r"grid\[1\] is a tuple \(\('window', 5\)\); give each configuration "
                                                r"as a \{name: value\} dict"),
])
def test_every_configuration_of_a_list_grid_is_checked(prices, grid, error, match):
    with pytest.raises(error, match=match):
        run_sweep(fragile, grid, prices)


def test_a_parameter_left_out_of_some_configurations_is_its_default_in_the_table(prices):
    """Before, the table had the first configuration's columns only: ``bug`` was lost."""
    table = run_sweep(fragile, [{"window": 3}, {"window": 5, "bug": False}], prices).table
    assert table[["window", "bug"]].values.tolist() == [[3, False], [5, False]]
    with pytest.raises(ValueError, match=r"configuration 1 \{'n': 2\} gives no value for \['m'\]"):  # weights_fn
        sweep.sweep([{"n": 1, "m": 1}, {"n": 2}], lambda p, n, m=1: pd.DataFrame({"WALK": [1.0]}, index=p.index[:1]),
                    prices, record=False)


def test_a_weights_function_takes_no_per_symbol_book(prices):
    with pytest.raises(ValueError, match=r"book='per_symbol' needs a research_lib.sweeps strategy"):
        sweep.sweep({"n": [1]}, lambda p, n: pd.DataFrame({"WALK": [1.0]}, index=p.index[:1]), prices,
                    record=False, book="per_symbol")
