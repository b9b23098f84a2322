"""Headline metrics agree with closed forms and with quantstats on real returns."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from research_lib.validation.metrics import backtest_metrics, cagr, headline_metrics, max_drawdown, sharpe_ratio, win_rate


def test_closed_forms():
    assert cagr(np.full(252, 0.001)) == pytest.approx(1.001**252 - 1)
    assert max_drawdown(np.array([0.1, -0.5, 0.2, 0.5])) == pytest.approx(-0.5)
    assert max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(-0.1), "a loss on day one counts from 1.0"
    assert win_rate(np.array([0.01, -0.02, 0.0, 0.03])) == pytest.approx(2 / 3)
    assert np.isnan(sharpe_ratio(np.zeros(10)))
    assert np.isnan(win_rate(np.zeros(3)))


def test_agrees_with_quantstats_on_real_returns(bundled_small):
    import quantstats as qs

    returns = bundled_small["close"]["AAPL"].pct_change().dropna()
    ours = headline_metrics(returns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours["sharpe"] == pytest.approx(qs.stats.sharpe(returns, periods=252), rel=1e-9)
        assert ours["max_drawdown"] == pytest.approx(qs.stats.max_drawdown(returns), rel=1e-9)
        assert ours["annual_volatility"] == pytest.approx(qs.stats.volatility(returns, periods=252), rel=1e-9)
        assert ours["win_rate"] == pytest.approx(qs.stats.win_rate(returns), rel=1e-9)


def test_backtest_metrics_align_the_benchmark():
    index = pd.bdate_range("2020-01-01", periods=504)
    returns = pd.Series(0.001, index=index)
    benchmark = pd.Series(0.002, index=index[10:])
    out = backtest_metrics(returns, pd.Series(0.5, index=index), pd.Series(0.0005, index=index), benchmark)
    assert out["annual_turnover"] == pytest.approx(0.5 * 252)
    assert out["annual_cost"] == pytest.approx(0.0005 * 252)
    assert out["benchmark"]["sessions"] == 504
    assert out["benchmark"]["total_return"] == pytest.approx(1.002**494 - 1)
