"""Stage 01 (``01_load_data``): the run's validated prices, loaded through the snapshot cache."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from research_lib.config import RunConfig
from research_lib.data import BUNDLED_SYMBOLS, load_prices, read_snapshot, write_snapshot
from research_lib.features import VIX_FEATURES
from research_lib.stages.folder import RunFolder, produces

__all__ = ["context_symbols", "load_run_prices", "price_limits"]


def price_limits(config: RunConfig) -> dict:
    """The checks every load and every re-read of the prices passes."""
    return {"max_stale_sessions": config.data.max_stale_sessions,
            "max_daily_price_ratio": config.data.max_daily_price_ratio}


def context_symbols(config: RunConfig) -> dict[str, str]:
    """The series loaded besides the universe, each with the parameter that names it (quoted when a
    source lacks it): the benchmark and, when VIX features are wanted, the VIX.

    The hedge overlay (``hedge.volatility: vix``) asks for the VIX too, but only from a source
    known to have it (`_source_has_vix`): from any other it is not asked for, and the hedge prices
    its options on realized volatility instead of failing the load.
    """
    named = {config.data.benchmark: "data.benchmark"}
    vix = config.features.vix_symbol
    for_features = any(n in VIX_FEATURES for n in config.features.names)
    for_hedge = config.hedge.kind != "none" and config.hedge.volatility == "vix" and _source_has_vix(config)
    if vix is not None and (for_features or for_hedge):
        named.setdefault(vix, "features.vix_symbol")
    return named


def _source_has_vix(config: RunConfig) -> bool:
    """Whether ``data.source`` surely has ``features.vix_symbol``: the synthetic market generates it
    (a "volatility index", `research_lib.data._synthetic.CONTEXT_ROLES`), the bundled data hold a
    fixed list (``^VIX``, 2014-2019); a file or a vendor may not."""
    vix, source = config.features.vix_symbol, config.data.source
    return vix is not None and (source == "synthetic" or (source == "bundled" and vix in BUNDLED_SYMBOLS))


def _read_prices(path: Path, config: RunConfig) -> pd.DataFrame:
    return read_snapshot(path, **price_limits(config))


@produces("prices", read=_read_prices)
def load_run_prices(folder: RunFolder) -> pd.DataFrame:
    """Load the configured prices (via the snapshot cache) and save them with their provenance."""
    config, data = folder.config, folder.config.data
    # data.symbols null: the source's default universe, or every symbol of a file
    prices = load_prices(data.source, data.symbols, data.start, data.end, path=data.path, refresh=data.refresh,
                         calendar=data.calendar, context=context_symbols(config), synthetic=data.synthetic,
                         markets=data.markets, **price_limits(config))
    provenance = dict(prices.attrs["provenance"])
    provenance["source_sha256"] = provenance.pop("sha256")
    provenance["config_key"] = folder.key("prices")
    prices.attrs["provenance"] = write_snapshot(prices, folder.path("prices"), provenance)
    return prices
