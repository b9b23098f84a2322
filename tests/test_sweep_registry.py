"""Specification of a recorded sweep (issue 15): every configuration that trades is a trial, the
sweep keeps its returns matrix (float32 parquet, hashed, written atomically), and the validation
of a strategy chosen from it computes PBO and DSR over exactly that matrix."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

from research_lib.config import load_config
from research_lib.errors import ConfigError
from research_lib.validation import registry, statistics
from research_lib.validation.registry import (SweepFileError, UnknownSweep, list_sweeps, list_trials, load_sweep,
                                              record_sweep)
from tests.conftest import REPO

BACKTEST = {"cost_bps": 10.0, "execution_lag_sessions": 1}
METRICS = ("sharpe", "cagr", "annual_volatility", "max_drawdown", "annual_turnover")


def sweep_of(returns: pd.DataFrame, params: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A sweep's (table, returns) as the engine gives them: parameters, then metrics; configurations
    whose returns never vary never trade (NaN metrics, no returns column)."""
    sharpe = returns.mean() / returns.std(ddof=1) * math.sqrt(252)
    sharpe = sharpe.where(returns.std(ddof=1) > 0)
    table = params.copy()
    table["sharpe"] = sharpe.to_numpy()
    for name in METRICS[1:]:
        table[name] = np.where(sharpe.notna(), 0.1, np.nan)
    table["n_obs"] = returns.notna().sum().where(sharpe.notna(), 0).to_numpy()
    table["reason"] = pd.Series([None if ok else "never takes a position" for ok in sharpe.notna()], dtype=object)
    table.index.name = "config"
    return table, returns.loc[:, sharpe.notna().to_numpy()].rename_axis(columns="config")


def grid_sweep(n_sessions: int = 400, seed: int = 0, drift: float = 0.0003) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Twelve configurations (fast x slow x symbol) of noise, one with a warm-up, one that never trades."""
    rng = np.random.default_rng(seed)
    params = pd.DataFrame([{"fast": f, "slow": s, "symbol": sym} for f in (5, 10, 20) for s in (50, 100)
                           for sym in ("AAPL", "MSFT")])
    returns = pd.DataFrame(rng.normal(drift, 0.01, (n_sessions, len(params))),
                           index=pd.bdate_range("2019-01-01", periods=n_sessions))
    returns.iloc[:30, 3] = np.nan  # warm-up before the first trade
    returns.iloc[:, 7] = 0.0  # never trades
    return sweep_of(returns, params)


# --- recording and loading ------------------------------------------------------------------------

def test_a_recorded_sweep_loads_back_and_each_trading_configuration_is_a_trial(tmp_path):
    table, returns = grid_sweep()
    db = tmp_path / "data" / "spartan.sqlite"
    sweep_id = record_sweep(db, "ma_crossover", table, returns, BACKTEST)
    assert re.fullmatch(r"sweep-[0-9a-f]{12}", sweep_id)
    loaded = load_sweep(db, sweep_id)
    assert (loaded.id, loaded.family, loaded.params, loaded.backtest) == (sweep_id, "ma_crossover",
                                                                         ("fast", "slow", "symbol"), BACKTEST)
    pd.testing.assert_frame_equal(loaded.table, table)  # parameters, metrics, reasons, types: as given
    assert loaded.returns.dtypes.eq(np.float32).all() and list(loaded.returns.columns) == list(returns.columns)
    np.testing.assert_allclose(loaded.returns, returns, rtol=1e-7, atol=0)  # NaN warm-up where it was
    # the matrix is float32 parquet in data/sweeps/, beside the database
    listed = list_sweeps(db)
    assert len(listed) == 1 and listed.loc[0, "matrix_file"] == f"{sweep_id}.parquet"
    assert listed.loc[0, ["n_configurations", "n_trading"]].tolist() == [12, 11]
    assert listed.loc[0, "params"] == ["fast", "slow", "symbol"] and listed.loc[0, "backtest"] == BACKTEST
    assert pd.read_parquet(tmp_path / "data" / "sweeps" / f"{sweep_id}.parquet").dtypes.eq(np.float32).all()
    trials = list_trials(db)
    assert len(trials) == 11 and set(trials["run_id"]) == {sweep_id} and set(trials["family"]) == {"ma_crossover"}
    first = trials.set_index("name").loc["fast=5, slow=50, symbol=AAPL"]
    assert json.loads(first["params"]) == {"params": {"fast": 5, "slow": 50, "symbol": "AAPL"}, "backtest": BACKTEST}
    column = returns[0].dropna()
    assert first["sharpe"] == pytest.approx(column.mean() / column.std(ddof=1), rel=1e-12)  # per period, float64
    assert trials.set_index("name").loc["fast=5, slow=100, symbol=MSFT", "n_obs"] == 400 - 30  # warm-up excluded


def test_the_same_configuration_recorded_twice_is_one_trial(tmp_path):
    db = tmp_path / "spartan.sqlite"
    table, returns = grid_sweep(seed=1)
    first = record_sweep(db, "ma_crossover", table, returns, BACKTEST)
    assert record_sweep(db, "ma_crossover", table, returns, BACKTEST) == first, "the same sweep, the same id"
    assert len(list_sweeps(db)) == 1 and len(list_trials(db)) == 11
    # a later sweep over the same configurations (other dates, other returns) adds a sweep, not trials
    later, later_returns = grid_sweep(n_sessions=300, seed=2)
    assert record_sweep(db, "ma_crossover", later, later_returns, BACKTEST) != first
    assert len(list_sweeps(db)) == 2 and len(list_trials(db)) == 11
    assert registry.trial_statistics(db)["n_trials"] == 11
    # another backtest model, or another family, makes other configurations
    record_sweep(db, "ma_crossover", table, returns, {**BACKTEST, "cost_bps": 20.0})
    record_sweep(db, "rsi", table, returns, BACKTEST)
    assert len(list_trials(db)) == 33


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=hnp.arrays(np.float64, hs.tuples(hs.integers(3, 40), hs.integers(1, 5)),
                         elements=hs.one_of(hs.floats(-1e30, 1e30, allow_subnormal=False),
                                            hs.sampled_from([0.0, -0.0, 1e-30, -0.99, 3.0e38, -1e39]))),
       warm_up=hs.lists(hs.integers(0, 40), min_size=5, max_size=5))
def test_any_matrix_round_trips_within_float32_or_is_refused_by_name(values, warm_up):
    n_sessions, n_configs = values.shape
    for column, lead in enumerate(warm_up[:n_configs]):
        values[:min(lead, n_sessions - 1), column] = np.nan  # warm-up; at least one return each
    params = pd.DataFrame({"window": np.arange(n_configs) * 5 + 5})
    table, returns = sweep_of(pd.DataFrame(values, index=pd.bdate_range("2020-01-01", periods=n_sessions)), params)
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "spartan.sqlite"
        if (returns.abs() > np.finfo(np.float32).max).any().any():
            with pytest.raises(ValueError, match="beyond float32's range"):
                record_sweep(db, "f", table, returns, BACKTEST)
            return
        loaded = load_sweep(db, record_sweep(db, "f", table, returns, BACKTEST))
        original, back = returns.to_numpy(), loaded.returns.to_numpy()
        assert (np.isnan(original) == np.isnan(back)).all()
        finite = ~np.isnan(original)
        # float32: 7 significant digits; below its smallest normal number (1.2e-38) a return is noise anyway
        tiny = np.finfo(np.float32).tiny
        assert (np.abs(back[finite] - original[finite]) <= 1e-7 * np.abs(original[finite]) + tiny).all()
        assert loaded.returns.index.equals(returns.index)


def test_a_corrupted_or_missing_matrix_is_detected_by_its_hash_and_recording_again_repairs_it(tmp_path):
    db = tmp_path / "spartan.sqlite"
    table, returns = grid_sweep(seed=3)
    sweep_id = record_sweep(db, "ma_crossover", table, returns, BACKTEST)
    path = tmp_path / "sweeps" / f"{sweep_id}.parquet"
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))
    with pytest.raises(SweepFileError, match=rf"{re.escape(str(path))}, does not match its recorded sha256.*run the "
                                             "sweep again"):
        load_sweep(db, sweep_id)
    path.unlink()
    with pytest.raises(SweepFileError, match=rf"{re.escape(str(path))}, is missing; restore the file"):
        load_sweep(db, sweep_id)
    assert record_sweep(db, "ma_crossover", table, returns, BACKTEST) == sweep_id
    np.testing.assert_allclose(load_sweep(db, sweep_id).returns, returns, rtol=1e-7)
    assert len(list_sweeps(db)) == 1 and len(list_trials(db)) == 11


def _leftovers(db: Path) -> tuple[int, int, list[str]]:
    with sqlite3.connect(db) as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("sweeps", "trials")]
    folder = db.parent / "sweeps"
    return (*counts, sorted(p.name for p in folder.iterdir()) if folder.exists() else [])


def test_a_failure_while_writing_the_matrix_leaves_no_row_and_no_file(tmp_path, monkeypatch):
    db = tmp_path / "spartan.sqlite"
    table, returns = grid_sweep(seed=4)

    def disk_full(self, data):
        with open(self, "wb") as handle:
            handle.write(data[:len(data) // 2])  # half the file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space left"):
        record_sweep(db, "ma_crossover", table, returns, BACKTEST)
    assert _leftovers(db) == (0, 0, [])


def test_a_failure_while_writing_the_row_leaves_no_row_no_trial_and_no_file(tmp_path, monkeypatch):
    db = tmp_path / "spartan.sqlite"
    table, returns = grid_sweep(seed=5)

    def locked(conn, row):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(registry, "_write_sweep_row", locked)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        record_sweep(db, "ma_crossover", table, returns, BACKTEST)
    assert _leftovers(db) == (0, 0, [])  # the trials written in the same transaction are rolled back


def _swap_sessions(table, returns):
    return table, returns.iloc[[1, 0, *range(2, len(returns))]]


def _poke(row: int, column: int, value: float):
    """A spoiler that sets one return of the sweep."""
    def spoil(table, returns):
        returns = returns.copy()
        returns.iloc[row, returns.columns.get_loc(column)] = value
        return table, returns
    return spoil


@pytest.mark.parametrize("spoil, message", [
    (lambda t, r: (t.iloc[:0], r), "table has no configuration"),
    (lambda t, r: (t, r.rename(columns={0: 99})), r"columns \[99\] that are not configurations of table"),
    (lambda t, r: (t, r.drop(columns=[0])), r"configurations \[0\] have a Sharpe ratio in table but no column"),
    (lambda t, r: (t.assign(sharpe=t["sharpe"].where(t.index != 1)), r), r"\[1\] have returns but a NaN Sharpe"),
    (lambda t, r: (t.drop(columns="sharpe"), r), "table has no 'sharpe' column"),
    (_swap_sessions, "out of order or repeated"),
    (lambda t, r: (t, pd.concat([r.iloc[:1], r])), "out of order or repeated"),
    (_poke(50, 2, np.nan), r"configurations \[2\] have NaN, infinite values or values beyond float32's range "
                           r"\(3\.4e\+38\) after their first return"),
    (_poke(9, 4, -np.inf), r"configurations \[4\] have NaN, infinite"),
    (_poke(31, 3, np.nan), r"configurations \[3\] have NaN, infinite"),  # a gap after the warm-up
    (lambda t, r: (t, r * 1e41), "beyond float32's range"),
])
def test_a_sweep_whose_parts_do_not_fit_is_refused_with_the_fix(tmp_path, spoil, message):
    table, returns = spoil(*grid_sweep(seed=6))
    with pytest.raises(ValueError, match=message):
        record_sweep(tmp_path / "spartan.sqlite", "ma_crossover", table, returns, BACKTEST)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "checked before anything is written"


def test_a_sweep_in_which_nothing_trades_is_recorded_without_trials(tmp_path):
    table, returns = grid_sweep(seed=10)
    table[list(METRICS)] = np.nan
    db = tmp_path / "spartan.sqlite"
    loaded = load_sweep(db, record_sweep(db, "ma_crossover", table, returns.iloc[:, :0], BACKTEST))
    assert loaded.returns.shape == (400, 0) and len(loaded.table) == 12
    assert list_sweeps(db).loc[0, ["n_configurations", "n_trading"]].tolist() == [12, 0] and list_trials(db).empty


def test_a_malformed_family_or_backtest_model_is_refused(tmp_path):
    table, returns = grid_sweep(seed=7)
    with pytest.raises(ValueError, match="family is ''; name the strategy family"):
        record_sweep(tmp_path / "s.sqlite", "", table, returns, BACKTEST)
    with pytest.raises(TypeError, match="backtest is a list; pass the backtest model as a dict"):
        record_sweep(tmp_path / "s.sqlite", "f", table, returns, [10.0])


def test_an_unknown_sweep_id_names_the_id_and_list_sweeps(tmp_path):
    db = tmp_path / "spartan.sqlite"
    known = record_sweep(db, "ma_crossover", *grid_sweep(seed=8), BACKTEST)
    with pytest.raises(UnknownSweep, match=rf"No sweep 'sweep-0123456789ab' in the registry .*latest: \['{known}'\].*"
                                           r"list_sweeps\(\)") as raised:
        load_sweep(db, "sweep-0123456789ab")
    assert isinstance(raised.value, ConfigError)  # the CLI reports it as a parameter error (exit code 2)


# --- the validation of a strategy chosen from a sweep -----------------------------------------------

def test_validation_sweep_is_a_documented_parameter(workspace):
    config = load_config(REPO / "params" / "base.yaml")
    assert config.validation.sweep is None
    assert load_config(REPO / "params" / "base.yaml", ["validation.sweep=sweep-0123456789ab"]).validation.sweep == \
        "sweep-0123456789ab"
    with pytest.raises(ConfigError, match="swep"):
        load_config(REPO / "params" / "base.yaml", ["validation.swep=x"])
    assert re.search(r"^validation:.*\n  sweep: null +# id of the recorded sweep", (REPO / "params" / "base.yaml")
                     .read_text(), re.MULTILINE)


def _validated(workspace: Path, sweep_id: str, headline: pd.Series, monkeypatch) -> dict:
    """Stage 06 on a headline strategy and two trials, with ``validation.sweep`` set (no notebook, no backtest)."""
    from research_lib.stages import validation as stage
    from research_lib.validation.metrics import headline_metrics
    from tests.conftest import make_prices

    config = load_config(REPO / "params" / "base.yaml", [f"validation.sweep={sweep_id}"])
    prices = make_prices({"SP500": list(100 * np.cumprod(1 + headline.fillna(0) / 2))}, start="2019-01-01")
    run_dir = workspace / "reports" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    folder = SimpleNamespace(config=config, prices=prices, run_dir=run_dir, report=lambda name: None)
    other = headline.sample(frac=1.0, random_state=0).set_axis(headline.index)
    monkeypatch.setattr(stage, "run_trials", lambda f, r: {"main": ({"k": 1}, headline), "other": ({"k": 2}, other)})
    monkeypatch.setattr(stage, "cost_stress", lambda *a: {f"{m:g}x": headline_metrics(headline) for m in (1, 2, 3)})
    results = {"main": SimpleNamespace(returns=headline)}
    return stage.validate_strategy(folder, results, {"strategy_name": "main"})


def test_the_validation_page_shows_pbo_and_dsr_over_the_recorded_sweep(workspace, monkeypatch):
    from research_lib import paths
    from research_lib.validation.evidence import sweep_pbo_span

    table, returns = grid_sweep(n_sessions=600, seed=9, drift=0.0005)
    sweep_id = record_sweep(paths.state_db(), "ma_crossover", table, returns, BACKTEST)
    headline = returns[table["sharpe"].idxmax()].rename("main")
    record = _validated(workspace, sweep_id, headline, monkeypatch)
    # the oracle: statistics' own functions on the loaded matrix
    loaded = load_sweep(paths.state_db(), sweep_id)
    common = loaded.returns.dropna()  # the warm-up of configuration 3 is left out for all
    assert len(common) == 600 - 30 and sweep_pbo_span(loaded.returns).equals(common)
    pbo = statistics.probability_of_backtest_overfitting(common)
    sharpes = [c.dropna().astype(float).mean() / c.dropna().astype(float).std(ddof=1) for _, c in loaded.returns.items()]
    assert len(sharpes) == 11
    variance = float(np.var(sharpes, ddof=1))
    moments = statistics.sharpe_moments(headline)
    dsr = statistics.deflated_sharpe_ratio(moments["sharpe"], moments["n_obs"], moments["skew"], moments["kurtosis"],
                                           11, variance)
    sweep = record["sweep"]
    assert (sweep["id"], sweep["n_configurations"], sweep["n_trading"], sweep["n_never_traded"]) == (sweep_id, 12, 11, 1)
    assert sweep["n_trials"] == 11 and sweep["sharpe_variance"] == pytest.approx(variance, rel=1e-12)
    assert sweep["dsr"] == pytest.approx(dsr, rel=1e-12)
    assert sweep["pbo"]["pbo"] == pytest.approx(pbo["pbo"], rel=1e-12)
    assert sweep["pbo"]["n_combinations"] == pbo["n_combinations"] == 12870
    assert sweep["pbo_sessions"] == 570 and sweep["pbo_first"] == str(common.index[0].date())
    # the gate still judges the run's own trials; the record and the page gain the sweep
    assert record["gate_stats"]["n_trials"] == registry.trial_statistics(paths.state_db())["n_trials"]
    saved = json.loads((workspace / "reports" / "runs" / "r1" / "validation.json").read_text())
    assert saved["sweep"]["pbo"]["pbo"] == sweep["pbo"]["pbo"]
    page = (workspace / "reports" / "runs" / "r1" / "validation.html").read_text()
    assert f'id="sweep-pbo">{pbo["pbo"]:.4f}<' in page and f'id="sweep-dsr">{dsr:.4f}<' in page
    assert f"<code>{sweep_id}</code>" in page and "12 (1)" in page and "570 sessions" in page
    assert re.search(r'id="sweep-claim">As named by <code>validation.sweep</code>: the page cannot check that '
                     r'<code>main</code> was chosen from this sweep \(ma_crossover\)', page), \
        "the page says whose claim ties the strategy to the sweep"
    assert "before a configuration&#39;s first trade" in page or "before a configuration's first trade" in page


def test_an_unknown_sweep_stops_the_validation_stage_before_it_records_anything(workspace, monkeypatch):
    from research_lib import paths

    headline = pd.Series(np.random.default_rng(1).normal(0, 0.01, 300), index=pd.bdate_range("2019-01-01", periods=300))
    with pytest.raises(UnknownSweep, match=r"No sweep 'sweep-0123456789ab'.*list_sweeps\(\)"):
        _validated(workspace, "sweep-0123456789ab", headline, monkeypatch)
    assert list_trials(paths.state_db()).empty and not (workspace / "reports" / "runs" / "r1" / "validation.json").exists()


# --- after the review of issue 15 ---------------------------------------------------------------------

def test_a_failed_recording_never_removes_a_file_another_process_recorded(tmp_path, monkeypatch):
    db = tmp_path / "spartan.sqlite"
    table, returns = grid_sweep(seed=11)
    real_insert, other = registry._insert_trials, {}
    monkeypatch.setattr(registry, "BUSY_TIMEOUT_S", 0.2, raising=False)  # the other writer gives up quickly

    def meanwhile(conn, rows):
        monkeypatch.setattr(registry, "_insert_trials", real_insert)
        try:  # another process records the same sweep while this one is recording it
            other["id"] = record_sweep(db, "ma_crossover", table, returns, BACKTEST)
        except sqlite3.OperationalError as error:
            other["error"] = str(error)
        raise sqlite3.OperationalError("disk I/O error")  # then this one fails

    monkeypatch.setattr(registry, "_insert_trials", meanwhile)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        record_sweep(db, "ma_crossover", table, returns, BACKTEST)
    for sweep_id in list_sweeps(db)["id"]:  # whatever the other did, every recorded sweep loads
        load_sweep(db, sweep_id)
    assert other == {"error": "database is locked"}, "the two recordings take turns under the write lock"
    assert _leftovers(db) == (0, 0, [])
    assert load_sweep(db, record_sweep(db, "ma_crossover", table, returns, BACKTEST)).returns.shape == (400, 11)


@pytest.mark.parametrize("spoil, error, message", [
    (lambda t, r: (t.assign(slow=50), r), ValueError,
     r"configurations \[\[0, 2\], \[1, 3\], .* have the same parameters \(e\.g\. \{'fast': 5, 'slow': 50, 'symbol': "
     r"'AAPL'\}\); each configuration must differ"),
    (lambda t, r: (t.set_axis(pd.MultiIndex.from_arrays([t.index, t.index], names=["a", "b"])), r), TypeError,
     r"table's index is a MultiIndex of levels \['a', 'b'\]; label each configuration with one value"),
    (lambda t, r: (t, r.set_axis(pd.MultiIndex.from_arrays([r.columns, r.columns]), axis=1)), TypeError,
     "returns' columns is a MultiIndex"),
    (lambda t, r: (t.set_axis(pd.Index([1, "1", *range(2, 12)], dtype=object)),
                   r.set_axis(pd.Index([1, "1", *[c for c in r.columns if c > 1]], dtype=object), axis=1)), ValueError,
     r"table's index has labels that are the same as text, \[1, '1'\] \(e\.g\. 1 and '1'\)"),
])
def test_repeated_configurations_and_unstorable_labels_are_refused_by_name(tmp_path, spoil, error, message):
    table, returns = spoil(*grid_sweep(seed=12))
    with pytest.raises(error, match=message):
        record_sweep(tmp_path / "spartan.sqlite", "ma_crossover", table, returns, BACKTEST)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "checked before anything is written"


def test_one_late_starter_is_left_out_of_pbo_not_the_span_of_all(workspace, monkeypatch):
    from research_lib import paths

    table, returns = grid_sweep(n_sessions=600, seed=13, drift=0.0005)
    returns.iloc[:585, 5] = np.nan  # starts trading 15 sessions before the end
    returns.iloc[:100, 6] = np.nan  # a warm-up of 100 sessions: within the first 20 %
    sweep_id = record_sweep(paths.state_db(), "ma_crossover", table, returns, BACKTEST)
    record = _validated(workspace, sweep_id, returns[0].rename("main"), monkeypatch)
    sweep = record["sweep"]
    kept = returns.drop(columns=[5]).iloc[100:]  # the oracle: the rule applied by hand
    assert (sweep["pbo_late_starts"], sweep["pbo_configurations"], sweep["pbo_sessions"]) == (1, 10, 500)
    assert sweep["pbo"]["pbo"] == pytest.approx(statistics.probability_of_backtest_overfitting(kept)["pbo"], rel=1e-12)
    assert sweep["n_trials"] == 11, "DSR still counts the late starter"
    page = (workspace / "reports" / "runs" / "r1" / "validation.html").read_text()
    assert "PBO over the 500 sessions" in page and "more than 20% of the sessions after the earliest one" in page
    assert "1 left out" in page


def test_a_sweep_in_which_nothing_trades_shows_no_pbo_and_no_dsr(workspace, monkeypatch):
    from research_lib import paths

    table, returns = grid_sweep(seed=14)
    table[list(METRICS)] = np.nan
    sweep_id = record_sweep(paths.state_db(), "ma_crossover", table, returns.iloc[:, :0], BACKTEST)
    record = _validated(workspace, sweep_id, returns[0].rename("main"), monkeypatch)
    sweep = record["sweep"]
    assert (sweep["n_trials"], sweep["dsr"], sweep["pbo"], sweep["expected_max_sharpe_annual"]) == (0, None, None, None)
    page = (workspace / "reports" / "runs" / "r1" / "validation.html").read_text()
    assert 'id="sweep-pbo">no configuration trades: no PBO/DSR<' in page
    assert "Trials counted" not in page and "PBO over the" not in page


def test_a_wide_sweep_ranks_a_seeded_sample_of_configurations_said_on_the_page(workspace, monkeypatch):
    from research_lib import paths
    from research_lib.validation import evidence

    table, returns = grid_sweep(n_sessions=300, seed=15)
    sweep_id = record_sweep(paths.state_db(), "ma_crossover", table, returns, BACKTEST)
    monkeypatch.setattr(evidence, "PBO_MAX_BOOKS", 6)  # a wide sweep, in small
    sweep = _validated(workspace, sweep_id, returns[0].rename("main"), monkeypatch)["sweep"]
    assert (sweep["pbo_configurations"], sweep["pbo_sampled_from"], sweep["n_trials"]) == (6, 11, 11)
    loaded = load_sweep(paths.state_db(), sweep_id).returns.dropna()
    picked = np.sort(np.random.default_rng(evidence.PBO_SAMPLE_SEED).choice(11, size=6, replace=False))
    oracle = statistics.probability_of_backtest_overfitting(loaded.iloc[:, picked])
    assert sweep["pbo"]["pbo"] == pytest.approx(oracle["pbo"], rel=1e-12)
    page = (workspace / "reports" / "runs" / "r1" / "validation.html").read_text()
    assert "PBO ranks at most 6 returns columns: a random sample of 6 of those 11 books (configuration x symbol) (seed 0); DSR counts them all" in page
    whole = evidence.sweep_statistics(loaded, 12, None, max_pbo_books=20)
    assert whole["pbo_sampled_from"] is None and whole["pbo_configurations"] == 11
