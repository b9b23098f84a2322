"""Fetchers: each returns ``(prices, splits)`` for the requested symbols and dates.

``prices`` is a canonical frame (see ``_frame``), not yet validated; ``splits`` is a
dates x symbols frame of split ratios, or ``None`` when the source has adjusted for them.
Online fetchers are thin: the conversion of their answers is a pure function tested
offline, and the Alpaca client is exercised against a local HTTP server in the tests.
"""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd

from research_lib.data._frame import FIELDS, canonical_frame
from research_lib.errors import SpartanError

# The environment variables alpaca-py's own examples use.
ALPACA_KEY_ENV = "APCA_API_KEY_ID"
ALPACA_SECRET_ENV = "APCA_API_SECRET_KEY"
ALPACA_DATA_URL_ENV = "APCA_API_DATA_URL"


def fetch_yfinance(symbols: list[str], start: dt.date | None, end: dt.date | None):
    """Daily split- and dividend-adjusted bars from Yahoo Finance (needs the network)."""
    import yfinance as yf

    raw = yf.download(
        symbols, start=start, end=_exclusive(end), auto_adjust=True, actions=True,
        progress=False, group_by="column", multi_level_index=True, threads=False,
    )
    return from_yfinance(raw, symbols)


def from_yfinance(raw: pd.DataFrame, symbols: list[str]):
    """Convert ``yfinance.download`` output (columns: price x ticker) to a canonical frame.

    A ticker yfinance failed to fetch comes back as an all-NaN column (or not at all); it is
    kept as all-NaN so that validation names it.
    """
    if raw is None or raw.empty:
        empty = pd.DataFrame(index=pd.DatetimeIndex([], name="date"), columns=symbols, dtype="float64")
        return canonical_frame({"close": empty}), None
    names = {"Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}
    # yfinance upper-cases tickers; answer in the caller's spelling.
    spelled = {s.upper(): s for s in symbols}
    raw = raw.rename(columns=lambda c: spelled.get(str(c).upper(), c), level=1)
    fields = {names[p]: raw[p].reindex(columns=symbols) for p in names if p in raw.columns.get_level_values(0)}
    splits = raw["Stock Splits"].reindex(columns=symbols) if "Stock Splits" in raw.columns.get_level_values(0) else None
    frame = canonical_frame(fields)
    if splits is not None:
        splits = splits.where(splits > 0)
        splits.index = frame.index
    return frame, splits


def fetch_alpaca(symbols: list[str], start: dt.date | None, end: dt.date | None, *, feed: str = "sip"):
    """Daily adjusted bars from Alpaca market data (keys from the environment)."""
    from alpaca.common.exceptions import APIError
    from alpaca.data.enums import Adjustment, DataFeed
    from alpaca.data.historical import StockHistoricalDataClient
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame

    key, secret = os.environ.get(ALPACA_KEY_ENV), os.environ.get(ALPACA_SECRET_ENV)
    if not key or not secret:
        raise SpartanError(
            f"data.source 'alpaca' needs {ALPACA_KEY_ENV} and {ALPACA_SECRET_ENV} in the environment "
            "(or in a git-ignored .env file at the workspace root); or use data.source: bundled offline."
        )
    client = StockHistoricalDataClient(key, secret, url_override=os.environ.get(ALPACA_DATA_URL_ENV, "").rstrip("/") or None)
    request = StockBarsRequest(
        symbol_or_symbols=symbols, timeframe=TimeFrame.Day, adjustment=Adjustment.ALL,
        start=pd.Timestamp(start or "2016-01-01").to_pydatetime(),
        end=pd.Timestamp(_exclusive(end)).to_pydatetime() if end else None,
        feed=DataFeed(feed),
    )
    try:
        bars = client.get_stock_bars(request).df
    except APIError as err:  # 401/403 (keys, plan), or 429/504 after alpaca-py's retries
        raise SpartanError(
            f"Alpaca refused the bars request for {', '.join(symbols)} (HTTP {err.status_code}: {err}); "
            f"check {ALPACA_KEY_ENV}/{ALPACA_SECRET_ENV} and that your Alpaca plan allows feed '{feed}', "
            "or retry later if rate-limited."
        ) from err
    return from_alpaca(bars, symbols), None


def from_alpaca(bars: pd.DataFrame, symbols: list[str]) -> pd.DataFrame:
    """Convert alpaca-py's bar frame (index: symbol x UTC timestamp) to a canonical frame."""
    if bars.empty:
        empty = pd.DataFrame(index=pd.DatetimeIndex([], name="date"), columns=symbols, dtype="float64")
        return canonical_frame({"close": empty})
    bars = bars.reset_index()
    stamps = pd.to_datetime(bars["timestamp"], utc=True).dt.tz_convert("America/New_York")
    bars["date"] = stamps.dt.tz_localize(None).dt.normalize()
    fields = {f: bars.pivot(index="date", columns="symbol", values=f).reindex(columns=symbols) for f in FIELDS}
    return canonical_frame(fields)


def _exclusive(end: dt.date | None):
    """Sources take an exclusive end date; ours are inclusive."""
    return None if end is None else pd.Timestamp(end) + pd.Timedelta(days=1)
