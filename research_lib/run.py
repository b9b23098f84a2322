"""Artifacts of one run folder, read if present and computed (then saved) if not.

Notebooks call these so that each one also runs alone from JupyterLab: a stage reads
what upstream stages left in ``run_dir`` and the library fills in whatever is missing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from research_lib.config import RunConfig, load_config
from research_lib.data import DEFAULT_UNIVERSE, load_prices, read_snapshot, write_snapshot

PRICES_FILE = "prices.parquet"


def open_run(config_path: str | Path, run_dir: str | Path) -> tuple[RunConfig, Path]:
    """Load the run's parameters and make sure its folder exists."""
    config = load_config(config_path)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return config, run_dir


def universe_and_benchmark(config: RunConfig, prices: pd.DataFrame) -> tuple[list[str], str]:
    """The tradable symbols (all loaded symbols but the benchmark) and the benchmark."""
    symbols = [s for s in prices["close"].columns if s != config.data.benchmark]
    return symbols, config.data.benchmark


def fetch_run_prices(config: RunConfig) -> pd.DataFrame:
    """Load the universe plus the benchmark as configured (through the snapshot cache)."""
    data = config.data
    symbols = data.symbols
    if symbols is None and data.source != "file":  # a file's default universe is all its symbols
        symbols = list(DEFAULT_UNIVERSE)
    if symbols is not None and data.benchmark not in symbols:
        symbols = [*symbols, data.benchmark]
    return load_prices(
        data.source, symbols, data.start, data.end, path=data.path, refresh=data.refresh,
        max_stale_sessions=data.max_stale_sessions, max_daily_price_ratio=data.max_daily_price_ratio,
    )


def save_run_prices(prices: pd.DataFrame, run_dir: str | Path) -> dict:
    """Write the run's copy of the prices, with the snapshot's provenance, to ``run_dir``."""
    provenance = dict(prices.attrs.get("provenance", {}))
    provenance["source_sha256"] = provenance.pop("sha256", None)
    return write_snapshot(prices, Path(run_dir) / PRICES_FILE, provenance)


def run_prices(config: RunConfig, run_dir: str | Path) -> pd.DataFrame:
    """The run's prices: ``run_dir/prices.parquet`` if present, else loaded and saved there."""
    path = Path(run_dir) / PRICES_FILE
    if path.is_file():
        return read_snapshot(path, max_stale_sessions=config.data.max_stale_sessions,
                             max_daily_price_ratio=config.data.max_daily_price_ratio)
    prices = fetch_run_prices(config)
    save_run_prices(prices, run_dir)
    return prices
