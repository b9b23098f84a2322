"""Stage 02 (``02_build_features``): the run's point-in-time feature panel."""

from __future__ import annotations

import pandas as pd

from research_lib import paths
from research_lib.config import RunConfig
from research_lib.features import FeatureInputs, build_features
from research_lib.stages.folder import RunFolder, produces

__all__ = ["build_run_features", "compute_features", "feature_inputs"]


def feature_inputs(config: RunConfig, close: pd.DataFrame) -> FeatureInputs:
    """The closes, benchmark, VIX and GARCH settings the features are computed from."""
    vix = config.features.vix_symbol
    return FeatureInputs(close=close[config.tradable(close.columns)], index_close=close[config.data.benchmark],
                         vix=close[vix] if vix in close.columns else None,
                         garch_refit_days=config.features.garch_refit_days, n_jobs=config.features.n_jobs,
                         cache_dir=str(paths.data_dir() / "cache" / "garch"),
                         sessions_per_year=config.sessions_per_year)


def compute_features(config: RunConfig, close: pd.DataFrame) -> pd.DataFrame:
    """The configured features as a (date, symbol) panel, stored as ``features.dtype`` (float32: half
    the memory of a 500-name panel; computed in float64 either way, then rounded)."""
    panel = build_features(feature_inputs(config, close), config.features.names, config.features.cross_section)
    return panel if config.features.dtype == "float64" else panel.astype(config.features.dtype)


@produces("features")
def build_run_features(folder: RunFolder) -> pd.DataFrame:
    """Compute the features from the run's prices and save them."""
    return folder.save("features", compute_features(folder.config, folder.prices["close"]))
