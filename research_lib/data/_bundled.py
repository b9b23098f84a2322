"""Real market history shipped inside PyPI packages: works with no network.

- ``skfolio.datasets``: 20 US large caps (adjusted closes, 1990-01-02 to 2022-12-28), the
  S&P 500 index (``SP500``, same span) and five factor ETFs (2014-2022).
- ``arch.data``: S&P 500 (``^GSPC``) and NASDAQ Composite (``^IXIC``) OHLCV 1999-2018,
  the VIX close (``^VIX``, 2014-2019) and WTI crude spot (``WTI``, from 1990).

Sessions are the NYSE (``XNYS``) sessions of the skfolio stock data. VIX and WTI are
published on slightly different calendars: their days outside those sessions are dropped
and sessions they miss carry the last published value forward (known at that date: no
look-ahead).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import pandas as pd

from research_lib.data._frame import canonical_frame

STOCKS = ("AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK",
          "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM")
FACTOR_ETFS = ("MTUM", "QUAL", "SIZE", "USMV", "VLUE")
INDICES = ("SP500", "^GSPC", "^IXIC", "^VIX", "WTI")
BUNDLED_SYMBOLS = STOCKS + FACTOR_ETFS + INDICES
DEFAULT_UNIVERSE = STOCKS
# The first session from which every bundled series passes validation with the default limits:
# RRC's quotes before it are stale for up to 68 sessions (1990-1992) and jump x3 on 1990-04-10.
BUNDLED_START = dt.date(1992, 5, 12)


@lru_cache(maxsize=1)
def _all_bundled() -> pd.DataFrame:
    """Every bundled series in one canonical frame (about 8,300 sessions x 30 symbols)."""
    import skfolio.datasets as sk
    from arch.data import nasdaq, sp500, vix, wti

    closes = sk.load_sp500_dataset().join(sk.load_sp500_index()).join(sk.load_factors_dataset(), how="left")
    sessions = pd.DatetimeIndex(closes.index).astype("datetime64[ns]")
    closes.index = sessions
    fields = {"close": closes}
    for symbol, module in (("^GSPC", sp500), ("^IXIC", nasdaq)):
        ohlcv = module.load()
        ohlcv.index = pd.DatetimeIndex(ohlcv.index).astype("datetime64[ns]")
        ohlcv = ohlcv.reindex(sessions[(sessions >= ohlcv.index[0]) & (sessions <= ohlcv.index[-1])])
        for field, column in (("open", "Open"), ("high", "High"), ("low", "Low"), ("volume", "Volume")):
            fields.setdefault(field, pd.DataFrame(index=sessions))[symbol] = ohlcv[column]
        fields["close"][symbol] = ohlcv["Adj Close"]
    for symbol, module in (("^VIX", vix), ("WTI", wti)):
        fields["close"][symbol] = _on_sessions(module.load().iloc[:, 0], sessions)
    return canonical_frame(fields)


def _on_sessions(series: pd.Series, sessions: pd.DatetimeIndex) -> pd.Series:
    """Align a series published on another calendar to ``sessions``, carrying values forward."""
    series = series.dropna()
    series.index = pd.DatetimeIndex(series.index).astype("datetime64[ns]")
    inside = sessions[(sessions >= series.index[0]) & (sessions <= series.index[-1])]
    return series.reindex(series.index.union(inside)).ffill().reindex(inside)


def bundled_prices() -> pd.DataFrame:
    """A copy of the full bundled frame (callers may modify it)."""
    return _all_bundled().copy()
