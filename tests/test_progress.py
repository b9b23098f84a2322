"""Progress bars on long work: each names the work, counts to the number of items it does, writes
to stderr only, goes away with SPARTAN_PROGRESS=0, and never changes a result.

The totals are worked out here from the inputs (blocks of a walk-forward, fits of a GARCH
schedule, one request per date), not read back from the code.
"""

from __future__ import annotations

import datetime as dt
import re

import joblib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from research_lib.features._garch import garch_volatility
from research_lib.llm import AnalystSettings, Price, ResponseCache, generate_views
from research_lib.progress import progress
from research_lib.signals.models import WalkForwardModel


def final_count(stderr: str, desc: str) -> tuple[int, int]:
    """``(done, total)`` of the last redraw of the bar labelled ``desc``."""
    counts = re.findall(rf"{re.escape(desc)}: .*?(\d+)/(\d+) \[", stderr)
    assert counts, f"no bar {desc!r} in {stderr!r}"
    return tuple(int(n) for n in counts[-1])


@pytest.fixture
def bars_on(monkeypatch):
    monkeypatch.setenv("SPARTAN_PROGRESS", "1")


@settings(max_examples=30, deadline=None)
@given(items=st.lists(st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=3))), as_generator=st.booleans(),
       shown=st.booleans())
def test_progress_yields_every_item_unchanged_in_order(items, as_generator, shown):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARTAN_PROGRESS", "1" if shown else "0")
        source = (x for x in items) if as_generator else items
        out = list(progress(source, total=len(items), desc="items"))
    assert len(out) == len(items)
    assert all(a is b for a, b in zip(out, items))  # the very objects (NaN included), in order


def test_a_bar_goes_to_stderr_only_and_not_at_all_when_turned_off(monkeypatch, capsys):
    monkeypatch.setenv("SPARTAN_PROGRESS", "1")
    list(progress(range(7), desc="things", unit="thing"))
    shown = capsys.readouterr()
    assert shown.out == "" and final_count(shown.err, "things") == (7, 7)
    monkeypatch.setenv("SPARTAN_PROGRESS", "0")
    list(progress(range(7), desc="things", unit="thing"))
    assert capsys.readouterr() == ("", "")


def tiny_panel(n_dates: int = 230, n_symbols: int = 4, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    index = pd.MultiIndex.from_product([pd.bdate_range("2010-01-04", periods=n_dates), [f"S{i}" for i in range(n_symbols)]],
                                       names=["date", "symbol"])
    X = pd.DataFrame(rng.normal(size=(len(index), 3)), index=index, columns=["a", "b", "c"])
    return X, pd.Series(rng.normal(size=len(index)), index=index, name="label")


@pytest.mark.parametrize("shown", [True, False])
def test_walk_forward_shows_one_step_per_test_block(shown, monkeypatch, capsys):
    X, y = tiny_panel()
    monkeypatch.setenv("SPARTAN_PROGRESS", "1" if shown else "0")
    model = WalkForwardModel("ridge", test_days=40, min_train_days=100, horizon=1, embargo_days=0).fit(X, y)
    err = capsys.readouterr().err
    if not shown:
        assert err == ""
        return
    blocks = len(range(100, 230, 40))  # test blocks start at sessions 100, 140, 180, 220
    assert final_count(err, "ridge walk-forward blocks") == (blocks, blocks) and len(model.folds_) == blocks


def garch_close(n_sessions: int = 260) -> pd.DataFrame:
    """Two symbols, the second listed 40 sessions late (so it has fewer fits)."""
    rng = np.random.default_rng(1)
    close = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(n_sessions, 2)), axis=0)),
                         index=pd.bdate_range("2015-01-01", periods=n_sessions), columns=["A", "B"])
    close.iloc[:40, 1] = np.nan
    return close


def test_garch_counts_every_scheduled_fit_and_parallel_or_cached_fits_change_nothing(bars_on, capsys, tmp_path):
    close = garch_close()
    kwargs = {"refit_every": 100, "min_history": 100}
    serial = garch_volatility(close, **kwargs)
    # A fits at return positions 99, 199 of its 259 returns; B at 99 of its 219
    fits = len(range(99, 259, 100)) + len(range(99, 219, 100))
    assert final_count(capsys.readouterr().err, "GARCH fits") == (fits, fits)
    # The pool's code path on threads, not processes (which take seconds to start). Thread limits are
    # process-wide, so one worker thread leaving its limit would lift the other's: hold it around both.
    with joblib.parallel_config(backend="threading"), threadpool_limits(limits=1):
        in_workers = garch_volatility(close, **kwargs, n_jobs=2, cache_dir=tmp_path)
    from_cache = garch_volatility(close, **kwargs, n_jobs=2, cache_dir=tmp_path)
    assert final_count(capsys.readouterr().err, "GARCH fits") == (fits, fits)
    assert serial.notna().sum().tolist() == [259 - 99, 219 - 99]
    pd.testing.assert_frame_equal(in_workers, serial, check_exact=True)
    pd.testing.assert_frame_equal(from_cache, serial, check_exact=True)


@pytest.mark.parametrize("shown", [True, False])
def test_offline_analyst_shows_one_step_per_request(shown, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SPARTAN_PROGRESS", "1" if shown else "0")
    symbols = ["AAA", "BBB", "CCC"]
    dates = pd.to_datetime(["2021-01-29", "2021-02-26", "2021-03-31", "2021-04-30"])
    tables = {d: pd.DataFrame({"momentum_12_1": [0.5 - i, 0.1 * i, -0.3]}, index=symbols) for i, d in enumerate(dates)}
    analyst = AnalystSettings(provider="offline", model="claude-sonnet-5-5", horizon_days=21, price=Price(0, 0, 0, 0),
                              knowledge_cutoff=dt.date(2021, 2, 15))
    result = generate_views(tables, analyst, ResponseCache(tmp_path / "state.db"))
    err = capsys.readouterr().err
    assert len(result.requests) == len(dates)
    assert (final_count(err, "analyst requests") == (len(dates), len(dates))) if shown else err == ""
