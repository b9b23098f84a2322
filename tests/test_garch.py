"""GARCH(1,1) volatility forecasts: point in time, equal to arch's own, right on known data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits
from arch import arch_model

import research_lib.features._garch as garch
from research_lib.features._garch import garch_volatility

MIN_HISTORY = 300
REFIT_EVERY = 100  # refits at return positions 299, 399, ... = close positions 300, 400, ...


@pytest.fixture(scope="module")
def close(bundled_small) -> pd.DataFrame:
    """AAPL and JPM closes 2015-2018: 1,006 sessions, 8 refits each."""
    return bundled_small["close"][["AAPL", "JPM"]]


@pytest.fixture(scope="module", params=[None, 350], ids=["expanding", "window=350"])
def fitted(request, close) -> tuple[dict, pd.DataFrame]:
    """Keyword arguments and the forecasts they give on ``close``."""
    kwargs = dict(refit_every=REFIT_EVERY, min_history=MIN_HISTORY, window=request.param)
    return kwargs, garch_volatility(close, **kwargs)


def percent_log_returns(prices: pd.Series) -> np.ndarray:
    return 100.0 * np.diff(np.log(prices.to_numpy()))


def annualized(variance_percent2: float) -> float:
    return float(np.sqrt(variance_percent2 * 252) / 100.0)


@pytest.mark.parametrize("cut", [300, 301, 400, 401, 450], ids=lambda c: f"t=close[{c}]")
def test_no_look_ahead(close, fitted, cut):
    """Changing every close after t leaves every forecast up to t exactly as it was."""
    kwargs, base = fitted
    shocked = close.copy()
    after = close.index > close.index[cut]
    shocked.loc[after] *= np.random.default_rng(cut).uniform(0.8, 1.25, size=(after.sum(), close.shape[1]))

    out = garch_volatility(shocked, **kwargs)

    pd.testing.assert_frame_equal(out.loc[~after], base.loc[~after], check_exact=True)
    assert base.loc[~after].iloc[-1].notna().all(), "the cut is after the first forecast"
    assert (out.loc[after] != base.loc[after]).all().all(), "the shock reaches the later forecasts"


def test_equals_arch_at_a_refit_date_and_between_refits(close, fitted):
    kwargs, forecasts = fitted
    ours, window = forecasts["AAPL"], kwargs["window"]
    returns = percent_log_returns(close["AAPL"])
    refit, later = 399, 450  # return positions; the return at position k is dated close.index[k + 1]
    first = 0 if window is None else refit + 1 - window

    model = arch_model(returns[first: refit + 1], mean="Constant", vol="GARCH", p=1, q=1, dist="normal",
                       rescale=False)
    with threadpool_limits(limits=1):  # the same numerics as garch_volatility, which fits on one thread
        fitted = model.fit(disp="off")
    at_refit = fitted.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    assert ours.iloc[refit + 1] == pytest.approx(annualized(at_refit), rel=1e-8)

    # Between refits: arch filtering the longer sample with the parameters fixed at the refit.
    extended = arch_model(returns[first: later + 1], mean="Constant", vol="GARCH", p=1, q=1, dist="normal",
                          rescale=False).fix(fitted.params)
    between = extended.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    assert ours.iloc[later + 1] == pytest.approx(annualized(between), rel=1e-8)


def test_the_variance_recursion_is_lfilters_to_the_bit():
    from scipy.signal import lfilter

    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 251, 4000):
        drive = rng.uniform(0.01, 5.0, size)
        beta, start = rng.uniform(0.5, 0.99), rng.uniform(0.1, 3.0)
        expected = lfilter([1.0], [1.0, -beta], drive, zi=[beta * start])[0]
        np.testing.assert_array_equal(garch._recursion(drive, beta, start), expected)


def test_tracks_the_true_volatility_of_simulated_garch():
    omega, alpha, beta, n = 0.05, 0.08, 0.90, 4000  # percent-return units
    rng = np.random.default_rng(0)
    variance = np.empty(n + 1)  # variance[t] is the variance of returns[t]
    variance[0] = omega / (1.0 - alpha - beta)
    returns = np.empty(n)
    for t in range(n):
        returns[t] = np.sqrt(variance[t]) * rng.standard_normal()
        variance[t + 1] = omega + alpha * returns[t] ** 2 + beta * variance[t]
    prices = 100.0 * np.exp(np.r_[0.0, np.cumsum(returns / 100.0)])
    close = pd.DataFrame({"SIM": prices}, index=pd.bdate_range("2000-01-03", periods=n + 1))

    forecast = garch_volatility(close, refit_every=500, min_history=500)["SIM"].to_numpy()[1:]  # made after returns[t]
    next_true = np.sqrt(variance[1:] * 252) / 100.0  # true volatility of returns[t + 1]
    same_day_true = np.sqrt(variance[:-1] * 252) / 100.0  # true volatility of returns[t]

    ready = ~np.isnan(forecast)
    assert ready.sum() == n - 499
    assert np.corrcoef(forecast[ready], next_true[ready])[0, 1] > 0.9
    assert np.median(np.abs(forecast[ready] / next_true[ready] - 1.0)) < 0.05
    assert np.corrcoef(forecast[ready], next_true[ready])[0, 1] > np.corrcoef(forecast[ready], same_day_true[ready])[0, 1], \
        "the forecast at t is for the next session, not for t"


def test_late_start_early_end_and_gaps_are_per_symbol(close):
    ragged = close.copy()
    ragged.iloc[:200, 1] = np.nan  # JPM starts 200 sessions late ...
    ragged.iloc[-50:, 1] = np.nan  # ... ends 50 sessions early ...
    ragged.iloc[700, 1] = np.nan  # ... and misses one session
    kwargs = dict(refit_every=REFIT_EVERY, min_history=MIN_HISTORY)

    out = garch_volatility(ragged, **kwargs)

    jpm = out["JPM"]
    assert jpm.first_valid_index() == close.index[200 + MIN_HISTORY]
    assert jpm.iloc[:200 + MIN_HISTORY].isna().all() and jpm.iloc[-50:].isna().all() and np.isnan(jpm.iloc[700])
    alone = garch_volatility(ragged[["JPM"]].dropna(), **kwargs)["JPM"]
    pd.testing.assert_series_equal(jpm.dropna(), alone.dropna(), check_exact=True)
    pd.testing.assert_series_equal(out["AAPL"], garch_volatility(close[["AAPL"]], **kwargs)["AAPL"], check_exact=True)


def test_a_failed_fit_keeps_the_previous_parameters(close, monkeypatch):
    kwargs = dict(min_history=MIN_HISTORY, refit_every=REFIT_EVERY)
    only_first_fit = garch_volatility(close, min_history=MIN_HISTORY, refit_every=10**6)
    real_fit, calls = garch._fit, {}

    def fail_after_first(sample):
        calls[sample.size] = calls.get(sample.size, 0) + 1
        return real_fit(sample) if sample.size == MIN_HISTORY else None

    monkeypatch.setattr(garch, "_fit", fail_after_first)
    pd.testing.assert_frame_equal(garch_volatility(close, **kwargs), only_first_fit, check_exact=True)
    assert calls == {MIN_HISTORY + k * REFIT_EVERY: 2 for k in range(8)}, "every scheduled refit was tried"

    monkeypatch.setattr(garch, "_fit", lambda sample: None)
    assert garch_volatility(close, **kwargs).isna().all().all()


def test_a_symbol_arch_cannot_fit_is_nan_and_does_not_stop_the_others(close):
    flat = close.assign(FLAT=100.0)  # zero returns: arch does not converge
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = garch_volatility(flat, refit_every=REFIT_EVERY, min_history=MIN_HISTORY)
    assert out["FLAT"].isna().all()
    assert out[["AAPL", "JPM"]].iloc[MIN_HISTORY:].notna().all().all()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(refit_every=0), r"refit_every must be at least 1 session \(got 0\)"),
    (dict(min_history=99), r"min_history must be at least 100 returns \(got 99\)"),
    (dict(min_history=500, window=200), r"window must be at least min_history=500 returns \(got 200\).*window=None"),
])
def test_bad_arguments_are_refused(close, kwargs, message):
    with pytest.raises(ValueError, match=message):
        garch_volatility(close, **kwargs)


def test_bad_prices_are_refused(close):
    with pytest.raises(ValueError, match=r"sorted ascending.*sort_index\(\)"):
        garch_volatility(close.iloc[::-1])
    with pytest.raises(ValueError, match=r"zero or negative prices for \['JPM'\]"):
        garch_volatility(close.assign(JPM=close["JPM"].where(close.index != close.index[10], 0.0)))
