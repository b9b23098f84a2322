"""Point-in-time features of the canonical price frame, selected by name.

``build_features`` returns a long panel: rows ``(date, symbol)``, one column per feature.
A feature dated ``t`` uses closes up to and including ``t`` only. Windows named in sessions
(``ret_21d``, ``vol_63d``, ``beta_252d``) count sessions of the prices' calendar (21 sessions are
a month in New York, three weeks of crypto); the calendar-period features (``ret_4w``,
``vol_13w``, ``ret_12m``, ``vol_12m``) span the same weeks and months on any calendar;
volatilities are annualized with ``FeatureInputs.sessions_per_year``. Symbol features can be
standardized across symbols on each date (``cross_section="zscore"`` or ``"rank"``);
regime features (one value per date) are kept as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Literal, get_args

import numpy as np
import pandas as pd

from research_lib.features._market import beta_and_idiosyncratic_volatility, idiosyncratic_reversal, regime_features
from research_lib.features._price import (
    distance_from_moving_average,
    drawdown,
    macd_histogram,
    momentum,
    realized_volatility,
    rsi,
    trailing_return,
)
from research_lib.features._timeframes import period_return, period_volatility

FeatureName = Literal[
    "ret_5d", "ret_21d", "ret_63d", "ret_126d", "momentum_12_1", "reversal_5d", "vol_21d", "vol_63d",
    "garch_vol", "drawdown_252d", "rsi_14", "macd_hist", "dist_ma_50", "dist_ma_200", "beta_252d",
    "idio_vol_252d", "ret_4w", "vol_13w", "ret_12m", "vol_12m",
    "index_trend_200d", "index_vol_21d", "vix_level", "vix_trend_63d",
]
CrossSection = Literal["zscore", "rank", "none"]
ALL_FEATURES: tuple[str, ...] = get_args(FeatureName)
REGIME_FEATURES = ("index_trend_200d", "index_vol_21d", "vix_level", "vix_trend_63d")
VIX_FEATURES = ("vix_level", "vix_trend_63d")


@dataclass(frozen=True)
class FeatureInputs:
    """What features are computed from: universe closes, the index, optionally the VIX.

    ``n_jobs`` and ``cache_dir`` only affect speed (GARCH fits in parallel, kept on disk);
    ``sessions_per_year`` annualizes volatilities (252 New York, 365 crypto).
    """

    close: pd.DataFrame
    index_close: pd.Series
    vix: pd.Series | None = None
    garch_refit_days: int = 252
    n_jobs: int = 1
    cache_dir: str | None = None
    sessions_per_year: int = 252

    @cached_property
    def beta_and_idio_vol(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """252-session beta and idiosyncratic volatility, computed once for the features that use them."""
        return beta_and_idiosyncratic_volatility(self.close, self.index_close, 252, self.sessions_per_year)


def _garch(inputs: FeatureInputs) -> pd.DataFrame:
    from research_lib.features._garch import garch_volatility

    return garch_volatility(inputs.close, refit_every=inputs.garch_refit_days, n_jobs=inputs.n_jobs,
                            cache_dir=inputs.cache_dir, sessions_per_year=inputs.sessions_per_year)


_SYMBOL_FEATURES: dict[str, Callable[[FeatureInputs], pd.DataFrame]] = {
    "ret_5d": lambda x: trailing_return(x.close, 5),
    "ret_21d": lambda x: trailing_return(x.close, 21),
    "ret_63d": lambda x: trailing_return(x.close, 63),
    "ret_126d": lambda x: trailing_return(x.close, 126),
    "momentum_12_1": lambda x: momentum(x.close, 252, 21),
    "reversal_5d": lambda x: idiosyncratic_reversal(x.close, x.index_close, x.beta_and_idio_vol[0], 5),
    "vol_21d": lambda x: realized_volatility(x.close, 21, x.sessions_per_year),
    "vol_63d": lambda x: realized_volatility(x.close, 63, x.sessions_per_year),
    "garch_vol": _garch,
    "drawdown_252d": lambda x: drawdown(x.close, 252),
    "rsi_14": lambda x: rsi(x.close, 14),
    "macd_hist": lambda x: macd_histogram(x.close),
    "dist_ma_50": lambda x: distance_from_moving_average(x.close, 50),
    "dist_ma_200": lambda x: distance_from_moving_average(x.close, 200),
    "beta_252d": lambda x: x.beta_and_idio_vol[0],
    "idio_vol_252d": lambda x: x.beta_and_idio_vol[1],
    "ret_4w": lambda x: period_return(x.close, "weekly", 4),
    "vol_13w": lambda x: period_volatility(x.close, "weekly", 13),
    "ret_12m": lambda x: period_return(x.close, "monthly", 12),
    "vol_12m": lambda x: period_volatility(x.close, "monthly", 12),
}


def cross_sectional_zscore(frame: pd.DataFrame, clip: float = 3.0) -> pd.DataFrame:
    """(value - mean) / std across symbols on each date, clipped to +-``clip``."""
    z = frame.sub(frame.mean(axis=1), axis=0).div(frame.std(axis=1), axis=0)
    return z.clip(-clip, clip)


def cross_sectional_rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Percentile rank across symbols on each date, centred on 0 (from -0.5 to 0.5)."""
    return frame.rank(axis=1, pct=True) - 0.5


def build_features(inputs: FeatureInputs, names: list[str] | tuple[str, ...] = ALL_FEATURES,
                   cross_section: str = "zscore") -> pd.DataFrame:
    """Compute the named features as a long panel indexed by ``(date, symbol)``.

    VIX features are skipped (not filled) when ``inputs.vix`` is None.

    Raises
    ------
    ValueError
        for an unknown feature name or cross-section mode, listing the valid ones.
    """
    unknown = [n for n in names if n not in ALL_FEATURES]
    if unknown:
        raise ValueError(f"unknown features {unknown}; valid features: {list(ALL_FEATURES)}")
    if cross_section not in get_args(CrossSection):
        raise ValueError(f"unknown cross_section {cross_section!r}; valid: {list(get_args(CrossSection))}")
    if inputs.vix is None:
        names = [n for n in names if n not in VIX_FEATURES]
    standardize = {"zscore": cross_sectional_zscore, "rank": cross_sectional_rank, "none": lambda f: f}[cross_section]

    columns = {}
    for name in names:
        if name not in REGIME_FEATURES:
            columns[name] = standardize(_SYMBOL_FEATURES[name](inputs).replace([np.inf, -np.inf], np.nan))
    panel = pd.concat({n: w.stack(future_stack=True) for n, w in columns.items()}, axis=1) if columns else None

    regime_names = [n for n in names if n in REGIME_FEATURES]
    if regime_names:
        regime = regime_features(inputs.index_close, inputs.vix, inputs.sessions_per_year)[regime_names]
        symbols = inputs.close.columns
        broadcast = regime.loc[regime.index.repeat(len(symbols))]
        broadcast.index = pd.MultiIndex.from_product([regime.index, symbols])
        panel = broadcast if panel is None else panel.join(broadcast)
    panel.index.names = ["date", "symbol"]
    return panel[list(names)]


__all__ = ["ALL_FEATURES", "FeatureInputs", "FeatureName", "build_features", "cross_sectional_rank",
           "cross_sectional_zscore", "momentum"]
