"""The compute backend (research_lib.compute): the fan-out points give the same numbers on a Dask
LocalCluster of 2 worker processes as locally; Dask is started by the code (or by the test, for
a scheduler given by address) and stopped after use; errors name what failed and the fix."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster

from research_lib import compute
from research_lib.compute import ADDRESS_ENV, ComputeConfig, cluster_for_run, current_backend, map_tasks, use_backend
from research_lib.errors import ConfigError
from research_lib.features._garch import garch_volatility
from research_lib.portfolio import PortfolioConfig, PortfolioConstraints, construct_portfolio
from research_lib.risk import RiskLimits
from research_lib.signals import permutation_importance
from research_lib.signals.models import WalkForwardModel
from research_lib.sweeps import entry_exit, run_sweep
from research_lib.sweeps.families import rsi_thresholds


@pytest.fixture(autouse=True)
def no_run_cluster(monkeypatch):
    """No test inherits a run's cluster address (the backend is what each test chooses)."""
    monkeypatch.delenv(ADDRESS_ENV, raising=False)


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes, started here and closed after the module."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as started:
        yield started


@pytest.fixture
def on_dask(cluster):
    """The Dask backend on the module's cluster, by its address (as for a dask-jobqueue cluster)."""
    config = ComputeConfig(backend="dask", address=cluster.scheduler_address)
    with use_backend(config):
        yield config
    assert compute._session is None  # the client is closed with the block


def both(work):
    """``work()`` locally and on the current Dask backend: ``(local, dask)``."""
    with use_backend(ComputeConfig()):
        local = work()
    dask = work()
    assert compute._session is not None  # it went to Dask
    return local, dask


# ---------------------------------------------------------------- the same numbers on Dask

def test_garch_features_are_identical_on_dask(on_dask, bundled_small, tmp_path):
    close = bundled_small["close"][["AAPL", "JPM", "KO"]]
    # On the workers, the fits also land in the disk cache; read back here, they give the same numbers.
    local, dask = both(lambda: garch_volatility(close, refit_every=150, min_history=300, window=350,
                                                cache_dir=tmp_path / ("dask" if compute._chosen.backend == "dask"
                                                                      else "local")))
    with use_backend(ComputeConfig()):
        from_cache = garch_volatility(close, refit_every=150, min_history=300, window=350, cache_dir=tmp_path / "dask")
    assert local.notna().to_numpy().sum() > 1500
    pd.testing.assert_frame_equal(dask, local, check_exact=True)
    pd.testing.assert_frame_equal(from_cache, local, check_exact=True)


def test_a_walk_forward_fit_and_its_importance_are_identical_on_dask(on_dask):
    rng = np.random.default_rng(0)
    index = pd.MultiIndex.from_product([pd.bdate_range("2000-01-03", periods=600), [f"S{i:02d}" for i in range(15)]],
                                       names=["date", "symbol"])
    X = pd.DataFrame(rng.normal(size=(len(index), 4)), index=index, columns=[f"f{i}" for i in range(4)])
    y = pd.Series(0.2 * X["f0"].to_numpy() + rng.normal(size=len(index)), index=index, name="label")

    def fit():
        model = WalkForwardModel("hgbr", test_days=100, min_train_days=300, horizon=1, embargo_days=0, n_jobs=2)
        model.fit(X, y)
        return model, permutation_importance(model, X, y, n_repeats=2)

    (local, local_importance), (dask, dask_importance) = both(fit)
    assert len(local.folds_) == 3
    pd.testing.assert_series_equal(dask.predictions_, local.predictions_, check_exact=True)
    assert dask.folds_ == local.folds_
    pd.testing.assert_frame_equal(dask_importance, local_importance, check_exact=True)


def test_a_sweep_is_identical_on_dask_batch_by_batch(on_dask, bundled_small):
    prices = bundled_small[["close", "volume"]]

    @entry_exit
    def rsi_or_trend(ind, window, lower, trend):  # defined here, as in a notebook: sent to the workers by value
        rsi = ind.rsi(window)
        return (rsi < lower) | (trend and ind.close > ind.close.shift(window)), rsi > 100 - lower

    for strategy, grid in ((rsi_thresholds, {"window": [5, 14], "lower": [25, 30, 35], "upper": [65, 75]}),
                           (rsi_or_trend, {"window": [5, 10, 20], "lower": [20, 30], "trend": [False, True]})):
        local, dask = both(lambda: run_sweep(strategy, grid, prices, keep_returns=True, batch_size=1,
                                             cost_bps=5.0, spread_bps=2.0))
        assert math.prod(map(len, grid.values())) > compute.TASKS_PER_THREAD * 2  # more batches than in flight
        pd.testing.assert_frame_equal(dask.table, local.table, check_exact=True)
        pd.testing.assert_frame_equal(dask.returns, local.returns, check_exact=True)
        assert local.table["sharpe"].notna().sum() > 10


def test_portfolio_constructions_are_identical_on_dask(on_dask):
    rng = np.random.default_rng(11)
    dates = pd.bdate_range("2021-01-04", periods=300)
    symbols = [f"S{i}" for i in range(6)]
    close = pd.DataFrame(100 * np.cumprod(1 + rng.normal(0.0004, 0.015, size=(300, 6)), axis=0), index=dates,
                         columns=symbols)
    ml, llm = (pd.DataFrame(rng.normal(size=(300, 6)), index=dates, columns=symbols) for _ in range(2))
    settings = PortfolioConfig(lookback_days=60, capital=1e6, method="black_litterman", signal="blend", ml_weight=0.6,
                               max_signal_age_sessions=10, constraints=PortfolioConstraints(max_weight=0.4))
    limits = RiskLimits(max_weight=0.3, max_gross_exposure=1.05, max_net_exposure=1.0, max_order_notional=1e12,
                        max_adv_fraction=1.0, fat_finger_band=0.05, max_price_age_seconds=900.0, max_open_orders=50,
                        max_daily_orders=100, daily_loss_limit=0.05, drawdown_stop=0.25)
    rebalance = dates[[30, 70, 100, 130, 160, 190, 220, 250, 280, 299]]  # the first in cash: too little history
    local, dask = both(lambda: construct_portfolio(close, rebalance, settings, limits, scores={"ml": ml, "llm": llm},
                                                   confidences={"llm": 0.4}))
    for name in ("weights", "optimizer_weights", "risk_events", "notes"):
        pd.testing.assert_frame_equal(getattr(dask, name), getattr(local, name), check_exact=True)
    assert len(local.notes) == 1 and local.weights.abs().to_numpy().sum() > 5


# ---------------------------------------------------------------- starting, connecting, stopping

def test_a_run_starts_its_local_cluster_hands_its_address_to_the_kernels_and_closes_it(capsys):
    with cluster_for_run(ComputeConfig(backend="dask", n_workers=2)):
        started = compute._session.cluster
        address = os.environ[ADDRESS_ENV]
        assert address == started.scheduler_address and len(started.workers) == 2
        assert map_tasks(_square, range(5)) == [0, 1, 4, 9, 16]
    assert ADDRESS_ENV not in os.environ and compute._session is None
    assert started.status.name == "closed"
    assert f"Dask: 2 worker(s) on a LocalCluster started here at {address}; dashboard:" in capsys.readouterr().out


def test_a_kernel_of_a_run_takes_the_runs_cluster_from_the_environment(monkeypatch):
    monkeypatch.setattr(compute, "_chosen", None)
    assert current_backend() == ComputeConfig()
    monkeypatch.setenv(ADDRESS_ENV, "tcp://10.0.0.5:8786")
    assert current_backend() == ComputeConfig(backend="dask", address="tcp://10.0.0.5:8786")
    with use_backend(ComputeConfig(backend="dask", n_workers=3)):  # the run's params: no LocalCluster of its own
        assert current_backend().address == "tcp://10.0.0.5:8786"
    with use_backend(ComputeConfig(backend="dask", address="tcp://10.0.0.6:8786")):
        assert current_backend().address == "tcp://10.0.0.6:8786"
    with use_backend(ComputeConfig()):
        assert current_backend().backend == "local"


def test_a_scheduler_given_by_address_is_used_and_left_running(cluster, on_dask):
    assert map_tasks(_square, range(3)) == [0, 1, 4]
    assert compute._session.cluster is None  # connected, not started
    compute._close_session()
    assert cluster.status.name == "running" and len(cluster.scheduler_info["workers"]) == 2


def test_a_wrong_address_fails_quickly_naming_it_and_the_fix(monkeypatch):
    monkeypatch.setattr(compute, "CONNECT_TIMEOUT_S", 2)
    started = time.perf_counter()
    with use_backend(ComputeConfig(backend="dask", address="tcp://127.0.0.1:1")):
        with pytest.raises(ConfigError, match=r"compute.address 'tcp://127.0.0.1:1': no Dask scheduler answered "
                                              r"within 2 s .*leave compute.address empty.*compute.backend: local"):
            map_tasks(_square, range(3))
    assert time.perf_counter() - started < 10


def test_an_address_needs_the_dask_backend():
    with pytest.raises(ValueError, match="address 'tcp://h:8786' is set but backend is 'local'; set compute.backend"):
        ComputeConfig(address="tcp://h:8786")


# ---------------------------------------------------------------- errors and nesting

@pytest.mark.parametrize("backend", ["local", "dask"])
def test_a_tasks_error_keeps_its_type_and_names_the_task_and_its_item(backend, request):
    if backend == "dask":
        request.getfixturevalue("on_dask")
    with pytest.raises(ZeroDivisionError) as raised:
        map_tasks(_inverse, [4, 2, 0, 1], desc="inverses", n_jobs=2)
    assert raised.value.__notes__ == ["raised by inverses task 2, item 0"]


def test_a_task_that_fans_out_again_runs_its_tasks_in_its_own_process(on_dask):
    assert map_tasks(_fan_out_inside_a_task, [3]) == [[0, 1, 4]]


def _square(x: int) -> int:
    return x * x


def _inverse(x: int) -> float:
    return 1 / x


def _fan_out_inside_a_task(n: int) -> list:
    """On a worker whose environment names a scheduler that does not exist: still computed (locally)."""
    os.environ[ADDRESS_ENV] = "tcp://127.0.0.1:1"
    try:
        return map_tasks(_square, range(n), n_jobs=2)  # in this process: a worker's may not have children
    finally:
        del os.environ[ADDRESS_ENV]


# ---------------------------------------------------------------- the smoke scenario end to end

@pytest.mark.notebook
def test_a_smoke_run_on_a_dask_local_cluster_gives_the_local_runs_numbers(workspace, capfd):
    """``spartan run`` with ``compute.backend: dask`` (2 worker processes, started and closed by the
    run) gives tests/golden/smoke_metrics.json, the numbers of the local backend, to the bit."""
    from research_lib.cli import main
    from tests.conftest import REPO

    assert main(["run", str(workspace / "params" / "smoke.yaml"), "--set", "llm.provider=offline",
                 "--set", "compute.backend=dask", "--set", "compute.n_workers=2"]) == 0
    out = capfd.readouterr().out
    assert "Dask: 2 worker(s) on a LocalCluster started here" in out and ADDRESS_ENV not in os.environ
    (run,) = (workspace / "reports" / "runs").iterdir()
    golden = json.loads((REPO / "tests" / "golden" / "smoke_metrics.json").read_text())
    assert json.loads((run / "metrics.json").read_text()) == golden
    assert "Dask: 2 worker(s) on the scheduler at" in (run / "02_build_features.ipynb").read_text()  # a kernel used it
