"""Features against the market: beta, idiosyncratic volatility, and regime indicators.

Regime features are one series per date (the same for every symbol): the index trend and
volatility, and the VIX level and trend when a VIX series is loaded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research_lib.features._price import distance_from_moving_average, realized_volatility
from research_lib.units import SESSIONS_PER_YEAR


def beta_and_idiosyncratic_volatility(close: pd.DataFrame, index_close: pd.Series, days: int = 252,
                                      sessions_per_year: int = SESSIONS_PER_YEAR):
    """Rolling OLS beta of daily returns on the index's, and the residual volatility annualized
    over ``sessions_per_year``.

    Returns
    -------
    beta, idio_vol : two dates x symbols frames.
    """
    returns = close.pct_change(fill_method=None)
    market = index_close.pct_change(fill_method=None)
    window = {"window": days, "min_periods": days}
    mean_m = market.rolling(**window).mean()
    var_m = market.rolling(**window).var()
    mean_r = returns.rolling(**window).mean()
    var_r = returns.rolling(**window).var()
    # Rolling covariance via E[xy] - E[x]E[y], with the sample (n-1) correction.
    cross = returns.mul(market, axis=0).rolling(**window).mean()
    cov = cross.sub(mean_r.mul(mean_m, axis=0)) * days / (days - 1)
    beta = cov.div(var_m, axis=0)
    residual_var = (var_r - beta.pow(2).mul(var_m, axis=0)).clip(lower=0.0)
    return beta, np.sqrt(residual_var * sessions_per_year)


def idiosyncratic_reversal(close: pd.DataFrame, index_close: pd.Series, beta: pd.DataFrame, days: int = 5) -> pd.DataFrame:
    """Short-term reversal: minus the last ``days`` sessions' return not explained by the market.

    ``-(r_i - beta_i * r_m)`` with ``beta`` the trailing beta known at ``t`` (dates x symbols).
    """
    own = close / close.shift(days) - 1.0
    market = index_close / index_close.shift(days) - 1.0
    return -(own - beta.mul(market, axis=0))


def regime_features(index_close: pd.Series, vix: pd.Series | None = None,
                    sessions_per_year: int = SESSIONS_PER_YEAR) -> pd.DataFrame:
    """Per-date market regime: index trend and volatility, and VIX level/trend if given."""
    frame = pd.DataFrame({
        "index_trend_200d": distance_from_moving_average(index_close.to_frame(), 200).iloc[:, 0],
        "index_vol_21d": realized_volatility(index_close.to_frame(), 21, sessions_per_year).iloc[:, 0],
    })
    if vix is not None:
        frame["vix_level"] = vix / 100.0
        frame["vix_trend_63d"] = distance_from_moving_average(vix.to_frame(), 63).iloc[:, 0]
    return frame
