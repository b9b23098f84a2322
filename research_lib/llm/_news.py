"""Headlines for the analyst's prompts, point in time: Alpaca's news API (alpaca-py).

Each article becomes one ``Headline`` per universe symbol it names, stamped with its
publication time; ``headlines_by_date`` gives each analysis date the latest few published
in the ``lookback_days`` before its close (16:00 New York), never later.
"""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd

from research_lib.errors import SpartanError
from research_lib.llm._prompt import CLOSE_TIME, EXCHANGE_TZ, Headline, _exchange_time

ALPACA_KEY_ENV, ALPACA_SECRET_ENV, ALPACA_DATA_URL_ENV = "APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "APCA_API_DATA_URL"


def fetch_alpaca_headlines(symbols: list[str], start: dt.datetime, end: dt.datetime) -> list[Headline]:
    """Articles naming any of ``symbols`` created in [start, end] (keys from the environment)."""
    from alpaca.common.exceptions import APIError
    from alpaca.data.historical.news import NewsClient
    from alpaca.data.requests import NewsRequest

    key, secret = os.environ.get(ALPACA_KEY_ENV), os.environ.get(ALPACA_SECRET_ENV)
    if not key or not secret:
        raise SpartanError(f"llm.headlines 'alpaca' needs {ALPACA_KEY_ENV} and {ALPACA_SECRET_ENV} in the environment "
                           "(or .env); or use llm.headlines: none.")
    client = NewsClient(key, secret, url_override=os.environ.get(ALPACA_DATA_URL_ENV, "").rstrip("/") or None)
    try:
        news = client.get_news(NewsRequest(symbols=",".join(symbols), start=start, end=end, sort="asc"))
    except APIError as err:
        raise SpartanError(f"Alpaca refused the news request ({err}); check the keys, or use llm.headlines: none.") from err
    wanted = set(symbols)
    return [Headline(item.created_at, symbol, item.headline)
            for item in news.data.get("news", []) for symbol in item.symbols if symbol in wanted]


def headlines_by_date(headlines: list[Headline], dates, lookback_days: int = 7,
                      max_per_date: int = 20) -> dict[pd.Timestamp, list[Headline]]:
    """For each date, the latest ``max_per_date`` headlines published in the ``lookback_days``
    before its close."""
    stamped = sorted(((_exchange_time(h.published_at), h) for h in headlines), key=lambda pair: pair[0])
    out = {}
    for date in pd.DatetimeIndex(dates):
        close = (date + CLOSE_TIME).tz_localize(EXCHANGE_TZ)
        window = [h for when, h in stamped if close - pd.Timedelta(days=lookback_days) < when <= close]
        if window:
            out[date] = window[-max_per_date:]
    return out
