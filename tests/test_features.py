"""Features: closed forms, no look-ahead, and weekly/monthly features that never peek."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research_lib.features import ALL_FEATURES, FeatureInputs, build_features, cross_sectional_rank, cross_sectional_zscore
from research_lib.features._market import beta_and_idiosyncratic_volatility
from research_lib.features._price import drawdown, realized_volatility, rsi
from research_lib.features._timeframes import period_return, period_volatility
from research_lib.signals.labels import excess_forward_returns, forward_returns

SYMBOLS = ["AAPL", "JPM", "KO", "MSFT", "PFE", "XOM"]


@pytest.fixture(scope="module")
def inputs(bundled_small):
    close = bundled_small["close"]
    return FeatureInputs(close[SYMBOLS], close["SP500"], vix=None, garch_refit_days=126)


def shock_after(frame: pd.DataFrame | pd.Series, t: pd.Timestamp, seed: int):
    """A copy with every value after ``t`` scaled by a random factor per column."""
    out = frame.copy()
    factors = np.random.default_rng(seed).uniform(0.3, 3.0, size=out.shape[1] if out.ndim == 2 else None)
    out.loc[out.index > t] = out.loc[out.index > t] * factors
    return out


def test_closed_forms():
    rising = pd.DataFrame({"A": np.arange(1.0, 40.0)})
    assert rsi(rising, 14).iloc[-1, 0] == pytest.approx(100.0)
    assert drawdown(pd.DataFrame({"A": [1.0, 2.0, 1.5, 1.0]}), 3).iloc[-1, 0] == pytest.approx(-0.5)
    steady = pd.DataFrame({"A": 100 * 1.01 ** np.arange(30)})
    assert realized_volatility(steady, 21).iloc[-1, 0] == pytest.approx(0.0, abs=1e-12)


def test_beta_of_the_index_on_itself_is_one_with_no_idiosyncratic_risk(bundled_small):
    index = bundled_small["close"]["SP500"]
    beta, idio = beta_and_idiosyncratic_volatility(index.to_frame("X"), index, 252)
    assert beta["X"].dropna().to_numpy() == pytest.approx(1.0)
    assert idio["X"].dropna().max() < 1e-6


def test_cross_sectional_standardization():
    frame = pd.DataFrame({"A": [1.0, 5.0], "B": [2.0, 5.0], "C": [3.0, np.nan]})
    z = cross_sectional_zscore(frame)
    assert z.iloc[0].tolist() == pytest.approx([-1.0, 0.0, 1.0])
    assert cross_sectional_rank(frame).iloc[0].tolist() == pytest.approx([1 / 3 - 0.5, 2 / 3 - 0.5, 0.5])


def test_build_features_shapes_and_refusals(inputs):
    names = [n for n in ALL_FEATURES if n != "garch_vol"]
    panel = build_features(inputs, names)
    assert list(panel.columns) == [n for n in names if n not in ("vix_level", "vix_trend_63d")], "no VIX: skipped"
    assert panel.index.names == ["date", "symbol"]
    assert len(panel) == len(inputs.close) * len(SYMBOLS)
    with pytest.raises(ValueError, match=r"unknown features \['momentum'\]; valid features: \['ret_5d'"):
        build_features(inputs, ["momentum"])
    with pytest.raises(ValueError, match=r"unknown cross_section 'minmax'; valid: \['zscore', 'rank', 'none'\]"):
        build_features(inputs, ["ret_5d"], cross_section="minmax")


@pytest.mark.parametrize("cut", [300, 512, 760])
def test_no_look_ahead_in_any_feature(bundled_small, cut):
    """Shock every close after t (each symbol and the index differently): no feature at or
    before t moves, GARCH included."""
    close = bundled_small["close"]
    t = close.index[cut]
    vix = close["SP500"].pct_change().rolling(21).std() * 1600  # a stand-in VIX series to exercise its features
    base = build_features(FeatureInputs(close[SYMBOLS], close["SP500"], vix, 126))
    moved = shock_after(close, t, seed=cut)
    after = build_features(FeatureInputs(moved[SYMBOLS], moved["SP500"], shock_after(vix.to_frame(), t, 1).iloc[:, 0], 126))
    past = base.index.get_level_values("date") <= t
    pd.testing.assert_frame_equal(base[past], after[past])
    assert not base[~past].equals(after[~past]), "the shock did change the future"


@pytest.mark.parametrize("frequency, feature", [("weekly", period_return), ("monthly", period_return),
                                                ("weekly", period_volatility), ("monthly", period_volatility)])
def test_weekly_and_monthly_features_ignore_the_rest_of_their_own_period(bundled_small, frequency, feature):
    """A day's weekly (monthly) value is unchanged by any close from the start of its own
    week (month) on: only completed periods are used."""
    close = bundled_small["close"][SYMBOLS]
    periods = close.index.to_period("W" if frequency == "weekly" else "M")
    base = feature(close, frequency, 4)
    for t in close.index[[400, 401, 402, 650, 651]]:
        period_start = close.index[periods == periods[close.index.get_loc(t)]][0]
        moved = shock_after(close, period_start - pd.Timedelta(days=1), seed=t.day)
        after = feature(moved, frequency, 4)
        pd.testing.assert_series_equal(base.loc[t], after.loc[t])


def test_weekly_return_uses_the_last_completed_weeks():
    days = pd.bdate_range("2024-01-01", "2024-02-09")
    close = pd.DataFrame({"A": np.arange(1.0, len(days) + 1)}, index=days)
    weekly = period_return(close, "weekly", 2)
    # On Wednesday 2024-01-24 (week 4), the last completed week ended Friday 01-19 (close 15)
    # and two weeks before that ended Friday 01-05 (close 5).
    assert weekly.loc["2024-01-24", "A"] == pytest.approx(15 / 5 - 1)
    assert weekly.loc["2024-01-22", "A"] == weekly.loc["2024-01-26", "A"], "constant within a week"


def test_labels_start_the_session_after_their_date():
    close = pd.DataFrame({"A": [100.0, 110.0, 121.0, 133.1], "B": [100.0, 100.0, 100.0, 100.0]})
    assert forward_returns(close, 1)["A"].tolist()[:3] == pytest.approx([0.1, 0.1, 0.1])
    assert np.isnan(forward_returns(close, 2)["A"].iloc[-2])
    excess = excess_forward_returns(close, 1)
    assert excess.sum(axis=1).iloc[:3].tolist() == pytest.approx([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="horizon must be at least 1 session"):
        forward_returns(close, 0)
    # With the backtest's one-session execution lag, the label is what a trade at t+1 earns.
    lagged = forward_returns(pd.DataFrame({"A": [100.0, 200.0, 210.0, 231.0]}), 1, lag=1)["A"]
    assert lagged.iloc[0] == pytest.approx(0.05) and lagged.iloc[1] == pytest.approx(0.1)
    assert lagged.iloc[2:].isna().all()
