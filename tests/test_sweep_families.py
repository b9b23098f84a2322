"""Each shipped family, swept on real prices, is run_backtest on the weights its rule describes
(built here from pandas and the portfolio baselines, not from the engine)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research_lib.backtest import run_backtest
from research_lib.portfolio import StrategyConfig, baseline_weights
from research_lib.sweeps import families, run_sweep
from tests.test_sweep_engine import oracle_positions

MODEL = {"cost_bps": 10.0, "spread_bps": 2.0}


@pytest.fixture(scope="module")
def stocks(bundled_small) -> pd.DataFrame:
    return bundled_small.drop(columns="SP500", level="symbol").loc["2016":"2018"]


def per_symbol_books(positions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each symbol's decision rows: where its position changes."""
    changed = positions.diff().fillna(positions) != 0
    return {s: positions.loc[changed[s], [s]] for s in positions.columns}


def assert_books_are_backtests(result, books: dict[str, pd.DataFrame], prices: pd.DataFrame, config: int) -> None:
    table = result.table
    for symbol, weights in books.items():
        row = table[(table.index // len(books) == config) & (table["symbol"] == symbol)].index[0]
        backtest = run_backtest(weights, prices, **MODEL)
        np.testing.assert_allclose(result.returns[row].dropna(), backtest.returns, rtol=0, atol=1e-12)


def entry_exit_positions(entries: pd.DataFrame, exits: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(oracle_positions(entries.to_numpy(), exits.to_numpy(), False), entries.index, entries.columns)


@pytest.mark.parametrize("family, grid, signals", [
    (families.ma_crossover, [{"fast": 5, "slow": 20}, {"fast": 20, "slow": 100}],
     lambda c, fast, slow: (c.rolling(fast).mean() > c.rolling(slow).mean(),
                            ~(c.rolling(fast).mean() > c.rolling(slow).mean()))),
    (families.bollinger_bands, [{"window": 20, "k": 1.0}, {"window": 50, "k": 2.0}],
     lambda c, window, k: (c < c.rolling(window).mean() - k * c.rolling(window).std(ddof=0),
                           c >= c.rolling(window).mean())),
])
def test_entry_exit_families_are_their_backtests(stocks, family, grid, signals):
    close = stocks["close"]
    result = run_sweep(family, grid, stocks, keep_returns=True, **MODEL)
    for config, params in enumerate(grid):
        positions = entry_exit_positions(*signals(close, **params))
        assert_books_are_backtests(result, per_symbol_books(positions), stocks, config)


def test_rsi_thresholds_are_their_backtests(stocks):
    close = stocks["close"]
    grid = [{"window": 14, "lower": 30, "upper": 70}, {"window": 7, "lower": 25, "upper": 60}]
    result = run_sweep(families.rsi_thresholds, grid, stocks, keep_returns=True, **MODEL)
    for config, params in enumerate(grid):
        change = close.diff()
        gain = np.maximum(change, 0.0).rolling(params["window"]).mean()  # NaN stays NaN: no change known
        loss = np.maximum(-change, 0.0).rolling(params["window"]).mean()
        rsi = 100 * gain / (gain + loss)
        positions = entry_exit_positions(rsi < params["lower"], rsi > params["upper"])
        assert_books_are_backtests(result, per_symbol_books(positions), stocks, config)
    assert result.table["reason"].isna().all()


def test_time_series_momentum_is_its_backtest(stocks):
    close = stocks["close"]
    grid = [{"lookback": 63, "holding": 21}, {"lookback": 126, "holding": 5, "short": True}]
    result = run_sweep(families.time_series_momentum, grid, stocks, keep_returns=True, **MODEL)
    for config, params in enumerate(grid):
        trailing = close / close.shift(params["lookback"]) - 1.0
        decides = close.index[::params["holding"]]
        weights = np.sign(trailing.loc[decides]).fillna(0.0)
        if not params.get("short"):
            weights = weights.clip(lower=0.0)
        assert_books_are_backtests(result, {s: weights[[s]] for s in close.columns}, stocks, config)


def test_cross_sectional_momentum_is_the_momentum_baseline(stocks):
    grid = {"lookback": [126, 252], "skip": [21], "top_n": [2, 3]}
    result = run_sweep(families.cross_sectional_momentum, grid, stocks, keep_returns=True, **MODEL)
    assert list(result.table.columns[:3]) == ["lookback", "skip", "top_n"] and "symbol" not in result.table
    for config, row in result.table.iterrows():
        config_weights = baseline_weights(stocks["close"], StrategyConfig(
            lookback_days=row["lookback"], skip_days=row["skip"], top_n=row["top_n"]))
        backtest = run_backtest(config_weights, stocks, **MODEL)
        np.testing.assert_allclose(result.returns[config].dropna(), backtest.returns, rtol=0, atol=1e-12)
        assert row["n_obs"] == len(backtest.returns)


def test_a_product_grid_with_unordered_pairs_is_refused_with_the_list_that_qualifies(stocks):
    with pytest.raises(ValueError, match=r"configuration 2 \{'fast': 50, 'slow': 20\}: .*1 <= fast < slow.*pass them as "
                                         r"a list: \[\{'fast': f, 'slow': s\} for f in fasts for s in slows if f < s\]"):
        run_sweep(families.ma_crossover, {"fast": [5, 50], "slow": [20, 100]}, stocks)
    fasts, slows = [5, 50], [20, 100]
    result = run_sweep(families.ma_crossover, [{"fast": f, "slow": s} for f in fasts for s in slows if f < s], stocks)
    assert sorted(set(map(tuple, result.table[["fast", "slow"]].to_numpy().tolist()))) == [(5, 20), (5, 100), (50, 100)]
