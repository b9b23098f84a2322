"""Markets: the calendar a symbol trades on, when its daily value is known, and a year's sessions.

Asset classes and their calendars (``exchange_calendars`` codes):

- ``stock`` (and indices, ETFs): the exchange of ``data.calendar`` (``XNYS``, New York, by default);
  a session's values are known at the exchange's close (16:00 New York, 13:00 on an early close).
- ``crypto`` (pairs such as ``BTC/USD`` at Alpaca, ``BTC-USD`` at Yahoo): ``24/7``, every day; a
  day is a UTC day, its values known at the next midnight UTC.
- ``forex`` (``EURUSD=X`` at Yahoo, or ``EUR/USD``): ``24/5``, weekdays; a UTC day as for crypto.

A symbol's class is read from its spelling (`asset_class`); ``data.markets`` names it where the
spelling is not enough. A universe mixing calendars is put on one calendar (`universe_calendar`:
the stock exchange's when the universe holds a stock) **point in time**: the row of a session
holds, for each symbol, what was published by that session's close (`align_point_in_time`). A
crypto day closes at midnight UTC, after New York's close, so the New York session of a Monday
sees Sunday's crypto bar, not Monday's. Annualization follows the calendar (`sessions_per_year`:
252 for New York, 365 for crypto, 260 for forex).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal, get_args

import numpy as np
import pandas as pd

from research_lib.data._calendar import _calendar, _exchange
from research_lib.data._frame import canonical_frame

__all__ = ["AssetClass", "MARKET_CALENDARS", "align_point_in_time", "asset_class", "publication_times",
           "sessions_per_year", "symbol_calendar", "universe_calendar"]

AssetClass = Literal["stock", "crypto", "forex"]
ASSET_CLASSES = get_args(AssetClass)
MARKET_CALENDARS = {"crypto": "24/7", "forex": "24/5"}  # a stock trades on data.calendar
FIAT = frozenset("USD EUR GBP JPY CHF CAD AUD NZD SEK NOK DKK HKD SGD CNY CNH MXN ZAR TRY PLN INR KRW BRL".split())
CRYPTO_QUOTES = frozenset({"USD", "USDT", "USDC", "EUR", "GBP", "BTC", "ETH"})
_PAIR = re.compile(r"^([A-Z0-9]{2,10})[/-]([A-Z]{3,4})$")
_YAHOO_FX = re.compile(r"^([A-Z]{6}|[A-Z]{3})=X$")
_YEARS_AVERAGED = 10


def asset_class(symbol: str, markets: Mapping[str, str] | None = None) -> AssetClass:
    """``"crypto"``, ``"forex"`` or ``"stock"`` for ``symbol``: as ``markets`` names it, else from its
    spelling (``BTC/USD``, ``BTC-USD``: crypto; ``EURUSD=X``, ``EUR/USD``: forex; anything else, such
    as ``AAPL``, ``BRK-B`` or ``^GSPC``: stock; Polygon's ``X:BTCUSD`` crypto, ``C:EURUSD`` forex)."""
    if markets and symbol in markets:
        return markets[symbol]  # checked where the setting is read (config.DataConfig)
    if _YAHOO_FX.match(symbol) or symbol.startswith("C:"):  # C:EURUSD, Polygon's forex
        return "forex"
    if symbol.startswith("X:"):  # X:BTCUSD, Polygon's crypto
        return "crypto"
    pair = _PAIR.match(symbol)
    if pair:
        base, quote = pair.groups()
        if base in FIAT and quote in FIAT:
            return "forex"
        if quote in CRYPTO_QUOTES and base not in FIAT:
            return "crypto"
    return "stock"


def symbol_calendar(symbol: str, stock_calendar: str | None, markets: Mapping[str, str] | None = None) -> str | None:
    """The calendar ``symbol`` trades on: ``stock_calendar`` for a stock, ``24/7`` for crypto,
    ``24/5`` for forex."""
    return MARKET_CALENDARS.get(asset_class(symbol, markets), stock_calendar)


def universe_calendar(symbols, stock_calendar: str | None, markets: Mapping[str, str] | None = None) -> str | None:
    """The one calendar a universe's rows follow: the stock exchange's when it holds a stock (or no
    calendar is checked), else forex's when it holds a currency, else crypto's."""
    calendars = {symbol_calendar(s, stock_calendar, markets) for s in symbols}
    if stock_calendar is None or stock_calendar in calendars or not calendars:
        return stock_calendar
    return MARKET_CALENDARS["forex"] if MARKET_CALENDARS["forex"] in calendars else MARKET_CALENDARS["crypto"]


# The market conventions for a year's sessions, where one is established: about 252 New York
# sessions (251.6 over 2015-2024), 52 x 5 weekdays, every day.
CONVENTIONAL_YEAR = {"XNYS": 252, "XNAS": 252, "NYSE": 252, "NASDAQ": 252, "24/5": 260, "24/7": 365}


@lru_cache(maxsize=16)
def sessions_per_year(calendar: str | None) -> int:
    """Sessions in a year on ``calendar``: the market's convention where there is one (252 for
    ``XNYS``, 365 for ``24/7`` crypto, 260 for ``24/5`` forex; 365 for ``None``, any day), else
    the mean over the calendar's last ten whole years, rounded. Annualizes returns, volatilities,
    Sharpe ratios and daily rates of a run on that calendar."""
    if calendar is None:
        return 365
    if calendar in CONVENTIONAL_YEAR:
        return CONVENTIONAL_YEAR[calendar]
    last = min(pd.Timestamp.now().year - 1, (_exchange(calendar).bound_max() or pd.Timestamp.max).year - 1)
    first = last - _YEARS_AVERAGED + 1
    sessions = _calendar(calendar, first, last).sessions
    counts = pd.Series(1, index=sessions).groupby(sessions.year).sum()
    return int(round(counts[counts.index >= first].mean()))


def publication_times(dates: pd.DatetimeIndex, calendar: str | None) -> pd.DatetimeIndex:
    """When the daily values dated ``dates`` are known (UTC): the session's close on ``calendar``;
    midnight UTC after the date for ``None``, ``24/7`` and ``24/5`` (a UTC day)."""
    dates = pd.DatetimeIndex(dates).as_unit("ns")  # one unit for every calendar: the times are compared
    if calendar is None or not len(dates):
        return (dates + pd.Timedelta(days=1)).tz_localize("UTC")
    exchange = _calendar(calendar, dates.min().year, dates.max().year)
    closes = exchange.schedule["close"]
    known = closes.reindex(dates.astype(closes.index.dtype))
    if known.isna().any():
        missing = dates[known.isna().to_numpy()]
        raise ValueError(f"{len(missing)} dates are not {calendar} sessions (first {missing[0]:%Y-%m-%d}); "
                         "a value is dated by the session it closed")
    known = pd.DatetimeIndex(known.to_numpy(), name=None)
    return known.tz_localize("UTC") if known.tz is None else known.tz_convert("UTC")


def _refuse_unordered(dates: pd.Index, what: str) -> None:
    if not (dates.is_monotonic_increasing and dates.is_unique):
        raise ValueError(f"{what} must be sorted and unique to be aligned point in time; sort them and drop repeated "
                         "dates first (e.g. frame.sort_index() and frame[~frame.index.duplicated()]).")


def align_point_in_time(parts: list[tuple[pd.DataFrame, str | None]], sessions: pd.DatetimeIndex,
                        calendar: str | None) -> pd.DataFrame:
    """Canonical frames on their own calendars, put on ``sessions`` of ``calendar`` point in time.

    The row of session ``s`` aggregates, per symbol, the bars published after the previous session's
    close and by ``s``'s close: the first open, the highest high, the lowest low, the last close, the
    summed volume. A symbol that published nothing in that interval (a stock on a Saturday of a crypto
    calendar) repeats its last close, with the open, high and low at that close and no volume; before
    its first bar it is NaN. Nothing published after ``s``'s close reaches row ``s``.

    Raises
    ------
    ValueError
        if ``sessions`` or a part's dates are not sorted and unique (which bar is the last
        published would be ambiguous).
    """
    sessions = pd.DatetimeIndex(sessions, name="date")
    _refuse_unordered(sessions, "sessions")
    closes = publication_times(sessions, calendar)
    fields: dict[str, list[pd.DataFrame]] = {}
    for frame, part_calendar in parts:
        symbols = frame.columns.get_level_values(-1).unique()
        _refuse_unordered(frame.index, f"the dates of {', '.join(map(str, symbols[:3]))}")
        known = publication_times(frame.index, part_calendar)
        # the first session whose close is at or after the bar's publication
        slot = np.searchsorted(closes.asi8, known.asi8, side="left")
        inside = slot < len(sessions)
        label = pd.Index(sessions[slot[inside]], name="date")
        rows = frame.iloc[np.flatnonzero(inside)]
        for field in frame.columns.get_level_values(0).unique():
            values = rows[field].set_axis(label)
            how = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}[field]
            grouped = getattr(values.groupby(level=0), how)(**({"min_count": 1} if how == "sum" else {}))
            fields.setdefault(field, []).append(grouped.reindex(sessions))
    merged = {field: pd.concat(frames, axis=1) for field, frames in fields.items()}
    close = merged["close"].ffill()
    traded = merged["close"].notna()
    for field in ("open", "high", "low"):
        if field in merged:
            merged[field] = merged[field].where(traded, close)
    if "volume" in merged:
        merged["volume"] = merged["volume"].where(traded, 0.0).where(close.notna())
    merged["close"] = close
    return canonical_frame(merged)
