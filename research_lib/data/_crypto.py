"""Alpaca crypto daily bars (pairs such as ``BTC/USD``) through alpaca-py's ``CryptoHistoricalDataClient``.

Date convention: a crypto day is a UTC calendar day. The bar dated D covers D 00:00 UTC to
D+1 00:00 UTC and is known only after D+1 00:00 UTC (the ``24/7`` calendar of ``load_prices``
accepts dates up to yesterday, UTC). Alpaca stamps a daily crypto bar with the start of its
day: 00:00 UTC since mid-2025 (``...T00:00:00Z``); before, midnight Chicago time (``...T06:00:00Z``
in winter, ``...T05:00:00Z`` in summer, alpaca-py issue #169). Either way the row is the UTC
date of the stamp, D. A bar still stamped at Chicago midnight spans D 05:00/06:00 UTC to the
same hour of D+1, a few hours later than the convention.

Requests ask for ``[start 00:00 UTC, end 23:59:59 UTC]`` so the bar of ``end`` is included under
both stamps and the next one is not; without ``end``, up to yesterday (UTC): today's bar is not
known yet. Crypto data needs no keys: ``APCA_API_KEY_ID``/``APCA_API_SECRET_KEY`` are sent when both
are set (a higher rate limit), else the request is unauthenticated. ``APCA_API_DATA_URL``
overrides the URL. A pair without bars is an all-NaN column, which validation names.
"""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd

from research_lib.data._frame import FIELDS, bars_frame
from research_lib.data._sources import ALPACA_DATA_URL_ENV, ALPACA_KEY_ENV, ALPACA_SECRET_ENV
from research_lib.errors import SpartanError

DEFAULT_START = dt.date(2016, 1, 1)


def fetch_alpaca_crypto(symbols: list[str], start: dt.date | None, end: dt.date | None) -> tuple[pd.DataFrame, None]:
    """Daily bars of crypto pairs (``"BTC/USD"``) from ``start`` to ``end`` (inclusive UTC days) from Alpaca.

    Returns ``(prices, None)``: a canonical frame indexed by UTC dates (not yet validated);
    crypto has no splits.

    Raises
    ------
    SpartanError
        when only one of the two keys is set, or Alpaca refuses the request (401/403, or
        429 after alpaca-py's own retries).
    """
    from alpaca.common.exceptions import APIError
    from alpaca.data.historical.crypto import CryptoHistoricalDataClient
    from alpaca.data.requests import CryptoBarsRequest
    from alpaca.data.timeframe import TimeFrame

    key, secret = os.environ.get(ALPACA_KEY_ENV) or None, os.environ.get(ALPACA_SECRET_ENV) or None
    if (key is None) != (secret is None):
        missing = ALPACA_SECRET_ENV if secret is None else ALPACA_KEY_ENV
        raise SpartanError(f"Alpaca crypto data is read with both {ALPACA_KEY_ENV} and {ALPACA_SECRET_ENV} or with "
                           f"neither (unauthenticated, a lower rate limit); {missing} is not set: set it or unset both.")
    url = os.environ.get(ALPACA_DATA_URL_ENV, "").rstrip("/") or None
    client = CryptoHistoricalDataClient(key, secret, url_override=url)
    last = end or (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=1)).date()
    request = CryptoBarsRequest(
        symbol_or_symbols=symbols, timeframe=TimeFrame.Day,
        start=_utc(start or DEFAULT_START), end=_utc(last) + dt.timedelta(days=1, seconds=-1),
    )
    try:
        bars = client.get_crypto_bars(request).df
    except APIError as err:  # 401/403, or 429/504 after alpaca-py's retries
        status, text = err.status_code, f"{err}"
    else:
        return from_alpaca_crypto(bars, symbols), None
    for credential in filter(None, (key, secret)):
        text = text.replace(credential, "***")
    # Raised outside the handler: no chained APIError, whose request holds the keys in its headers.
    raise SpartanError(
        f"Alpaca refused the crypto bars request for {', '.join(symbols)} (HTTP {status}: {text}); "
        f"check {ALPACA_KEY_ENV}/{ALPACA_SECRET_ENV} (or unset both: crypto data needs no keys) and the pairs "
        "(e.g. BTC/USD), or retry later if rate-limited."
    )


def from_alpaca_crypto(bars: pd.DataFrame, symbols: list[str]) -> pd.DataFrame:
    """Convert alpaca-py's crypto bar frame (index: symbol x UTC timestamp) to a canonical frame
    indexed by the UTC date of each bar's start (see the module docstring)."""
    table = bars.reset_index() if not bars.empty else pd.DataFrame(columns=["symbol", "timestamp", *FIELDS])
    stamps = pd.to_datetime(table["timestamp"], utc=True)
    table["date"] = stamps.dt.tz_localize(None).dt.normalize()
    return bars_frame(table[["symbol", "date", *FIELDS]], symbols, "alpaca")


def _utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
