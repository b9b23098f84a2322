"""The hedge overlay in a run: its parameters are refused with the key named, the VIX is loaded
for it only from a source that has one (realized volatility otherwise, never a failed load), and
the validation record's hedge section is priced on what the run loaded."""

from __future__ import annotations

import pandas as pd
import pytest

from research_lib.config import load_config
from research_lib.data import load_prices
from research_lib.errors import ConfigError
from research_lib.stages.prices import context_symbols
from research_lib.stages.validation import hedge_section
from tests.conftest import REPO

BASE = REPO / "params" / "base.yaml"
NO_VIX_FEATURES = "features.names=[ret_21d, vol_63d]"  # the VIX is then loaded for the hedge alone


def config(*overrides: str):
    return load_config(BASE, [NO_VIX_FEATURES, *overrides])


@pytest.mark.parametrize("overrides, match", [
    (["hedge.call_strike=-1"], r"- hedge.call_strike: Input should be greater than 0 \(got -1\)"),
    (["hedge.kind=collar", "hedge.call_strike=0.9"],
     r"- hedge: .*call_strike 0.9 must be above put_strike 0.95 .*raise call_strike or lower put_strike"),
    (["hedge.roll_every_days=100"], r"- hedge: .*roll_every_days 100 exceeds tenor_days 63.*lower roll_every_days"),
    (["hedge.kind=straddle"], r"- hedge.kind: Input should be 'none', 'protective_put' or 'collar' \(got 'straddle'\)"),
    (["hedge.volatility=implied"], r"- hedge.volatility: Input should be 'vix' or 'realized' \(got 'implied'\)"),
    (["hedge.tenor_day=5"], r"'tenor_day' is not a key of hedge; .*Did you mean 'tenor_days'\?"),
])
def test_hedge_parameters_are_refused_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(BASE, overrides)


def test_the_default_hedges_with_protective_puts_on_the_benchmark():
    hedge = load_config(REPO / "params" / "daily.yaml").hedge
    assert (hedge.kind, hedge.put_strike, hedge.volatility) == ("protective_put", 0.95, "vix")


@pytest.mark.parametrize("overrides, vix", [
    ([], "^VIX"),                                                    # bundled holds ^VIX
    (["data.source=synthetic", "data.benchmark=SYN_INDEX", "features.vix_symbol=SYN_VIX"], "SYN_VIX"),  # generated
    (["data.source=yfinance"], None),                                # a vendor may lack it: not asked for
    (["data.source=file", "data.path=prices.csv"], None),            # so may a file
    (["features.vix_symbol=VIX"], None),                             # not a bundled symbol
    (["hedge.volatility=realized"], None),                           # not wanted
    (["hedge.kind=none"], None),
    (["features.vix_symbol=null"], None),
])
def test_the_vix_is_asked_for_the_hedge_only_from_a_source_that_has_it(overrides, vix):
    run = config(*overrides)
    wanted = {run.data.benchmark: "data.benchmark", **({vix: "features.vix_symbol"} if vix else {})}
    assert context_symbols(run) == wanted


def test_vix_features_load_the_vix_from_any_source_as_before():
    run = load_config(BASE, ["data.source=yfinance", "hedge.kind=none"])
    assert context_symbols(run) == {"SP500": "data.benchmark", "^VIX": "features.vix_symbol"}


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory):
    """The bundled prices a run with the hedge but no VIX features loads, 2014-2016, and its config."""
    run = config("data.symbols=[KO, PFE]", "data.start=2014-01-01", "data.end=2016-12-30")
    prices = load_prices("bundled", run.data.symbols, run.data.start, run.data.end, context=context_symbols(run),
                         snapshot_dir=tmp_path_factory.mktemp("snapshots"))
    return run, prices


def test_the_hedge_is_priced_on_the_vix_the_run_loaded(bundled_run):
    run, prices = bundled_run
    returns = prices["close"]["KO"].pct_change().iloc[252:]
    section = hedge_section(returns, prices["close"], run)
    assert "error" not in section and section["vix_symbol"] == "^VIX" and section["index"] == "SP500"
    assert section["volatility_source_days"] == {"vix": len(returns), "realized": 0}, "bundled ^VIX covers 2014-2019"
    assert section["rolls"] == -(-len(returns) // 21), "the full index gives realized volatility from the first day"
    assert "not traded quotes" in section["label"]


def test_without_the_vix_the_hedge_falls_back_to_realized_volatility(bundled_run):
    run, prices = bundled_run
    returns = prices["close"]["KO"].pct_change().iloc[252:]
    section = hedge_section(returns, prices["close"].drop(columns="^VIX"), run)
    assert section["vix_symbol"] is None and section["volatility_source_days"] == {"vix": 0, "realized": len(returns)}


def test_data_the_overlay_cannot_price_leave_the_reason_not_a_failed_stage(bundled_run):
    run, prices = bundled_run
    returns = prices["close"]["KO"].pct_change().iloc[1:]
    close = prices["close"].copy()
    close.loc[close.index[300], "SP500"] = float("nan")  # the index lacks a judged session
    section = hedge_section(returns, close, run)
    assert "index_close lacks 1 of the" in section["error"] and "not traded quotes" in section["label"]
    assert hedge_section(returns, close, config("hedge.kind=none")) is None
