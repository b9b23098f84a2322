"""Black-Litterman: a market-implied prior blended with views held with a confidence.

Returns and covariances are annualized. Views are expected returns in excess of the
risk-free rate (Claude's ``expected_excess_return``), confidences are Idzorek's: 0 leaves
the prior unchanged, 1 moves the posterior of that asset onto the view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pypfopt import BlackLittermanModel
from pypfopt.black_litterman import market_implied_prior_returns


@dataclass(frozen=True)
class BlackLittermanViews:
    """Absolute views on some assets.

    Parameters
    ----------
    returns : Series (view symbols,)
        Annualized expected excess return of each asset with a view.
    confidences : Series (view symbols,)
        Idzorek confidence of each view, in [0, 1].
    market_caps : Series (symbols,), optional
        Market capitalizations for the prior; None: equal weights.
    risk_aversion : float
        Market risk aversion delta of the prior ``pi = delta * cov @ w_mkt``.
    tau : float
        Uncertainty of the prior relative to the covariance.
    """

    returns: pd.Series
    confidences: pd.Series
    market_caps: pd.Series | None = None
    risk_aversion: float = 1.0
    tau: float = 0.05

    def __post_init__(self) -> None:
        if set(self.returns.index) != set(self.confidences.index):
            raise ValueError(f"views returns cover {sorted(self.returns.index)} but confidences cover "
                             f"{sorted(self.confidences.index)}; give one confidence per view")
        conf = np.asarray(self.confidences, dtype=float)
        if np.isnan(conf).any() or (conf < 0).any() or (conf > 1).any():
            raise ValueError(f"confidences must lie in [0, 1], got {self.confidences.to_dict()}; clip them first")
        if np.isnan(np.asarray(self.returns, dtype=float)).any():
            raise ValueError("views returns contain NaN; drop symbols without a view, e.g. returns.dropna()")
        if not (self.risk_aversion > 0 and self.tau > 0):
            raise ValueError(f"risk_aversion={self.risk_aversion} and tau={self.tau} must both be positive")


def black_litterman_posterior(cov: pd.DataFrame, views: BlackLittermanViews,
                              risk_free_rate: float = 0.0) -> tuple[pd.Series, pd.DataFrame]:
    """Posterior expected returns and covariance from ``pypfopt.BlackLittermanModel``.

    Parameters
    ----------
    cov : DataFrame (symbols x symbols)
        Annualized covariance (the prior's and the model's).
    views : BlackLittermanViews
    risk_free_rate : float
        Annualized; added to the excess prior and views, so the posterior is total return.

    Returns
    -------
    (Series (symbols,), DataFrame (symbols x symbols))
        Posterior expected returns and covariance.
    """
    symbols = list(cov.columns)
    unknown = sorted(set(views.returns.index) - set(symbols))
    if unknown:
        raise ValueError(f"views on {unknown} are not in the covariance's symbols; drop those views")
    caps = views.market_caps if views.market_caps is not None else pd.Series(1.0, index=symbols)
    missing = sorted(set(symbols) - set(caps.index))
    if missing:
        raise ValueError(f"market_caps lacks {missing}; give a market cap for every symbol")
    prior = market_implied_prior_returns(caps.reindex(symbols), views.risk_aversion, cov, risk_free_rate)
    # The absolute views as PyPortfolioOpt's picking matrix P and view vector Q, built here in one step:
    # its own parsing looks each view up in a list of the symbols (quadratic: 50 s a run at 500 names).
    absolute = views.returns + risk_free_rate
    picking = np.zeros((len(absolute), len(symbols)))
    picking[np.arange(len(absolute)), cov.columns.get_indexer(absolute.index)] = 1.0
    model = BlackLittermanModel(cov, pi=prior, Q=absolute.to_numpy(dtype=float).reshape(-1, 1), P=picking,
                                omega="idzorek",
                                view_confidences=views.confidences.reindex(views.returns.index).to_numpy(),
                                tau=views.tau, risk_aversion=views.risk_aversion)
    return model.bl_returns(), model.bl_cov()
