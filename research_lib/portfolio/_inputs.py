"""Inputs of the optimizers: expected returns and risk models, point in time.

Conventions: ``prices`` is a dates x symbols frame of adjusted closes (positive, no NaN,
ascending session dates). Every estimate for a decision date ``as_of`` uses only rows dated
at or before ``as_of``. Expected returns and covariances are annualized with ``frequency``
sessions per year (252: daily prices), in fractions (0.08 is 8 % a year).
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import pandas as pd
from pypfopt import expected_returns as pf_returns
from pypfopt import risk_models as pf_risk

from research_lib.params import did_you_mean
from research_lib.portfolio._types import ReturnsModel, RiskModel



def check_choice(name: str, value: object, choices: type) -> None:
    """Refuse ``value`` unless it is one of the Literal ``choices``, listing the valid ones."""
    valid = get_args(choices)
    if value not in valid:
        raise ValueError(f"{name} is {value!r}; choose one of {list(valid)}.{did_you_mean(value, valid)}")


def prices_as_of(prices: pd.DataFrame, as_of: object = None, min_rows: int = 2) -> pd.DataFrame:
    """The rows of ``prices`` dated at or before ``as_of`` (all rows if None), validated."""
    if not isinstance(prices, pd.DataFrame) or not isinstance(prices.index, pd.DatetimeIndex):
        raise TypeError("prices must be a DataFrame (dates x symbols) with a DatetimeIndex")
    if not prices.index.is_monotonic_increasing:
        raise ValueError("prices has unsorted dates; sort them first, e.g. prices.sort_index()")
    window = prices if as_of is None else prices.loc[: pd.Timestamp(as_of)]
    if len(window) < min_rows:
        raise ValueError(f"prices has {len(window)} rows at or before as_of={as_of}; need at least {min_rows}, "
                         "pass a later as_of or more history")
    bad = [str(c) for c in window.columns[(window.isna() | (window <= 0)).any().to_numpy()]]
    if bad:
        raise ValueError(f"prices has NaN or non-positive values in {bad}; drop or fill them first, "
                         "e.g. prices.dropna(axis=1)")
    return window


def signal_expected_returns(scores: pd.Series, target_spread: float = 0.05, base_return: float = 0.05) -> pd.Series:
    """Expected returns implied by one date's cross-section of signal scores.

    The scores are standardized across symbols and rescaled:
    ``mu_i = base_return + target_spread * (s_i - mean(s)) / std(s)`` (population std), so
    the implied returns have cross-sectional mean ``base_return`` and standard deviation
    ``target_spread``, and keep the scores' ranking. Only the ordering and relative
    distances of the scores matter, never their units.

    Parameters
    ----------
    scores : Series (symbols,)
        Any signal (ML scores, Claude's ``expected_excess_return``), higher is better.
    target_spread : float
        Cross-sectional standard deviation of the result, annualized (0.05 is 5 %).
    base_return : float
        Cross-sectional mean of the result, annualized.

    Returns
    -------
    Series (symbols,)
        Annualized expected returns.
    """
    values = np.asarray(scores, dtype=float)
    if values.size < 2 or np.isnan(values).any():
        raise ValueError(f"scores needs at least 2 symbols and no NaN, got {scores.to_dict()}; "
                         "drop symbols without a score first, e.g. scores.dropna()")
    if not target_spread > 0:
        raise ValueError(f"target_spread is {target_spread!r}; pass a positive annualized spread such as 0.05")
    std = values.std()
    if std == 0:
        raise ValueError("scores are all equal, so they imply no spread; pass scores that differ across symbols")
    return pd.Series(base_return + target_spread * (values - values.mean()) / std, index=scores.index)


def expected_returns(prices: pd.DataFrame, model: ReturnsModel = "mean_historical", *, as_of: object = None,
                     benchmark: pd.Series | None = None, scores: pd.DataFrame | None = None, span: int = 500,
                     frequency: int = 252, risk_free_rate: float = 0.0, target_spread: float = 0.05,
                     base_return: float = 0.05) -> pd.Series:
    """Annualized expected returns per symbol as known at ``as_of``.

    Parameters
    ----------
    prices : DataFrame (dates x symbols)
        Adjusted closes; rows after ``as_of`` are never read.
    model : {"mean_historical", "ema_historical", "capm", "signals"}
        Geometric mean of past returns; exponentially weighted mean (``span`` sessions);
        CAPM ``rf + beta * (E[benchmark] - rf)`` against ``benchmark``; or implied by the
        latest row of ``scores`` at or before ``as_of`` (see `signal_expected_returns`).
    as_of : date-like, optional
        Decision date; None uses every row.
    benchmark : Series (dates,), optional
        Benchmark prices (an index), required by ``"capm"``.
    scores : DataFrame (dates x symbols), optional
        Signal scores, required by ``"signals"``.

    Returns
    -------
    Series (symbols,)
    """
    check_choice("model", model, ReturnsModel)
    window = prices_as_of(prices, as_of)
    if model == "mean_historical":
        return pf_returns.mean_historical_return(window, frequency=frequency)
    if model == "ema_historical":
        return pf_returns.ema_historical_return(window, frequency=frequency, span=span)
    if model == "capm":
        if benchmark is None:
            raise ValueError("model='capm' needs benchmark (a Series of index prices); pass benchmark=...")
        market = benchmark.loc[: window.index[-1]].reindex(window.index).ffill().to_frame("market")
        return pf_returns.capm_return(window, market_prices=market, risk_free_rate=risk_free_rate,
                                      frequency=frequency)
    if scores is None:
        raise ValueError("model='signals' needs scores (a dates x symbols frame); pass scores=...")
    known = scores.loc[: window.index[-1], list(window.columns)]
    if known.empty:
        raise ValueError(f"scores has no row at or before {window.index[-1].date()}; pass earlier scores")
    return signal_expected_returns(known.iloc[-1], target_spread=target_spread, base_return=base_return)


def risk_matrix(prices: pd.DataFrame, model: RiskModel = "ledoit_wolf", *, as_of: object = None, span: int = 180,
                frequency: int = 252) -> pd.DataFrame:
    """Annualized covariance of daily returns per symbol pair as known at ``as_of``.

    Parameters
    ----------
    prices : DataFrame (dates x symbols)
        Adjusted closes; rows after ``as_of`` are never read.
    model : {"sample", "ledoit_wolf", "exp_cov"}
        Sample covariance; Ledoit-Wolf shrinkage towards constant variance; exponentially
        weighted covariance with ``span`` sessions (all from ``pypfopt.risk_models``).

    Returns
    -------
    DataFrame (symbols x symbols)
        Positive semidefinite covariance, annualized.
    """
    check_choice("model", model, RiskModel)
    window = prices_as_of(prices, as_of, min_rows=3)
    if model == "sample":
        return pf_risk.sample_cov(window, frequency=frequency)
    if model == "ledoit_wolf":
        return _ledoit_wolf(window, frequency)
    return pf_risk.exp_cov(window, span=span, frequency=frequency)


def _ledoit_wolf(window: pd.DataFrame, frequency: int) -> pd.DataFrame:
    """``pf_risk.CovarianceShrinkage(window, frequency=frequency).ledoit_wolf()``, the same
    operations on arrays: without its unused sample covariance and its DataFrames, a third of
    the time of an estimate (one per rebalance date). Returns the same bits: the returns are
    laid out column-major, as pandas hands them to scikit-learn (summation order follows
    the layout)."""
    values = window.to_numpy(dtype=float)
    returns = np.asfortranarray(values[1:] / values[:-1] - 1.0)  # pct_change without the first, all-NaN row
    if not np.isfinite(returns).all():  # NaN rows to drop, infinities to zero: PyPortfolioOpt's own path
        return pf_risk.CovarianceShrinkage(window, frequency=frequency).ledoit_wolf()
    shrunk, _ = _sk_ledoit_wolf(returns)
    cov = pf_risk.fix_nonpositive_semidefinite(shrunk * frequency, fix_method="spectral")
    return pd.DataFrame(cov, index=window.columns, columns=window.columns)


def _sk_ledoit_wolf(returns: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.covariance import ledoit_wolf  # PyPortfolioOpt imports it on first use too

    return ledoit_wolf(returns)
