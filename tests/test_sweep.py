"""Parameter sweeps: the vectorized crossover equals the backtester, the grid sweep equals its backtests."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from research_lib.validation import metrics, sweep
from research_lib.backtest import run_backtest
from research_lib.portfolio import StrategyConfig, baseline_weights
from research_lib.validation.sweep import ma_crossover_sweep
from tests.conftest import make_prices

PAIRS = [(2, 5), (3, 10), (5, 20)]


@pytest.fixture(scope="module")
def listed_and_delisted() -> pd.DataFrame:
    """Random walks of 150 sessions: B is listed on session 30; C rises to session 110, when
    every pair holds it, and its prices end there."""
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(150, 3)), axis=0))
    closes[:30, 1] = np.nan
    closes[80:111, 2] = closes[79, 2] * 1.01 ** np.arange(1, 32)
    closes[111:, 2] = np.nan
    return make_prices({s: closes[:, i] for i, s in enumerate("ABC")})


def test_crossover_by_hand():
    close = make_prices({"A": [1.0, 2, 3, 4, 3, 2]})["close"]
    result = ma_crossover_sweep(close, [(1, 2)], cost_bps=10, keep_returns=True)
    # Long after a rise (decided at its close, bought at the next close): bought at the close
    # of session 2, held through 3 (+1/3) and 4 (-1/4), sold at the close of 5 (-1/3). The
    # series starts at the first trade, as run_backtest's (NaN before).
    np.testing.assert_allclose(result.returns[0], [np.nan, np.nan, -0.001, 1 / 3, -0.25, 2 / 3 * 0.999 - 1],
                               atol=1e-15)
    assert result.table.loc[0, ["fast", "slow", "symbol", "n_obs"]].tolist() == [1, 2, "A", 4]
    assert result.table.loc[0, "annual_turnover"] == pytest.approx(2 / (4 / 252))


def test_crossover_equals_the_backtester_symbol_by_symbol(listed_and_delisted):
    close = listed_and_delisted["close"]
    result = ma_crossover_sweep(close, PAIRS, cost_bps=25, keep_returns=True)
    for config, (fast, slow, symbol) in result.table[["fast", "slow", "symbol"]].iterrows():
        prices = close[symbol]
        long = prices.rolling(fast).mean() > prices.rolling(slow).mean()
        weights = (long & prices.shift(-1).notna()).astype(float).to_frame(symbol)  # flat where the trade has no price
        swept = result.returns[config]
        backtest = run_backtest(weights, listed_and_delisted, cost_bps=25).returns
        np.testing.assert_allclose(swept.loc[backtest.index], backtest, atol=1e-13)
        assert swept.loc[:backtest.index[0]].iloc[:-1].isna().all(), "no series before its first trade"


def test_crossover_metrics_are_those_of_research_lib_metrics(listed_and_delisted):
    result = ma_crossover_sweep(listed_and_delisted["close"], PAIRS, keep_returns=True)
    for config, row in result.table.iterrows():
        returns = result.returns[config].dropna().to_numpy()
        assert row["sharpe"] == pytest.approx(metrics.sharpe_ratio(returns), rel=1e-10)
        assert row["cagr"] == pytest.approx(metrics.cagr(returns), rel=1e-10)
        assert row["annual_volatility"] == pytest.approx(metrics.annual_volatility(returns), rel=1e-10)
        assert row["max_drawdown"] == pytest.approx(metrics.max_drawdown(returns), rel=1e-10)


def test_crossover_batches_give_the_same_table(listed_and_delisted, monkeypatch):
    from research_lib.sweeps import engine

    whole = ma_crossover_sweep(listed_and_delisted["close"], PAIRS).table
    monkeypatch.setattr(engine, "BATCH_BUDGET_BYTES", 1)  # one configuration per batch
    pd.testing.assert_frame_equal(ma_crossover_sweep(listed_and_delisted["close"], PAIRS).table, whole)


NOT_A_PAIR = r"is not \(fast, slow\) whole numbers of sessions with 1 <= fast < slow; e.g. \(10, 50\)"


@pytest.mark.parametrize("pairs, match", [
    ([], r"pairs is empty; give \(fast, slow\) windows"),
    ([(2, 5), (5, 5)], r"pair \(5, 5\) " + NOT_A_PAIR),
    ([(6, 3)], r"pair \(6, 3\) " + NOT_A_PAIR),
    ([(0, 4)], r"pair \(0, 4\) " + NOT_A_PAIR),
    ([(-2, 4)], r"pair \(-2, 4\) " + NOT_A_PAIR),
    ([(2.5, 10)], r"pair \(2.5, 10\) " + NOT_A_PAIR),
    ([(True, 3)], r"pair \(True, 3\) " + NOT_A_PAIR),
    ([(1, 2, 3)], r"pair \(1, 2, 3\) " + NOT_A_PAIR),
    ([("1", "2")], r"pair \('1', '2'\) " + NOT_A_PAIR),
])
def test_bad_pairs_are_refused(listed_and_delisted, pairs, match):
    """A malformed pair is an error; a slow window longer than the data is a row that never
    trades (tests/test_sweep_never_trades.py)."""
    with pytest.raises(ValueError, match=match):
        ma_crossover_sweep(listed_and_delisted["close"], pairs)


def momentum_weights(prices: pd.DataFrame, lookback_days: int, top_n: int) -> pd.DataFrame:
    close = prices["close"].drop(columns="SP500")
    return baseline_weights(close, StrategyConfig(lookback_days=lookback_days, skip_days=21, top_n=top_n))


def test_grid_sweep_is_each_configurations_backtest(bundled_small):
    result = sweep.sweep({"lookback_days": [126, 252], "top_n": [2, 3]}, momentum_weights, bundled_small,
                         cost_bps=20, spread_bps=5, record=False)  # float64 returns (recorded: float32)
    table = result.table
    assert table[["lookback_days", "top_n"]].values.tolist() == [[126, 2], [126, 3], [252, 2], [252, 3]]
    assert list(result.returns.columns) == list(table.index)
    for config, row in table.iterrows():
        backtest = run_backtest(momentum_weights(bundled_small, row["lookback_days"], row["top_n"]), bundled_small,
                                cost_bps=20, spread_bps=5)
        returns = result.returns[config].dropna()
        pd.testing.assert_series_equal(returns, backtest.returns, check_names=False, check_freq=False)
        assert row["sharpe"] == pytest.approx(metrics.sharpe_ratio(returns.to_numpy()), rel=1e-10)
        assert row["max_drawdown"] == pytest.approx(metrics.max_drawdown(returns.to_numpy()), rel=1e-10)
        assert row["n_obs"] == len(backtest.returns)
        assert row["annual_cost"] == pytest.approx(backtest.costs.sum() / (len(returns) / 252))
    assert result.returns[0].first_valid_index() < result.returns[2].first_valid_index(), \
        "a longer lookback starts later: NaN before its first trade"


def test_grid_sweep_takes_a_list_of_configurations_and_names_the_one_that_fails(bundled_small):
    result = sweep.sweep([{"lookback_days": 126, "top_n": 2}], momentum_weights, bundled_small)
    assert result.table[["lookback_days", "top_n"]].values.tolist() == [[126, 2]]
    with pytest.raises(ValueError, match=r"(?s)configuration 1 \{'lookback_days': 21, 'top_n': 2\}: .*skip_days \(21\) "
                                         r"must be smaller than lookback_days \(21\)"):
        sweep.sweep({"lookback_days": [126, 21], "top_n": [2]}, momentum_weights, bundled_small)
    with pytest.raises(ValueError, match=r"grid\['top_n'\] must be a list of values \(got 2\); e.g. \[2\]"):
        sweep.sweep({"lookback_days": [126], "top_n": 2}, momentum_weights, bundled_small)
    with pytest.raises(ValueError, match="has no configuration"):
        sweep.sweep({"lookback_days": [], "top_n": [2]}, momentum_weights, bundled_small)


def test_a_grid_sweep_is_recorded_in_the_workspace_registry_once(bundled_small, tmp_path, monkeypatch):
    from research_lib.validation.registry import list_trials, trial_statistics

    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "base.yaml").write_text("scenario: base\n")
    db = tmp_path / "data" / "spartan.sqlite"
    grid = {"lookback_days": [126, 252], "top_n": [2, 3]}
    sweep.sweep(grid, momentum_weights, bundled_small, cost_bps=20)
    assert trial_statistics(db)["n_trials"] == 4, "every configuration tried counts for the deflated Sharpe"
    assert list_trials(db)["family"].str.endswith("momentum_weights").all()
    sweep.sweep(grid, momentum_weights, bundled_small, cost_bps=20)
    assert trial_statistics(db)["n_trials"] == 4, "the same configurations again are not new trials"
    sweep.sweep(grid, momentum_weights, bundled_small, cost_bps=30)
    assert trial_statistics(db)["n_trials"] == 8, "other costs: other configurations"
    sweep.sweep({"lookback_days": [63], "top_n": [2]}, momentum_weights, bundled_small, record=False)
    assert trial_statistics(db)["n_trials"] == 8


def _edited_momentum_weights(prices: pd.DataFrame, lookback_days: int, top_n: int) -> pd.DataFrame:
    """momentum_weights after an edit: the same name and parameters, other code (skips 10 sessions)."""
    close = prices["close"].drop(columns="SP500")
    return baseline_weights(close, StrategyConfig(lookback_days=lookback_days, skip_days=10, top_n=top_n))


_edited_momentum_weights.__name__ = _edited_momentum_weights.__qualname__ = "momentum_weights"


def test_an_edited_strategy_swept_again_adds_new_trials(bundled_small, tmp_path, monkeypatch):
    """A trial is the strategy's code too: the same parameters of an edited strategy were not tried before."""
    from research_lib.validation.registry import list_trials, trial_statistics

    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path))
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "base.yaml").write_text("scenario: base\n")
    db = tmp_path / "data" / "spartan.sqlite"
    grid = {"lookback_days": [126, 252], "top_n": [2]}
    sweep.sweep(grid, momentum_weights, bundled_small, cost_bps=20)
    sweep.sweep(grid, _edited_momentum_weights, bundled_small, cost_bps=20)
    trials = list_trials(db)
    assert trial_statistics(db)["n_trials"] == 4 and trials["family"].nunique() == 1, \
        "same family name, same parameters, other code: two more trials"
    assert sweep.code_digest(momentum_weights) != sweep.code_digest(_edited_momentum_weights)
    sweep.sweep(grid, _edited_momentum_weights, bundled_small, cost_bps=20)
    assert trial_statistics(db)["n_trials"] == 4, "the edited strategy again: nothing new"

_DIGESTS = """
import functools, sys
sys.path.insert(0, sys.argv[1])
from research_lib.validation.sweep import code_digest
from strategies import Scaled, above, weights
made = eval("lambda prices, k: prices.gt({'a', 'b', 'c'} and k).where(prices > 0, (lambda q: q)(0.0))")
print(code_digest(made), code_digest(above(1.0)), code_digest(functools.partial(weights, k=2)),
      code_digest(Scaled(2)), code_digest(weights))
"""

_STRATEGIES = """
import numpy as np
def weights(prices, k=1, table=np.arange(5.0)):
    return prices * k
def above(threshold):
    def signal(prices):
        return prices > threshold
    return signal
class Scaled:
    def __init__(self, k):
        self.k = k
    def __call__(self, prices):
        return prices * self.k
"""


def test_a_strategy_is_named_by_what_it_computes_the_same_in_every_process(tmp_path):
    """The registry counts a strategy once per distinct computation, across sessions: its digest
    may not depend on the process (hash seed, object addresses), and must change with a captured
    threshold, a bound argument, an object's attribute or a default, not only with the source."""
    import subprocess
    import sys

    (tmp_path / "strategies.py").write_text(_STRATEGIES)
    runs = [subprocess.run([sys.executable, "-c", _DIGESTS, str(tmp_path)], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split()
            for seed in ("1", "2")]
    assert runs[0] == runs[1] and len(set(runs[0])) == 5, runs
    sys.path.insert(0, str(tmp_path))
    try:
        import functools

        from strategies import Scaled, above, weights
    finally:
        sys.path.remove(str(tmp_path))
    assert sweep.code_digest(above(1.0)) != sweep.code_digest(above(2.0)), "a captured threshold"
    assert sweep.code_digest(functools.partial(weights, k=2)) != sweep.code_digest(functools.partial(weights, k=3))
    assert sweep.code_digest(Scaled(2)) != sweep.code_digest(Scaled(3)), "a callable object's attributes"
    weights.__defaults__ = (1, np.arange(6.0))  # a default array edited: the function computes otherwise
    assert sweep.code_digest(functools.partial(weights, k=2)) != runs[0][2] and sweep.code_digest(weights) != runs[0][4]
    sys.modules.pop("strategies")


def test_a_repeated_configuration_is_refused_before_a_recorded_sweep_computes_anything(bundled_small, tmp_path,
                                                                                        monkeypatch):
    """Recorded twice it would be one trial counted twice; the refusal comes before the grid runs."""
    from research_lib.sweeps import families

    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path))
    calls = []

    def counted(prices, lookback_days, top_n):
        calls.append(lookback_days)
        return momentum_weights(prices, lookback_days, top_n)

    with pytest.raises(ValueError, match=r"configurations 0 and 2 are the same, \{'lookback_days': 126, 'top_n': 2\}; "
                                         r".*drop the repeated value from the grid"):
        sweep.sweep({"lookback_days": [126, 252, np.int64(126)], "top_n": [2]}, counted, bundled_small)
    assert calls == [] and not (tmp_path / "data").exists(), "nothing computed, nothing recorded"
    with pytest.raises(ValueError, match=r"configurations 0 and 1 are the same, \{'window': 14"):
        sweep.sweep([{"window": 14, "lower": 30, "upper": 70}] * 2, families.rsi_thresholds, bundled_small)
    kept = sweep.sweep({"lookback_days": [126, 126], "top_n": [2]}, counted, bundled_small, record=False)
    assert len(kept.table) == 2, "an unrecorded sweep may repeat a configuration: it counts no trial"
