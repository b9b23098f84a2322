"""The online sources, without the network.

Alpaca: the real alpaca-py client, driven through ``fetch_alpaca`` and ``load_prices``, talks
to a local stand-in of Alpaca's market data API (``tests/servers/alpaca_data.py``).
yfinance: ``from_yfinance`` is fed frames laid out exactly as yfinance 1.x's ``download``
returns them (see ``yfinance_download`` below).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research_lib.data import from_yfinance, load_prices, sha256_of, validate_prices
from research_lib.data._sources import fetch_alpaca
from research_lib.errors import DataValidationError, SpartanError
from tests.servers.alpaca_data import AlpacaDataServer, daily_bar

# ---------------------------------------------------------------------------------------
# Alpaca
# ---------------------------------------------------------------------------------------

# Sessions around the US switch to daylight saving time (Sunday 2024-03-10): Alpaca stamps
# daily bars at midnight New York time, so 05:00Z before the switch and 04:00Z after.
SESSIONS = ["2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12", "2024-03-13", "2024-03-14"]
WANTED = SESSIONS[1:-1]  # the tests ask for 2024-03-06 .. 2024-03-13 (inclusive)
CLOSES = {
    "AAPL": [170.12, 169.12, 169.00, 170.73, 172.75, 173.23, 171.13, 173.00],
    "MSFT": [402.65, 402.09, 409.14, 406.22, 404.52, 415.28, 415.10, 425.22],
}
SERVED = {
    symbol: [daily_bar(day, open=c - 1.0, high=c + 1.5, low=c - 2.0, close=c, volume=1_000_000 + 1000 * i)
             for i, (day, c) in enumerate(zip(SESSIONS, closes))]
    for symbol, closes in CLOSES.items()
}
KEY, SECRET = "test-key-id", "test-secret-key"
PAGE_SIZE = 4  # bars per page: 2 symbols x 6 sessions take 3 pages


@pytest.fixture
def alpaca(monkeypatch):
    """The local Alpaca data server, with the alpaca keys and URL set in the environment."""
    with AlpacaDataServer(SERVED, key=KEY, secret=SECRET, page_size=PAGE_SIZE) as server:
        monkeypatch.setenv("APCA_API_KEY_ID", KEY)
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        monkeypatch.setenv("APCA_API_DATA_URL", server.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never send local requests to a proxy
        yield server


def expected_frame(symbols: list[str]) -> pd.DataFrame:
    """What the server sent for WANTED, as a canonical frame keyed by session date."""
    keys = {"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"}
    sent = {symbol: dict(zip(SESSIONS, SERVED[symbol])) for symbol in symbols}
    columns = pd.MultiIndex.from_product([list(keys), symbols], names=["field", "symbol"])
    index = pd.DatetimeIndex(WANTED, name="date").astype("datetime64[ns]")
    rows = [[sent[symbol][day][keys[field]] for field, symbol in columns] for day in WANTED]
    return pd.DataFrame(rows, index=index, columns=columns, dtype="float64")


def test_alpaca_bars_over_pages_become_the_canonical_frame(alpaca):
    """Two symbols over three pages: rows are New York session dates, columns follow the
    requested symbol order, and the values are exactly what the server sent."""
    prices, splits = fetch_alpaca(["MSFT", "AAPL"], dt.date(2024, 3, 6), dt.date(2024, 3, 13))

    pd.testing.assert_frame_equal(prices, expected_frame(["MSFT", "AAPL"]))
    assert splits is None  # adjustment=all: Alpaca has already adjusted for splits

    # The client followed the pagination to the end, one page token after the other.
    assert [r.status for r in alpaca.requests] == [200, 200, 200]
    tokens = [r.query.get("page_token") for r in alpaca.requests]
    answers = [r.response["next_page_token"] for r in alpaca.requests]
    assert tokens == [None, *answers[:-1]] and answers[-1] is None and None not in answers[:-1]


def test_alpaca_request_asks_for_adjusted_daily_bars_with_the_keys_as_headers(alpaca):
    """The request is GET /v2/stocks/bars for 1Day, split- and dividend-adjusted bars, with
    an end one day after the last wanted session (Alpaca's end is a UTC instant)."""
    fetch_alpaca(["MSFT", "AAPL"], dt.date(2024, 3, 6), dt.date(2024, 3, 13))

    first = alpaca.requests[0]
    assert first.path == "/v2/stocks/bars"
    assert {k: first.query[k] for k in ("symbols", "timeframe", "adjustment", "feed", "start", "end")} == {
        "symbols": "MSFT,AAPL", "timeframe": "1Day", "adjustment": "all", "feed": "sip",
        "start": "2024-03-06T00:00:00+00:00", "end": "2024-03-14T00:00:00+00:00",
    }
    for request in alpaca.requests:
        assert request.headers["APCA-API-KEY-ID"] == KEY
        assert request.headers["APCA-API-SECRET-KEY"] == SECRET


def test_alpaca_symbol_without_bars_is_refused_by_name(alpaca, tmp_path):
    """A symbol the server has no bars for is an all-NaN column, which validation names;
    nothing is written."""
    with pytest.raises(DataValidationError, match=r"^alpaca returned no prices for NOPE; check the ticker spelling for this source, or remove NOPE from data\.symbols"):
        load_prices("alpaca", ["AAPL", "NOPE"], "2024-03-06", "2024-03-13", snapshot_dir=tmp_path)
    assert alpaca.requests[0].query["symbols"] == "AAPL,NOPE"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing", ["APCA_API_KEY_ID", "APCA_API_SECRET_KEY"])
def test_alpaca_without_keys_says_which_variables_to_set(alpaca, monkeypatch, missing):
    """Without both keys nothing is requested, and the error names the variables to set."""
    monkeypatch.delenv(missing)
    with pytest.raises(SpartanError, match=r"data\.source 'alpaca' needs APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment"):
        fetch_alpaca(["AAPL"], dt.date(2024, 3, 6), dt.date(2024, 3, 13))
    assert alpaca.requests == []


def test_alpaca_rate_limit_is_retried_by_the_client(alpaca):
    """A 429 is retried by alpaca-py itself (after a fixed 3 s wait: this test takes ~3 s)
    with the same request, and the fetch still succeeds."""
    alpaca.fail_next(429)
    prices, _ = fetch_alpaca(["MSFT", "AAPL"], dt.date(2024, 3, 6), dt.date(2024, 3, 13))

    pd.testing.assert_frame_equal(prices, expected_frame(["MSFT", "AAPL"]))
    assert [r.status for r in alpaca.requests] == [429, 200, 200, 200]
    assert alpaca.requests[1].query == alpaca.requests[0].query


@pytest.mark.parametrize("fault, match", [
    ("forbidden", r"HTTP 403: .*subscription does not permit querying recent SIP data.*allows feed 'sip'"),
    ("wrong secret", r"HTTP 401: .*unauthorized.*check APCA_API_KEY_ID/APCA_API_SECRET_KEY"),
])
def test_alpaca_refusal_is_a_spartan_error_not_retried(alpaca, monkeypatch, fault, match):
    """A 403 (e.g. a free plan asking for recent SIP data) or 401 (wrong keys) is asked once
    and ends in a SpartanError quoting Alpaca's answer and saying what to check."""
    if fault == "forbidden":
        alpaca.fail_next(403, "subscription does not permit querying recent SIP data")
    else:
        monkeypatch.setenv("APCA_API_SECRET_KEY", "not-the-secret")
    with pytest.raises(SpartanError, match=r"^Alpaca refused the bars request for AAPL \(" + match):
        fetch_alpaca(["AAPL"], dt.date(2024, 3, 6), None)
    assert len(alpaca.requests) == 1


def test_alpaca_load_is_snapshotted_and_reused_without_requests(alpaca, tmp_path):
    """load_prices validates and snapshots the bars with their provenance; the same request
    again reads the snapshot and makes no request; refresh=True fetches again."""
    first = load_prices("alpaca", ["AAPL", "MSFT"], "2024-03-06", "2024-03-13", snapshot_dir=tmp_path)
    pd.testing.assert_frame_equal(first, expected_frame(["AAPL", "MSFT"]))
    fetched = len(alpaca.requests)
    assert fetched == 3

    record = first.attrs["provenance"]
    snapshot = Path(record["snapshot"])
    assert snapshot.parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([snapshot.name, snapshot.with_suffix(".json").name])
    assert snapshot.name.startswith("alpaca-")
    assert json.loads(snapshot.with_suffix(".json").read_text())["sha256"] == sha256_of(snapshot) == record["sha256"]
    assert {k: record[k] for k in ("source", "symbols", "start", "end", "first_date", "last_date", "rows")} == {
        "source": "alpaca", "symbols": ["AAPL", "MSFT"], "start": "2024-03-06", "end": "2024-03-13",
        "first_date": "2024-03-06", "last_date": "2024-03-13", "rows": 6,
    }
    assert "alpaca-py" in record["versions"] and record["retrieved_at"]

    again = load_prices("alpaca", ["AAPL", "MSFT"], "2024-03-06", "2024-03-13", snapshot_dir=tmp_path)
    assert len(alpaca.requests) == fetched
    pd.testing.assert_frame_equal(again, first)
    assert again.attrs["provenance"]["sha256"] == record["sha256"]

    load_prices("alpaca", ["AAPL", "MSFT"], "2024-03-06", "2024-03-13", snapshot_dir=tmp_path, refresh=True)
    assert len(alpaca.requests) == 2 * fetched


# ---------------------------------------------------------------------------------------
# yfinance
# ---------------------------------------------------------------------------------------

YF_DAYS = ["2024-03-06", "2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12"]


def history(closes: list[float], splits: dict[str, float] | None = None, dividends: dict[str, float] | None = None) -> pd.DataFrame:
    """One ticker as ``yf.Ticker(t).history(auto_adjust=True, actions=True)`` returns it:
    exchange-time index named Date; Volume int64; 0.0 on days without a dividend or split."""
    index = pd.DatetimeIndex(YF_DAYS, name="Date").tz_localize("America/New_York")
    close = np.asarray(closes, dtype="float64")
    frame = pd.DataFrame({
        "Open": close - 0.5, "High": close + 1.0, "Low": close - 1.0, "Close": close,
        "Volume": np.arange(1, len(close) + 1, dtype="int64") * 1_000_000,
        "Dividends": 0.0, "Stock Splits": 0.0,
    }, index=index)
    for day, ratio in (splits or {}).items():
        frame.loc[pd.Timestamp(day, tz="America/New_York"), "Stock Splits"] = ratio
    for day, amount in (dividends or {}).items():
        frame.loc[pd.Timestamp(day, tz="America/New_York"), "Dividends"] = amount
    return frame


def yfinance_download(histories: dict[str, pd.DataFrame | None]) -> pd.DataFrame:
    """Assemble per-ticker histories as yfinance 1.x's ``download(..., group_by="column",
    multi_level_index=True)`` does (yfinance/multi.py): a failed ticker (None) becomes
    yfinance's empty placeholder (Open..Adj Close, Volume; all NaN), indexes lose their time
    zone and are aligned on their union, then columns are (Price, Ticker), sorted."""
    frames = {}
    for ticker, frame in histories.items():
        if frame is None:
            frame = pd.DataFrame({c: np.nan for c in ["Open", "High", "Low", "Close", "Adj Close", "Volume"]},
                                 index=pd.DatetimeIndex([], name="Date"))
        else:
            frame = frame.copy()
            frame.index = frame.index.tz_localize(None)
        frames[ticker] = frame
    union = None
    for frame in frames.values():
        if not frame.empty:
            union = frame.index if union is None else union.union(frame.index)
    frames = {t: f.reindex(union) for t, f in frames.items()}
    data = pd.concat(frames.values(), axis=1, sort=True, keys=frames.keys(), names=["Ticker", "Price"])
    data.columns = data.columns.swaplevel(0, 1)
    return data.sort_index(level=0, axis=1)


def test_yfinance_download_converts_to_the_canonical_frame():
    """Prices keep their values, columns follow the requested order, Dividends are dropped,
    and 'Stock Splits' becomes a splits frame with NaN on days without a split."""
    raw = yfinance_download({"MSFT": history([402.0, 409.0, 406.0, 404.5, 415.0], dividends={"2024-03-07": 0.75}),
                             "AAPL": history([169.0, 169.1, 170.7, 172.8, 173.2])})
    assert raw.columns.names == ["Price", "Ticker"]
    prices, splits = from_yfinance(raw, ["MSFT", "AAPL"])

    assert prices.index.equals(pd.DatetimeIndex(YF_DAYS, name="date").astype("datetime64[ns]"))
    assert list(prices.columns) == [(f, s) for f in ("open", "high", "low", "close", "volume") for s in ("MSFT", "AAPL")]
    assert prices.columns.names == ["field", "symbol"]
    for field, column in [("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close"), ("volume", "Volume")]:
        for symbol in ("MSFT", "AAPL"):
            np.testing.assert_array_equal(prices[field][symbol].to_numpy(), raw[column][symbol].to_numpy(dtype="float64"))
    assert list(splits.columns) == ["MSFT", "AAPL"] and splits.isna().all().all()
    assert splits.index.equals(prices.index)
    validate_prices(prices, "yfinance", splits=splits)


@pytest.mark.parametrize("answer", ["failed download", "left out"])
def test_yfinance_failed_ticker_is_refused_by_name(answer):
    """A ticker yfinance failed to fetch (an all-NaN placeholder) or left out of its answer
    is kept as an all-NaN column, and validation names it and mentions yfinance."""
    histories = {"AAPL": history([169.0, 169.1, 170.7, 172.8, 173.2])}
    if answer == "failed download":
        histories["NOPE"] = None
    prices, splits = from_yfinance(yfinance_download(histories), ["AAPL", "NOPE"])

    assert prices["close"]["NOPE"].isna().all() and prices["close"]["AAPL"].notna().all()
    with pytest.raises(DataValidationError, match=r"^yfinance returned no prices for NOPE \(an all-NaN column, which is how yfinance reports a failed or delisted ticker\).*remove NOPE"):
        validate_prices(prices, "yfinance", splits=splits)


def test_yfinance_recorded_split_explains_a_price_jump():
    """An unadjusted 2-for-1 split day passes a tight jump limit when yfinance recorded the
    split ('Stock Splits' = 2.0) and is refused, naming symbol and date, when it did not."""
    closes = [100.0, 101.0, 50.5, 51.0, 51.5]
    with_split, splits = from_yfinance(yfinance_download({"AAA": history(closes, splits={"2024-03-08": 2.0})}), ["AAA"])
    assert splits["AAA"].dropna().to_dict() == {pd.Timestamp("2024-03-08"): 2.0}
    validate_prices(with_split, "yfinance", splits=splits, max_daily_price_ratio=1.8)

    without_split, no_splits = from_yfinance(yfinance_download({"AAA": history(closes)}), ["AAA"])
    with pytest.raises(DataValidationError, match=r"^yfinance, AAA: impossible one-day move on 2024-03-08, close 101 -> 50\.5 \(x0\.5\) with no split recorded.*max_daily_price_ratio \(now 1\.8\)"):
        validate_prices(without_split, "yfinance", splits=no_splits, max_daily_price_ratio=1.8)


def test_yfinance_answers_in_the_callers_spelling_of_a_ticker():
    """yfinance upper-cases tickers; a lowercase request must not look like a failed download."""
    prices, _ = from_yfinance(yfinance_download({"AAPL": history([169.0, 169.1, 170.7, 172.8, 173.2])}), ["aapl"])
    assert prices["close"]["aapl"].tolist() == [169.0, 169.1, 170.7, 172.8, 173.2]
