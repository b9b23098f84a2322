"""Polygon.io daily bars, without the network.

The real client (``polygon-api-client``) is driven through ``fetch_polygon`` and ``load_prices``
against a local stand-in of Polygon's aggregates endpoint (``tests/servers/polygon_api.py``),
with a canary key that must appear in no message, log record or output. ``from_polygon`` is
also fed hostile input offline.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import pandas as pd
import pytest
from polygon.rest.models import Agg

from research_lib.data import load_prices
from research_lib.data._polygon import POLYGON_KEY_ENV, POLYGON_RETRIES, POLYGON_URL_ENV, fetch_polygon, from_polygon
from research_lib.errors import DataValidationError, SpartanError
from tests.servers.polygon_api import PolygonServer, daily_agg

CANARY = "canary-polygon-" + "k3y" * 5  # built at run time: no file holds the whole key
# Sessions around the US switch to daylight saving time (Sunday 2024-03-10): Polygon stamps a
# daily bar at midnight New York time, 05:00Z before the switch and 04:00Z after.
SESSIONS = ["2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12", "2024-03-13"]
CLOSES = {"AAPL": [170.12, 169.12, 169.00, 170.73, 172.75, 173.23, 171.13],
          "SPLT": [100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 106.0]}  # a 10-for-1 split before 2024-03-11
SPLIT_DAY = "2024-03-11"
PAGE_SIZE = 2  # 7 sessions take 4 pages


def bars(closes: list[float], factor=lambda day: 1.0) -> list[dict]:
    return [daily_agg(day, open=(c - 1) * factor(day), high=(c + 1.5) * factor(day), low=(c - 2) * factor(day),
                      close=c * factor(day), volume=1_000_000 + 1000 * i)
            for i, (day, c) in enumerate(zip(SESSIONS, closes))]


ADJUSTED = {symbol: bars(closes) for symbol, closes in CLOSES.items()}
UNADJUSTED = {"SPLT": bars(CLOSES["SPLT"], lambda day: 10.0 if day < SPLIT_DAY else 1.0)}


@pytest.fixture
def polygon(monkeypatch):
    """The local Polygon server, knowing the canary key, with the key and URL in the environment."""
    with PolygonServer(ADJUSTED, unadjusted=UNADJUSTED, key=CANARY, page_size=PAGE_SIZE) as server:
        monkeypatch.setenv(POLYGON_KEY_ENV, CANARY)
        monkeypatch.setenv(POLYGON_URL_ENV, server.url)
        yield server


def expected(symbols: list[str]) -> pd.DataFrame:
    keys = {"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"}
    columns = pd.MultiIndex.from_product([list(keys), symbols], names=["field", "symbol"])
    rows = [[ADJUSTED[s][i][keys[f]] for f, s in columns] for i in range(len(SESSIONS))]
    index = pd.DatetimeIndex(SESSIONS, name="date").astype("datetime64[ns]")
    return pd.DataFrame(rows, index=index, columns=columns, dtype="float64")


def fetch(symbols=("AAPL",)):
    return fetch_polygon(list(symbols), dt.date(2024, 3, 5), dt.date(2024, 3, 13))


def messages(err: BaseException) -> str:
    """Every text an exception chain carries."""
    texts = []
    while err is not None:
        texts += [str(err), repr(err), *map(str, err.args)]
        err = err.__cause__ or err.__context__
    return "\n".join(texts)


def test_pages_are_followed_and_every_row_arrives_once_in_order(polygon):
    """Seven sessions over four pages: every bar once, on its New York session date."""
    prices, splits = fetch(["AAPL", "SPLT"])

    pd.testing.assert_frame_equal(prices, expected(["AAPL", "SPLT"]))
    assert splits is None
    aapl = [r for r in polygon.requests if "/AAPL/" in r.path]
    assert len(aapl) == 4 and [r.status for r in aapl] == [200] * 4
    assert [len(r.response.get("results", [])) for r in aapl] == [2, 2, 2, 1]
    # The client follows next_url (the path's start moved on, an opaque cursor) until there is none.
    followed = [r.response.get("next_url") for r in aapl]
    assert [f"{polygon.url}{r.path}?cursor={r.query['cursor']}" for r in aapl[1:]] == followed[:-1]
    assert followed[-1] is None


def test_first_request_asks_for_adjusted_daily_bars_with_the_key_as_bearer(polygon):
    fetch()
    first = polygon.requests[0]
    assert first.path == "/v2/aggs/ticker/AAPL/range/1/day/2024-03-05/2024-03-13"
    assert first.query == {"adjusted": "true", "sort": "asc", "limit": "50000"}
    assert all(r.headers["Authorization"] == f"Bearer {CANARY}" for r in polygon.requests)


def test_adjusted_prices_are_what_we_get_across_a_split(polygon):
    """The server answers adjusted=false with the unadjusted (x10 before the split) closes: the
    fetched closes are the adjusted ones, on every page."""
    prices, _ = fetch(["SPLT"])

    assert prices["close"]["SPLT"].tolist() == CLOSES["SPLT"]
    assert all(r.response["adjusted"] is True for r in polygon.requests)
    assert UNADJUSTED["SPLT"][0]["c"] == 10 * CLOSES["SPLT"][0]  # the server does serve something else


def test_unknown_ticker_is_an_all_nan_column(polygon):
    prices, _ = fetch(["AAPL", "NOPE"])

    assert prices["close"]["NOPE"].isna().all() and prices["close"]["AAPL"].notna().all()
    nope = [r for r in polygon.requests if "/NOPE/" in r.path]
    assert len(nope) == 1 and nope[0].response["resultsCount"] == 0 and "results" not in nope[0].response


def test_one_rate_limit_is_retried_by_the_client(polygon):
    """A 429 is retried at once (urllib3's first backoff is 0 s) with the same request."""
    polygon.fail_next(429)
    prices, _ = fetch()

    pd.testing.assert_frame_equal(prices, expected(["AAPL"]))
    assert [r.status for r in polygon.requests] == [429, 200, 200, 200, 200]
    first, again = polygon.requests[:2]
    assert (again.path, again.query) == (first.path, first.query)


def test_persistent_rate_limit_ends_in_a_spartan_error_quickly(polygon):
    """1 + POLYGON_RETRIES requests, backoffs of 0, 0.2 and 0.4 s (no Retry-After), then a SpartanError."""
    polygon.fail_next(429, times=10)
    began = time.monotonic()
    with pytest.raises(SpartanError, match=r"^Polygon refused the daily aggregates for AAPL \(HTTP 429 after 3 retries\); "
                                           r"wait a minute and retry"):
        fetch()
    assert time.monotonic() - began < 3.0
    assert [r.status for r in polygon.requests] == [429] * (1 + POLYGON_RETRIES)


def test_wrong_key_is_a_spartan_error_naming_the_variable(polygon, monkeypatch):
    monkeypatch.setenv(POLYGON_KEY_ENV, "not-the-key")
    with pytest.raises(SpartanError, match=r"^Polygon refused the daily aggregates for AAPL \(HTTP 401, ERROR: Unknown API Key\); "
                                           r"check POLYGON_API_KEY"):
        fetch()
    assert len(polygon.requests) == 1  # a 401 is not retried


def test_missing_key_is_refused_before_any_request(polygon, monkeypatch):
    monkeypatch.delenv(POLYGON_KEY_ENV)
    with pytest.raises(SpartanError, match=r"^data\.source 'polygon' needs POLYGON_API_KEY in the environment \(or in a "
                                           r"git-ignored \.env file.*data\.source: bundled"):
        fetch()
    assert polygon.requests == []


@pytest.mark.parametrize("fault", ["rate limit", "refused key", "not entitled", "key echoed"])
def test_canary_key_is_in_no_message_log_or_output(polygon, caplog, capsys, fault):
    """Whatever the failure, the key is in no exception of the chain, no log record (urllib3's
    debug log included) and nothing printed."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    fetch(["SPLT"])  # a success first: its pages are logged too
    if fault == "rate limit":
        polygon.fail_next(429, times=10)
    elif fault == "refused key":
        polygon.key = "the-key-polygon-knows"  # the canary is now the wrong key, sent and refused
    elif fault == "not entitled":
        polygon.fail_next(403)
    else:  # a proxy quoting the request back
        polygon.fail_next(400, f"bad request with Authorization: Bearer {CANARY}")
    with pytest.raises(SpartanError) as caught:
        fetch()

    fix = {"rate limit": "HTTP 429", "refused key": "check POLYGON_API_KEY", "not entitled": "HTTP 403, NOT_AUTHORIZED",
           "key echoed": "ERROR: bad request with Authorization: Bearer ***"}
    assert "AAPL" in str(caught.value) and fix[fault] in str(caught.value)
    assert CANARY not in messages(caught.value)
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # debug logging was on
    logged = "\n".join(f"{r.getMessage()} {r.args} {r.exc_text or ''}" for r in caplog.records)
    assert CANARY not in logged and CANARY not in caplog.text
    out, err = capsys.readouterr()
    assert CANARY not in out + err


def test_load_prices_from_polygon_is_validated_and_snapshotted(polygon, tmp_path):
    """Through the workspace's entry point: New York sessions, validated, written with provenance."""
    prices = load_prices(source="polygon", symbols=["AAPL", "SPLT"], start="2024-03-05", end="2024-03-13",
                         snapshot_dir=tmp_path, calendar="XNYS", now=dt.datetime(2024, 4, 2, tzinfo=dt.timezone.utc))

    pd.testing.assert_frame_equal(prices, expected(["AAPL", "SPLT"]))
    record = prices.attrs["provenance"]
    assert record["source"] == "polygon" and "polygon-api-client" in record["versions"]
    assert CANARY not in Path(record["snapshot"]).with_suffix(".json").read_text()
    with pytest.raises(DataValidationError, match=r"^polygon returned no prices for NOPE"):
        load_prices(source="polygon", symbols=["AAPL", "NOPE"], start="2024-03-05", end="2024-03-13",
                    snapshot_dir=tmp_path / "other", calendar="XNYS", now=dt.datetime(2024, 4, 2, tzinfo=dt.timezone.utc))


# ---------------------------------------------------------------------------------------
# from_polygon, offline
# ---------------------------------------------------------------------------------------

def agg(session_utc: str, close: float) -> Agg:
    """An aggregate stamped at ``session_utc`` (an ISO UTC instant)."""
    stamp = int(pd.Timestamp(session_utc).timestamp() * 1000)
    return Agg(open=close, high=close + 1, low=close - 1, close=close, volume=10.0, timestamp=stamp)


def test_timestamps_become_new_york_session_dates_across_daylight_saving():
    prices = from_polygon({"AAA": [agg("2024-03-08T05:00:00Z", 1.0), agg("2024-03-11T04:00:00Z", 2.0)]}, ["AAA"])
    assert list(prices.index) == [pd.Timestamp("2024-03-08"), pd.Timestamp("2024-03-11")]


def test_empty_answers_give_all_nan_columns_in_the_requested_order():
    prices = from_polygon({}, ["BBB", "AAA"])
    assert prices.empty and list(prices["close"].columns) == ["BBB", "AAA"]
    partial = from_polygon({"AAA": [agg("2024-03-08T05:00:00Z", 1.0)], "BBB": []}, ["BBB", "AAA"])
    assert partial["close"]["BBB"].isna().all() and partial["close"]["AAA"].tolist() == [1.0]


def test_unsorted_and_repeated_bars_give_one_sorted_row_per_session():
    """A bar received twice (same stamp, same values: e.g. a page replayed) is kept once."""
    items = [agg("2024-03-11T04:00:00Z", 2.0), agg("2024-03-08T05:00:00Z", 1.0), agg("2024-03-11T04:00:00Z", 2.0)]
    prices = from_polygon({"AAA": items}, ["AAA"])
    assert prices["close"]["AAA"].to_dict() == {pd.Timestamp("2024-03-08"): 1.0, pd.Timestamp("2024-03-11"): 2.0}


def test_two_different_bars_for_one_session_are_refused_by_name():
    """There is no right one to keep: the refusal names the symbol and the date."""
    items = [agg("2024-03-08T05:00:00Z", 1.0), agg("2024-03-08T05:00:00Z", 1.5)]
    with pytest.raises(DataValidationError, match=r"^polygon returned 2 different bars for AAA on 2024-03-08"):
        from_polygon({"AAA": items}, ["AAA"])


@pytest.mark.parametrize("page", [1, 2])
def test_a_page_that_is_not_json_refuses_the_load_rather_than_cutting_the_history_short(polygon, page, capsys):
    polygon.garbled_pages = {page}  # the client logs the decoding error and stops reading: it raises nothing
    with pytest.raises(SpartanError, match=r"Polygon sent a page of the daily aggregates for AAPL that could not be "
                                           r"read .*nothing was loaded: retry later"):
        fetch(["AAPL"])
    capsys.readouterr()


def test_a_next_url_carrying_the_key_leaves_it_in_no_log_record(polygon, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    polygon.key_in_next_url = True
    prices, _ = fetch(["AAPL"])
    assert len(prices) == len(SESSIONS)
    wire = [r for r in caplog.records if r.name.startswith("urllib3")]
    assert any("cursor=" in r.getMessage() for r in wire), "urllib3 logged the pages it fetched"
    output = capsys.readouterr()
    for text in (caplog.text, output.out, output.err):
        assert CANARY not in text and "canary-polygon-" not in text


def test_results_that_are_not_a_list_are_refused_naming_the_ticker(polygon, monkeypatch):
    answer = polygon._answer
    monkeypatch.setattr(polygon, "_answer", lambda request: (200, {**answer(request)[1], "results": None}))
    with pytest.raises(SpartanError, match=r"Polygon answered the daily aggregates for AAPL with results that are "
                                           r"not a list of bars"):
        fetch(["AAPL"])


def test_polygons_crypto_bars_are_dated_by_their_utc_day():
    stamp = int(pd.Timestamp("2024-03-02 00:00", tz="UTC").timestamp() * 1000)  # 19:00 New York on 03-01
    bar = Agg(open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0, timestamp=stamp)
    frame = from_polygon({"X:BTCUSD": [bar], "AAPL": []}, ["X:BTCUSD", "AAPL"])
    assert list(frame.index) == [pd.Timestamp("2024-03-02")]


def test_a_start_after_the_end_is_refused_before_asking(polygon, tmp_path):
    with pytest.raises(DataValidationError, match=r"data.start 2024-03-13 is after data.end 2024-03-05; swap them"):
        load_prices("polygon", ["AAPL"], "2024-03-13", "2024-03-05", snapshot_dir=tmp_path)
    assert polygon.requests == []


def test_a_fetch_watches_only_its_own_thread(caplog):
    """A client error logged by another thread's fetch neither refuses this one nor is rewritten."""
    import threading

    from research_lib.data._polygon import _watched

    caplog.set_level(logging.DEBUG)
    client_log, seen = logging.getLogger("RESTClient"), {}
    other = threading.Thread(target=lambda: client_log.error("Error decoding json response: Expecting value"))
    with _watched(CANARY) as errors:
        other.start()
        other.join()
        seen["other"] = list(errors)
        client_log.error("Error decoding json response: here")
        logging.getLogger("urllib3.connectionpool").debug("GET /x?apiKey=%s", "not-the-key")
    assert seen["other"] == [] and errors == ["Error decoding json response: here"]
    assert "GET /x?apiKey=not-the-key" in caplog.text  # a record without the key is left as it was

