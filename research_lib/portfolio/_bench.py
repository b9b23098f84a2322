"""Benchmarks for `make bench` (issue 5): max Sharpe on 500 assets, monthly rebalances end to end."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from pypfopt import EfficientFrontier
from pypfopt.exceptions import OptimizationError

from research_lib.portfolio._allocation import rebalance_weights

MAX_SHARPE_TARGET_S = 0.3
REBALANCES_TARGET_S = 10.0


def random_problem(n_assets: int, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """A random annualized (mu, cov) of ``n_assets`` assets: 5 factors plus specific risk."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0.0, 0.1, size=(n_assets, 5))
    cov = loadings @ loadings.T + np.diag(rng.uniform(0.01, 0.09, n_assets))
    symbols = [f"A{i:03d}" for i in range(n_assets)]
    mu = pd.Series(rng.normal(0.08, 0.05, n_assets), index=symbols)
    return mu, pd.DataFrame(cov, index=symbols, columns=symbols)


def _time_max_sharpe(mu: pd.Series, cov: pd.DataFrame, solver: str | None) -> tuple[float, str]:
    """Seconds to solve, and the outcome ("optimal", or the solver's failure, also timed)."""
    ef = EfficientFrontier(mu, cov, solver=solver)
    start = time.perf_counter()
    try:
        ef.max_sharpe()
        status = ef._opt.status
    except OptimizationError as exc:
        status = f"failed: {exc.args[-1]}"
    return time.perf_counter() - start, status


def bench_max_sharpe(n_assets: int = 500, seed: int = 0) -> dict:
    """Time PyPortfolioOpt's long-only max Sharpe with its default solver and with CLARABEL.

    Returns
    -------
    dict
        ``n_assets``, ``default_solver_s`` and ``clarabel_s`` (seconds), the solvers'
        outcomes ``default_solver_status`` and ``clarabel_status``, ``target_s`` and
        ``within_target`` (CLARABEL solved optimally within the target).
    """
    mu, cov = random_problem(n_assets, seed)
    default_s, default_status = _time_max_sharpe(mu, cov, None)
    clarabel_s, clarabel_status = _time_max_sharpe(mu, cov, "CLARABEL")
    return {"n_assets": n_assets, "default_solver_s": round(default_s, 3), "default_solver_status": default_status,
            "clarabel_s": round(clarabel_s, 3), "clarabel_status": clarabel_status, "target_s": MAX_SHARPE_TARGET_S,
            "within_target": clarabel_status == "optimal" and clarabel_s <= MAX_SHARPE_TARGET_S}


def bench_rebalances(prices: pd.DataFrame, n_rebalances: int = 400, lookback_days: int = 252,
                     method: str = "min_volatility") -> dict:
    """Time `rebalance_weights` (Ledoit-Wolf, EW mean returns, ``method``) on the last sessions of months.

    Parameters
    ----------
    prices : DataFrame (dates x symbols)
        Adjusted closes without NaN, long enough for ``n_rebalances`` month ends after
        ``lookback_days`` sessions (20 symbols x 400 months is the issue's case).

    Returns
    -------
    dict
        ``n_assets``, ``n_rebalances``, ``seconds``, ``target_s``, ``within_target``.
    """
    month_ends = prices.index.to_series().groupby(prices.index.to_period("M")).max()
    eligible = month_ends[month_ends >= prices.index[lookback_days]]
    if len(eligible) < n_rebalances:
        raise ValueError(f"prices has {len(eligible)} month ends after {lookback_days} sessions; "
                         f"n_rebalances={n_rebalances} needs more history or a smaller n_rebalances")
    dates = eligible.iloc[-n_rebalances:]
    start = time.perf_counter()
    weights = rebalance_weights(prices, dates, lookback_days=lookback_days, method=method,
                                returns_model="ema_historical", risk_model="ledoit_wolf")
    seconds = time.perf_counter() - start
    return {"n_assets": prices.shape[1], "n_rebalances": len(weights), "seconds": round(seconds, 2),
            "target_s": REBALANCES_TARGET_S, "within_target": seconds < REBALANCES_TARGET_S}


def synthetic_prices(n_assets: int, n_sessions: int, seed: int = 0) -> pd.DataFrame:
    """Daily closes of ``n_assets`` correlated geometric random walks on business days from 1990."""
    rng = np.random.default_rng(seed)
    mu, cov = random_problem(n_assets, seed)
    daily = rng.multivariate_normal(mu.to_numpy() / 252, cov.to_numpy() / 252, size=n_sessions)
    index = pd.bdate_range("1990-01-01", periods=n_sessions)
    return pd.DataFrame(100.0 * np.exp(np.cumsum(daily, axis=0)), index=index, columns=mu.index)


def bench_construction(n_assets: int = 20, n_rebalances: int = 400, lookback_days: int = 252) -> dict:
    """Time the whole chain of `construct_portfolio` (signals -> Black-Litterman -> risk checks).

    On synthetic prices (the bundled history has 349 month ends after a year of lookback,
    not 400), with 12-1 momentum as the signal, the default portfolio settings and risk limits.

    Returns
    -------
    dict
        ``n_assets``, ``n_rebalances``, ``seconds``, ``target_s``, ``within_target``.
    """
    from research_lib.features import momentum
    from research_lib.portfolio._baselines import rebalance_dates
    from research_lib.portfolio._construct import construct_portfolio
    from research_lib.portfolio._settings import DEFAULT_RISK_LIMITS, PortfolioConfig

    sessions = lookback_days + 22 * (n_rebalances + 1)
    close = synthetic_prices(n_assets, sessions)
    dates = rebalance_dates(close.index, "monthly")
    dates = dates[dates >= close.index[lookback_days]][-n_rebalances:]
    settings = PortfolioConfig(signal="momentum", lookback_days=lookback_days)
    scores = {"momentum": momentum(close, 252, 21)}
    start = time.perf_counter()
    built = construct_portfolio(close, dates, settings, DEFAULT_RISK_LIMITS, scores=scores)
    seconds = time.perf_counter() - start
    return {"n_assets": n_assets, "n_rebalances": len(built.weights), "seconds": round(seconds, 2),
            "target_s": REBALANCES_TARGET_S, "within_target": seconds < REBALANCES_TARGET_S}
