"""Alpaca crypto daily bars, without the network.

The real alpaca-py ``CryptoHistoricalDataClient`` is driven through ``fetch_alpaca_crypto`` and
``load_prices`` against the local Alpaca data server's ``/v1beta3/crypto/us/bars``
(``tests/servers/alpaca_data.py``). Convention under test (``research_lib/data/_crypto.py``): the
bar dated D is the UTC day D, stamped ``D T00:00:00Z`` by Alpaca.
"""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd
import pytest

from research_lib.data import load_prices
from research_lib.data._crypto import fetch_alpaca_crypto, from_alpaca_crypto
from research_lib.errors import SpartanError
from tests.servers.alpaca_data import AlpacaDataServer, crypto_bar

# Thursday 2024-03-07 .. Wednesday 2024-03-13, a weekend and the US daylight-saving switch
# (Sunday 03-10) inside: neither matters to a UTC day.
DAYS = [f"2024-03-{d:02d}" for d in range(7, 14)]
WANTED = DAYS[1:-1]  # the tests ask for Friday 03-08 .. Tuesday 03-12 (inclusive)
CLOSES = {"BTC/USD": [66_900.0, 68_300.0, 68_500.0, 69_000.0, 72_100.0, 71_500.0, 73_000.0],
          "ETH/USD": [3_820.0, 3_880.0, 3_900.0, 3_880.0, 4_060.0, 3_980.0, 4_000.0]}
SERVED = {pair: [crypto_bar(day, open=c * 0.99, high=c * 1.02, low=c * 0.97, close=c, volume=100.0 + i)
                 for i, (day, c) in enumerate(zip(DAYS, closes))] for pair, closes in CLOSES.items()}
KEY = "test-key-id"
CANARY = "canary-alpaca-" + "s3cr3t" * 4  # built at run time: no file holds the whole secret
PAGE_SIZE = 3  # 2 pairs x 5 days take 4 pages


@pytest.fixture
def alpaca(monkeypatch):
    """The local Alpaca data server with crypto bars; no keys in the environment (crypto needs none)."""
    with AlpacaDataServer(crypto=SERVED, key=KEY, secret=CANARY, page_size=PAGE_SIZE) as server:
        monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
        monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
        monkeypatch.setenv("APCA_API_DATA_URL", server.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield server


def fetch(pairs=("BTC/USD", "ETH/USD")):
    return fetch_alpaca_crypto(list(pairs), dt.date(2024, 3, 8), dt.date(2024, 3, 12))


def expected(pairs: list[str]) -> pd.DataFrame:
    keys = {"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"}
    sent = {pair: dict(zip(DAYS, SERVED[pair])) for pair in pairs}
    columns = pd.MultiIndex.from_product([list(keys), pairs], names=["field", "symbol"])
    rows = [[sent[p][day][keys[f]] for f, p in columns] for day in WANTED]
    return pd.DataFrame(rows, index=pd.DatetimeIndex(WANTED, name="date").astype("datetime64[ns]"),
                        columns=columns, dtype="float64")


def test_pairs_over_pages_become_the_canonical_frame_with_weekends(alpaca):
    """Every UTC day is a row, Saturday and Sunday included; the pages are followed to the end."""
    prices, splits = fetch(["BTC/USD", "ETH/USD"])

    pd.testing.assert_frame_equal(prices, expected(["BTC/USD", "ETH/USD"]))
    assert splits is None
    assert {d.day_name() for d in prices.index} >= {"Saturday", "Sunday"}
    assert [r.status for r in alpaca.requests] == [200] * 4
    tokens = [r.query.get("page_token") for r in alpaca.requests]
    answers = [r.response["next_page_token"] for r in alpaca.requests]
    assert tokens == [None, *answers[:-1]] and answers[-1] is None


def test_request_covers_whole_utc_days_without_keys(alpaca):
    """GET /v1beta3/crypto/us/bars for 1Day from start 00:00 UTC to end 23:59:59 UTC (the bar of the
    end day is in, the next day's is out), unauthenticated when no keys are set."""
    fetch()
    first = alpaca.requests[0]
    assert first.path == "/v1beta3/crypto/us/bars"
    assert {k: first.query[k] for k in ("symbols", "timeframe", "start", "end")} == {
        "symbols": "BTC/USD,ETH/USD", "timeframe": "1Day",
        "start": "2024-03-08T00:00:00+00:00", "end": "2024-03-12T23:59:59+00:00",
    }
    assert not {h.lower() for h in first.headers} & {"apca-api-key-id", "apca-api-secret-key"}


def test_a_bar_stamped_at_midnight_utc_is_that_utc_day(alpaca):
    """Sunday's bar, stamped 2024-03-10T00:00:00Z (New York is then still on Saturday evening),
    is the row 2024-03-10."""
    assert SERVED["BTC/USD"][3]["t"] == "2024-03-10T00:00:00Z"
    prices, _ = fetch(["BTC/USD"])
    assert prices.loc["2024-03-10", ("close", "BTC/USD")] == SERVED["BTC/USD"][3]["c"] == 69_000.0


def test_keys_are_sent_when_both_are_set(alpaca, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", CANARY)
    fetch(["BTC/USD"])
    assert all(r.headers["APCA-API-SECRET-KEY"] == CANARY and r.status == 200 for r in alpaca.requests)


def test_only_one_key_is_refused_by_name(alpaca, monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    with pytest.raises(SpartanError, match=r"with both APCA_API_KEY_ID and APCA_API_SECRET_KEY or with neither.*"
                                           r"APCA_API_SECRET_KEY is not set"):
        fetch()
    assert alpaca.requests == []


@pytest.mark.parametrize("fault, match", [
    ("forbidden", r"HTTP 403: .*forbidden"),
    ("wrong secret", r"HTTP 401: .*unauthorized"),
])
def test_refusal_is_a_spartan_error_without_the_secret(alpaca, monkeypatch, caplog, capsys, fault, match):
    """A 403 or 401 is asked once and ends in a SpartanError; the secret (the canary, sent as a
    header) is in no message of the chain, no log record and nothing printed."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", CANARY)
    if fault == "forbidden":
        alpaca.fail_next(403)
    else:
        alpaca.secret = "the-secret-alpaca-knows"
    refused = r"^Alpaca refused the crypto bars request for BTC/USD, ETH/USD \("
    with pytest.raises(SpartanError, match=refused + match) as caught:
        fetch()

    assert len(alpaca.requests) == 1 and alpaca.requests[0].headers["APCA-API-SECRET-KEY"] == CANARY
    err, texts = caught.value, []
    while err is not None:
        texts += [str(err), repr(err)]
        err = err.__cause__ or err.__context__
    assert CANARY not in "\n".join(texts)
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # debug logging was on
    assert CANARY not in caplog.text and all(CANARY not in f"{r.getMessage()} {r.args}" for r in caplog.records)
    out, printed = capsys.readouterr()
    assert CANARY not in out + printed


def test_former_chicago_midnight_stamps_keep_their_utc_date(alpaca):
    """Before mid-2025 Alpaca stamped daily crypto bars at midnight Chicago time (06:00Z in winter,
    05:00Z in summer); the UTC date of the stamp is still the bar's day."""
    alpaca.crypto["SOL/USD"] = [crypto_bar("2022-01-01", 1.0, 1.0, 1.0, 1.0, 1.0, stamp="2022-01-01T06:00:00Z"),
                                crypto_bar("2022-07-01", 2.0, 2.0, 2.0, 2.0, 1.0, stamp="2022-07-01T05:00:00Z")]
    prices, _ = fetch_alpaca_crypto(["SOL/USD", "ETH/USD"], dt.date(2022, 1, 1), dt.date(2022, 7, 1))

    assert prices["close"]["SOL/USD"].to_dict() == {pd.Timestamp("2022-01-01"): 1.0, pd.Timestamp("2022-07-01"): 2.0}
    assert prices["close"]["ETH/USD"].isna().all()  # a pair without bars: an all-NaN column
    assert from_alpaca_crypto(pd.DataFrame(), ["BTC/USD"]).empty


def test_load_prices_of_a_pair_from_alpaca_on_the_24_7_calendar(alpaca, tmp_path):
    """Through the workspace's entry point: every UTC day, validated on 24/7, snapshotted."""
    prices = load_prices(source="alpaca", symbols=["BTC/USD"], start="2024-03-08", end="2024-03-12",
                         snapshot_dir=tmp_path, calendar="24/7", now=dt.datetime(2024, 3, 20, tzinfo=dt.timezone.utc))

    pd.testing.assert_frame_equal(prices, expected(["BTC/USD"]))
    assert prices.attrs["provenance"]["source"] == "alpaca"
    assert alpaca.requests[0].path == "/v1beta3/crypto/us/bars"
