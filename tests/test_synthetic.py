"""The synthetic market (data.source: synthetic): seeded, shaped like a market, validated like every
source, labelled on its pages, and carrying a planted signal the ML stage finds only when planted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from research_lib.data import SyntheticConfig, load_prices, market_label, synthetic_symbols
from research_lib.errors import DataValidationError

CONTEXT = {"SYN_INDEX": "data.benchmark", "SYN_VIX": "features.vix_symbol"}


def _load(tmp_path, start="2010-01-04", end="2016-12-30", symbols=None, context=CONTEXT, **config):
    return load_prices("synthetic", symbols, start, end, snapshot_dir=tmp_path, context=context,
                       synthetic=SyntheticConfig(**config))


def test_the_same_parameters_give_the_same_market_and_another_seed_another(tmp_path):
    first = _load(tmp_path / "a", n_symbols=30, seed=3)
    again = _load(tmp_path / "b", n_symbols=30, seed=3)
    other = _load(tmp_path / "c", n_symbols=30, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not np.allclose(first["close"].fillna(0), other["close"].fillna(0))
    assert first.attrs["provenance"]["sha256"] == again.attrs["provenance"]["sha256"]


def test_a_market_has_listings_delistings_without_gaps_and_consistent_bars(tmp_path):
    prices = _load(tmp_path, n_symbols=200, listed_late=0.3, delisted=0.25)
    close = prices["close"][synthetic_symbols(200)]
    listed_late = close.iloc[0].isna().mean()
    delisted = close.iloc[-1].isna().mean()
    assert 0.2 < listed_late < 0.4 and 0.15 < delisted < 0.35
    for symbol in close:  # between its first and last close a stock always has a price
        alive = close[symbol].loc[close[symbol].first_valid_index():close[symbol].last_valid_index()]
        assert alive.notna().all() and len(alive) >= 252
    bars = {f: prices[f][close.columns].to_numpy() for f in ("open", "high", "low", "close", "volume")}
    known = np.isfinite(bars["close"])
    assert (np.isfinite(bars["volume"]) == known).all() and (bars["volume"][known] >= 1).all()
    assert (bars["high"][known] >= np.maximum(bars["open"], bars["close"])[known] - 1e-9).all()
    assert (bars["low"][known] <= np.minimum(bars["open"], bars["close"])[known] + 1e-9).all()
    assert (bars["low"][known] > 0).all()


def test_returns_have_fat_tails_and_volatility_clusters(tmp_path):
    returns = _load(tmp_path, n_symbols=50)["close"][synthetic_symbols(50)].pct_change(fill_method=None)
    assert returns.kurt().median() > 1.0  # a normal's excess kurtosis is 0
    absolute = returns.abs()
    clustering = [absolute[s].autocorr(lag=1) for s in absolute]
    assert np.median(clustering) > 0.05  # large moves follow large moves
    vol = returns.std() * 252**0.5
    assert 0.15 < vol.median() < 0.6


def test_context_series_are_the_index_and_a_volatility_index(tmp_path):
    prices = _load(tmp_path, n_symbols=40)
    close = prices["close"]
    index_returns = close["SYN_INDEX"].pct_change(fill_method=None).iloc[1:]
    stock_mean = close[synthetic_symbols(40)].pct_change(fill_method=None).mean(axis=1).iloc[1:]
    assert np.corrcoef(index_returns, stock_mean.fillna(0))[0, 1] > 0.99
    assert close["SYN_VIX"].between(5, 150).all()


def test_refusals_name_the_problem(tmp_path):
    with pytest.raises(DataValidationError, match=r"synthetic market has no symbols \['AAPL'\]"):
        _load(tmp_path, symbols=["S0001", "AAPL"], n_symbols=10)
    with pytest.raises(DataValidationError, match="no series for strategy.hedge"):
        _load(tmp_path, n_symbols=10, context={"SPY": "strategy.hedge"})
    with pytest.raises(ValueError, match="less than or equal to 0.5"):
        SyntheticConfig(signal_strength=0.9)


def test_a_subset_of_symbols_is_the_same_series_as_in_the_whole_market(tmp_path):
    whole = _load(tmp_path / "w", n_symbols=20)
    part = _load(tmp_path / "p", symbols=["S0007", "S0003"], n_symbols=20)
    pd.testing.assert_frame_equal(part["close"][["S0007", "S0003"]], whole["close"][["S0007", "S0003"]])


def test_every_page_label_names_the_market_as_synthetic():
    label = market_label("synthetic", SyntheticConfig(n_symbols=500, signal_strength=0.05))
    assert label.startswith("SYNTHETIC MARKET") and "500 stocks" in label and "0.05" in label
    assert market_label("bundled") is None


@pytest.mark.parametrize("strength, recovered", [(0.05, True), (0.0, False)])
def test_the_ml_stage_recovers_the_planted_signal_only_when_planted(workspace, strength, recovered):
    """Rank IC of the walk-forward ridge scores on the 21-session excess return: significantly above
    zero (t > 3) with the signal planted at 0.05, not significant (t < 2) without it."""
    from research_lib.config import load_config
    from research_lib.stages.folder import RunFolder
    from research_lib.stages.ml import fit_ml_signals
    from tests.conftest import REPO

    params = workspace / "planted.yaml"
    params.write_text(yaml.safe_dump({
        "inherits": str(REPO / "params" / "synthetic.yaml"), "scenario": "planted",
        "data": {"start": "2006-01-03", "end": "2020-12-31",
                 "synthetic": {"n_symbols": 60, "signal_strength": strength}},
        "features": {"names": ["ret_5d", "ret_21d", "ret_63d", "ret_126d", "momentum_12_1", "vol_63d"],
                     "vix_symbol": None},
        "ml": {"models": ["ridge"], "signal_model": "ridge", "min_train_days": 756, "test_days": 252}}))
    report = fit_ml_signals(RunFolder(load_config(params), workspace / "run"))["report"]
    rank_ic = report["models"]["ridge"]["rank_ic"]
    if recovered:
        assert rank_ic["mean"] > 0.02 and rank_ic["t_stat"] > 3
    else:
        assert rank_ic["t_stat"] < 2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_long_market_passes_the_default_validation_whatever_the_seed(tmp_path, seed):
    """25 years with GARCH volatility: the volatility index once tripled in a day and was refused."""
    prices = _load(tmp_path, start="1998-01-02", end="2022-12-30", n_symbols=10, seed=seed)
    vix = prices["close"]["SYN_VIX"]
    assert (vix / vix.shift()).max() < 3.0
