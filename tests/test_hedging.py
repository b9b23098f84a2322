"""Options hedging: Black-Scholes against textbook values and no-arbitrage identities, and an
index-put overlay that is point in time and cuts the 2020 crash on real (bundled) data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from research_lib.data import load_prices
from research_lib.validation.metrics import hedge_summary
from research_lib.hedging import (MODELLED_LABEL, ROLL_COLUMNS, HedgeConfig, black_scholes_delta, black_scholes_price,
                                  hedge_overlay)

FAST = settings(max_examples=200, deadline=None)


def _oracle(spot, strike, years, vol, rate, q, kind):
    """Black-Scholes-Merton written out with math.erf (years > 0, vol > 0)."""
    n = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    d1 = (math.log(spot / strike) + (rate - q + vol**2 / 2) * years) / (vol * math.sqrt(years))
    d2 = d1 - vol * math.sqrt(years)
    if kind == "call":
        return spot * math.exp(-q * years) * n(d1) - strike * math.exp(-rate * years) * n(d2)
    return strike * math.exp(-rate * years) * n(-d2) - spot * math.exp(-q * years) * n(-d1)


# --- Black-Scholes -------------------------------------------------------------------------

def test_hull_textbook_values():
    """Hull, Options, Futures and Other Derivatives: S=42, K=40, r=10 %, sigma=20 %, T=6 months."""
    assert black_scholes_price(42, 40, 0.5, 0.2, 0.1, kind="call") == pytest.approx(4.76, abs=0.005)
    assert black_scholes_price(42, 40, 0.5, 0.2, 0.1, kind="put") == pytest.approx(0.81, abs=0.005)
    assert black_scholes_delta(42, 40, 0.5, 0.2, 0.1, kind="call") == pytest.approx(0.7791, abs=1e-4)
    assert black_scholes_delta(42, 40, 0.5, 0.2, 0.1, kind="put") == pytest.approx(-0.2209, abs=1e-4)


def test_hull_index_option_with_a_dividend_yield():
    """Hull's index call: S=930, K=900, r=8 %, q=3 %, sigma=20 %, T=2 months: 51.83."""
    assert black_scholes_price(930, 900, 2 / 12, 0.2, 0.08, 0.03, kind="call") == pytest.approx(51.83, abs=0.005)


@pytest.mark.parametrize("kind", ["call", "put"])
def test_agrees_with_an_independent_formula_and_broadcasts(kind):
    spots = np.array([[80.0], [100.0], [125.0]])
    vols = np.array([0.1, 0.3, 0.8])
    prices = black_scholes_price(spots, 100.0, 0.75, vols, 0.04, 0.02, kind=kind)
    assert prices.shape == (3, 3)
    expected = [[_oracle(s, 100.0, 0.75, v, 0.04, 0.02, kind) for v in vols] for s in spots[:, 0]]
    np.testing.assert_allclose(prices, expected, rtol=1e-12, atol=1e-12)
    assert isinstance(black_scholes_price(100, 100, 1, 0.2, kind=kind), float), "scalars in, a float out"


def test_at_expiry_and_without_volatility_the_value_is_intrinsic():
    assert black_scholes_price(90.0, 100.0, 0.0, 0.3, kind="put") == 10.0
    assert black_scholes_price(110.0, 100.0, 0.0, 0.3, kind="put") == 0.0
    assert black_scholes_delta(np.array([90.0, 100.0, 110.0]), 100.0, 0.0, 0.3, kind="put").tolist() == [-1, -0.5, 0]
    assert black_scholes_delta(np.array([90.0, 100.0, 110.0]), 100.0, 0.0, 0.3, kind="call").tolist() == [0, 0.5, 1]
    # zero volatility: the discounted intrinsic value of the forward, no division by zero
    assert black_scholes_price(100.0, 90.0, 2.0, 0.0, 0.05, 0.01, kind="call") == pytest.approx(
        100 * math.exp(-0.02) - 90 * math.exp(-0.1), rel=1e-14)
    assert black_scholes_price(100.0, 90.0, 2.0, 0.0, 0.05, 0.01, kind="put") == 0.0


finite = dict(allow_nan=False, allow_infinity=False)
spot_or_strike = st.floats(1e-2, 1e5, **finite)
volatility = st.floats(1e-4, 3.0, **finite)
years = st.floats(0.0, 5.0, **finite)
rate = st.floats(-0.02, 0.2, **finite)


@FAST
@given(spot_or_strike, spot_or_strike, years, volatility, rate, rate)
def test_put_call_parity_and_bounds(spot, strike, t, vol, r, q):
    call = black_scholes_price(spot, strike, t, vol, r, q, kind="call")
    put = black_scholes_price(spot, strike, t, vol, r, q, kind="put")
    spot_pv, strike_pv = spot * math.exp(-q * t), strike * math.exp(-r * t)
    scale = 1e-12 * (spot_pv + strike_pv)
    assert call - put == pytest.approx(spot_pv - strike_pv, abs=scale)
    assert max(0.0, spot_pv - strike_pv) - scale <= call <= spot_pv + scale
    assert max(0.0, strike_pv - spot_pv) - scale <= put <= strike_pv + scale
    call_delta = black_scholes_delta(spot, strike, t, vol, r, q, kind="call")
    put_delta = black_scholes_delta(spot, strike, t, vol, r, q, kind="put")
    assert call_delta - put_delta == pytest.approx(math.exp(-q * t), abs=1e-12)
    carry = math.exp(-q * t) * (1 + 1e-15)  # numpy's and math's exp may differ in the last bit
    assert 0.0 <= call_delta <= carry and -carry <= put_delta <= 0.0


@FAST
@given(st.floats(20.0, 500.0), st.floats(0.1, 3.0), st.floats(0.1, 5.0), rate, rate, st.sampled_from(["call", "put"]))
def test_delta_is_the_slope_of_the_price(spot, vol, t, r, q, kind):
    strike, h = 100.0, 1e-5 * spot
    slope = (black_scholes_price(spot + h, strike, t, vol, r, q, kind=kind)
             - black_scholes_price(spot - h, strike, t, vol, r, q, kind=kind)) / (2 * h)
    assert black_scholes_delta(spot, strike, t, vol, r, q, kind=kind) == pytest.approx(slope, abs=1e-6)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"spot": float("nan")}, r"spot must be finite and > 0; got nan; pass the underlying's price"),
    ({"spot": -5.0}, r"spot must be finite and > 0; got -5.0"),
    ({"strike": 0.0}, r"strike must be finite and > 0; got 0.0; pass the strike in the spot's price units"),
    ({"years": -0.1}, r"years must be finite and between 0 and 100 \(years\); got -0.1; pass the time to expiry"),
    ({"years": math.inf}, r"years must be finite and between 0 and 100 \(years\); got inf"),
    ({"years": 1e300}, r"years must be finite and between 0 and 100 \(years\); got 1e\+300"),
    ({"volatility": np.array([0.2, np.nan])}, r"volatility must be finite and >= 0; got nan at position \(1,\) "
                                              r"\(1 of 2 values bad\); pass an annualized fraction"),
    ({"volatility": -0.2}, r"volatility must be finite and >= 0; got -0.2"),
    ({"rate": math.inf}, r"rate must be finite and between -1 and 1 \(-100 % to \+100 % a year\); got inf"),
    ({"rate": -800.0}, r"rate must be finite and between -1 and 1 .*; got -800.0"),  # it overflowed to inf
    ({"dividend_yield": -800.0}, r"dividend_yield must be finite and between -1 and 1 .*; got -800.0"),
    ({"spot": "high"}, r"spot is 'high', not a number"),
    ({"kind": "pot"}, r"kind is 'pot'; pass one of \['call', 'put'\]\. Did you mean 'put'\?"),
    ({"spot": np.ones(3), "strike": np.ones(2)}, r"shapes do not broadcast together: spot \(3,\), strike \(2,\)"),
])
@pytest.mark.parametrize("function", [black_scholes_price, black_scholes_delta])
def test_hostile_inputs_are_refused_with_the_fix(function, arguments, message):
    call = {"spot": 100.0, "strike": 100.0, "years": 0.5, "volatility": 0.2, **arguments}
    with pytest.raises(ValueError, match=message):
        function(**call)


# --- the configuration -----------------------------------------------------------------------

def test_config_refuses_inconsistent_strikes_and_rolls():
    with pytest.raises(ValidationError, match=r"call_strike 0.95 must be above put_strike 0.95.*raise call_strike"):
        HedgeConfig(kind="collar", put_strike=0.95, call_strike=0.95)
    with pytest.raises(ValidationError, match=r"roll_every_days 64 exceeds tenor_days 63.*lower roll_every_days"):
        HedgeConfig(roll_every_days=64)
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        HedgeConfig(strike=0.9)
    with pytest.raises(ValidationError, match="kind"):
        HedgeConfig(kind="straddle")
    assert all(field.description for field in HedgeConfig.model_fields.values()), "every field says what it is"


# --- the overlay on synthetic data -----------------------------------------------------------

def _market(seed: int, sessions: int = 140, history: int = 12):
    """A random index with ``history`` sessions before the strategy, a noisy strategy, and a VIX
    known on the first half of the strategy's dates only."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-04", periods=sessions + history)
    index = pd.Series(1000 * np.cumprod(1 + rng.normal(0.0003, 0.015, dates.size)), index=dates)
    strategy = (index.pct_change() * 0.8 + rng.normal(0, 0.002, dates.size)).iloc[history:]
    vix = pd.Series(rng.uniform(12, 40, dates.size), index=dates).where(dates < dates[history + sessions // 2])
    return strategy, index, vix


SMALL = dict(tenor_days=10, roll_every_days=4, realized_window_days=5)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**16), st.integers(0, 138), st.sampled_from(["protective_put", "collar"]))
def test_no_look_ahead(seed, cut, kind):
    """Changing the index and the strategy after date d leaves the hedged returns up to d as they were."""
    strategy, index, vix = _market(seed)
    config = HedgeConfig(kind=kind, **SMALL)
    before = hedge_overlay(strategy, index, config, vix).returns
    d = strategy.index[cut]
    noise = 1 + np.random.default_rng(seed + 1).uniform(-0.05, 0.05, index.size)
    index_changed = index.where(index.index <= d, index * noise)
    strategy_changed = strategy.where(strategy.index <= d, strategy * noise[-strategy.size:] + 0.001)
    vix_changed = vix.where(vix.index <= d, vix * 1.5)
    after = hedge_overlay(strategy_changed, index_changed, config, vix_changed).returns
    np.testing.assert_array_equal(after.loc[:d].to_numpy(), before.loc[:d].to_numpy())
    assert not np.array_equal(after.loc[d:].iloc[1:].to_numpy(), before.loc[d:].iloc[1:].to_numpy()) or cut == 139


def test_the_accounting_matches_a_hand_written_book():
    """Equity = capital in the strategy + options at model value; rolls trade at model value plus costs."""
    strategy, index, vix = _market(7, sessions=30)
    config = HedgeConfig(kind="collar", put_strike=0.97, call_strike=1.04, cost_bps=100, hedge_ratio=1.5, **SMALL)
    result = hedge_overlay(strategy, index, config, vix)
    returns = index.pct_change()
    equity, capital, lot, premium = 1.0, 1.0, None, 0.0
    for t, date in enumerate(strategy.index):
        level = index[date]
        window = returns.loc[:date].iloc[-5:]
        vol = vix[date] / 100 if np.isfinite(vix[date]) else window.std(ddof=1) * math.sqrt(252) + 0.03

        def value(lot, kind, fraction, at=t, level=level, vol=vol):
            return black_scholes_price(level, fraction * lot["level"], (lot["t"] + 10 - at) / 252, vol, kind=kind)

        held = 0.0 if lot is None else lot["n"] * (value(lot, "put", 0.97) - value(lot, "call", 1.04))
        gross = 0.0 if lot is None else lot["n"] * (value(lot, "put", 0.97) + value(lot, "call", 1.04))
        start = equity
        equity = capital * (1 + strategy[date]) + held
        position, cost = held, 0.0
        if t % 4 == 0:
            lot = {"t": t, "level": level, "n": 1.5 * equity / level}
            position = lot["n"] * (value(lot, "put", 0.97) - value(lot, "call", 1.04))
            cost = 0.01 * (gross + lot["n"] * (value(lot, "put", 0.97) + value(lot, "call", 1.04)))
            premium += position / equity
        equity -= cost
        capital = equity - position
        assert result.returns[date] == pytest.approx(equity / start - 1, abs=1e-14), date
    assert result.premium_paid == pytest.approx(premium, rel=1e-12)
    assert list(result.rolls.columns) == ROLL_COLUMNS and len(result.rolls) == 8
    assert result.volatility_source_days == {"vix": 15, "realized": 15}


def test_kind_none_is_the_identity():
    strategy, index, vix = _market(3)
    result = hedge_overlay(strategy, index, HedgeConfig(), vix)
    pd.testing.assert_series_equal(result.returns, strategy)
    assert (result.hedge_pnl == 0).all() and result.premium_paid == 0 and result.rolls.empty
    assert result.label == MODELLED_LABEL and "not traded quotes" in result.label


def test_no_hedge_is_bought_before_a_volatility_is_known():
    strategy, index, _ = _market(4)
    result = hedge_overlay(strategy, index.iloc[10:], HedgeConfig(kind="protective_put", **SMALL))
    assert result.rolls["date"].iloc[0] == strategy.index[3], "5 index returns up to it: from the 4th date"
    assert (result.hedge_pnl.iloc[:3] == 0).all() and result.hedge_pnl.iloc[3] < 0, "then the first purchase's cost"
    assert result.volatility_source_days == {"vix": 0, "realized": 137}


def test_refuses_an_index_that_does_not_cover_the_strategy():
    strategy, index, vix = _market(5)
    holed = index.drop(strategy.index[20:23])
    with pytest.raises(ValueError, match=r"index_close lacks 3 of the 140 strategy dates \(2021-02-17 \.\. "
                                         r"2021-02-19; NaN counts as missing\)"):
        hedge_overlay(strategy, holed, HedgeConfig(kind="protective_put"), vix)
    with pytest.raises(ValueError, match=r"index_close lacks 1 of the 140 strategy dates \(2021-08-03 \.\. 2021-08-03"):
        hedge_overlay(strategy, index.where(index.index != strategy.index[-1]), HedgeConfig(kind="collar"), vix)
    with pytest.raises(ValueError, match=r"strategy_returns has 1 NaN.*first nan on 2021-01-22"):
        hedge_overlay(strategy.where(strategy.index != strategy.index[2]), index, HedgeConfig(), vix)
    with pytest.raises(ValueError, match=r"vix_close is 0.2 on .*multiply a fraction by 100"):
        hedge_overlay(strategy, index, HedgeConfig(kind="collar"), vix.where(vix.isna(), 0.2))
    with pytest.raises(ValueError, match=r"no strategy date has 21 index returns up to it"):
        hedge_overlay(strategy.iloc[:15], index.loc[strategy.index[0]:], HedgeConfig(kind="collar"), vix)


# --- the acceptance test on the bundled S&P 500 and VIX ---------------------------------------

@pytest.fixture(scope="module")
def sp500(tmp_path_factory):
    prices = load_prices("bundled", ["SP500", "^VIX"], "2016-01-04", "2020-12-31",
                         snapshot_dir=tmp_path_factory.mktemp("snapshots"))
    return prices["close"]["SP500"], prices["close"]["^VIX"]


def _max_drawdown(returns: pd.Series) -> float:
    wealth = np.cumprod(1 + returns.to_numpy())
    return float(np.min(wealth / np.maximum.accumulate(np.r_[1.0, wealth])[1:] - 1))


@pytest.mark.parametrize("kind", ["protective_put", "collar"])
def test_the_hedge_cuts_the_2020_crash_and_reports_its_cost(sp500, kind):
    index, vix = sp500
    holding = index.pct_change().loc["2018-01-01":]  # the bundled VIX ends on 2019-01-03
    result = hedge_overlay(holding, index, HedgeConfig(kind=kind), vix)
    unhedged, hedged = _max_drawdown(result.unhedged.loc["2020"]), _max_drawdown(result.returns.loc["2020"])
    assert unhedged < -0.30, "the Covid crash, peak to trough within 2020"
    assert hedged > unhedged + 0.1, f"{kind}: 2020 drawdown {hedged:.1%} hedged vs {unhedged:.1%}"
    assert result.premium_paid > 0 and result.costs_paid > 0
    assert result.volatility_source_days["vix"] > 200 and result.volatility_source_days["realized"] > 400
    assert set(result.rolls["volatility_source"]) == {"vix", "realized"}
    summary = hedge_summary(result)
    assert summary["hedged"]["max_drawdown"] > summary["unhedged"]["max_drawdown"]
    assert summary["hedge_cost"]["premium_paid_per_year"] > 0 and summary["label"] == MODELLED_LABEL


def test_in_a_calm_year_the_hedge_costs_return(sp500):
    index, vix = sp500
    result = hedge_overlay(index.pct_change().loc["2017"], index, HedgeConfig(kind="protective_put"), vix)
    summary = hedge_summary(result)
    assert summary["hedged"]["cagr"] < summary["unhedged"]["cagr"] - 0.01
    assert summary["hedge_cost"]["cagr_drag"] > 0.01 and summary["hedge_cost"]["hedge_pnl_per_year"] < 0
    assert result.volatility_source_days == {"vix": 251, "realized": 0}
