"""Stage 05's description of the last book (``05_build_portfolio``): what the optimizer saw and chose."""

from __future__ import annotations

import pandas as pd

from research_lib.stages.folder import RunFolder
from research_lib.stages.portfolio import portfolio_signals
from research_lib.stages.strategies import STRATEGIES

__all__ = ["portfolio_snapshot"]


def portfolio_snapshot(folder: RunFolder, weights: pd.DataFrame) -> dict:
    """The book on the last rebalance date with positions: what the optimizer saw and chose.

    Returns ``{"date", "mu", "cov", "mu_source", "frontier", "contributions", "allocation"}``:
    the expected returns (Black-Litterman's posterior when that is the method; for a strategy
    without return estimates, the historical mean over the lookback, for display), the
    covariance, the efficient frontier under the portfolio constraints, each asset's weight and
    share of risk, and the shares `discrete_allocation` buys with ``portfolio.capital``.
    """
    from research_lib.portfolio import (black_litterman_posterior, discrete_allocation, efficient_frontier,
                                        estimates_at, risk_contributions)  # PyPortfolioOpt: only when asked

    config, prices = folder.config, folder.prices
    close = prices["close"][config.tradable(prices["close"].columns)]
    held = weights[weights.abs().sum(axis=1) > 0]
    if held.empty:
        raise ValueError("the strategy never holds a position, so there is no book to describe; check its weights")
    date = held.index[-1]
    optimized = STRATEGIES[config.strategy.name].optimized
    settings = config.portfolio
    if not optimized or settings.mu_free:
        settings = settings.model_copy(update={"method": "max_sharpe", "returns_model": "mean_historical"})
    scores, confidences = portfolio_signals(folder, close)
    est = estimates_at(close, close.index.get_loc(date), settings, scores=scores, confidences=confidences,
                       benchmark=prices["close"][config.data.benchmark])
    if isinstance(est, str):
        raise ValueError(f"no estimates on {date.date()}: {est}")
    mu, cov, source = est.mu, est.cov, f"{settings.returns_model} expected returns"
    if est.views is not None:
        mu, cov = black_litterman_posterior(cov, est.views, settings.risk_free_rate)
        source = "Black-Litterman posterior of the blended views"
    book = held.iloc[-1].reindex(cov.columns).fillna(0.0)
    constraints = config.portfolio.constraints if optimized else None
    contributions = pd.DataFrame({"weight": book, "risk_contribution": risk_contributions(book, cov)})
    allocation = discrete_allocation(held.iloc[-1][held.iloc[-1] != 0], close.loc[date], settings.capital,
                                     fractional=settings.fractional_shares)
    try:
        frontier = efficient_frontier(mu, cov, constraints, solver=settings.solver)
    except ValueError:  # e.g. a market-neutral book: no minimum-volatility end to start the frontier from
        frontier = pd.DataFrame(columns=["volatility", "expected_return"], dtype=float)
    return {"date": date, "mu": mu, "cov": cov, "mu_source": source, "contributions": contributions,
            "frontier": frontier, "allocation": allocation}
