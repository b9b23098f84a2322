"""A local stand-in for the part of Alpaca's market data REST API that alpaca-py's
``StockHistoricalDataClient.get_stock_bars`` uses, for tests that must not touch the network.

alpaca-py (0.44) builds ``url_override + "/v2" + "/stocks/bars"`` and sends::

    GET /v2/stocks/bars?symbols=MSFT,AAPL&timeframe=1Day&start=2024-03-06T00:00:00+00:00
        &end=2024-03-14T00:00:00+00:00&adjustment=all&feed=sip&limit=10000[&page_token=...]
    APCA-API-KEY-ID: <key>
    APCA-API-SECRET-KEY: <secret>

and expects ``{"bars": {"AAPL": [{"t", "o", "h", "l", "c", "v", "n", "vw"}, ...]},
"next_page_token": "..." | null}``; it follows ``next_page_token`` until it is null and
concatenates the pages per symbol. Like the real API, this server pages across symbols
(sorted by symbol, then time), treats ``start`` and ``end`` as inclusive, leaves out symbols
that have no bars, and serves at most ``page_size`` bars per page whatever ``limit`` says,
so a small ``page_size`` forces the client to paginate.

Crypto: ``CryptoHistoricalDataClient.get_crypto_bars`` builds ``url_override + "/v1beta3" +
"/crypto/us/bars"`` and sends ``symbols=BTC/USD,ETH/USD&timeframe=1Day&start=...&end=...&limit=10000
[&page_token=...]``, with the two key headers only when it was given keys (crypto data needs none).
The answer and the paging are the stocks' (``{"bars": {"BTC/USD": [...]}, "next_page_token"}``);
this server serves ``crypto`` (pair -> ``crypto_bar`` dicts) there, accepts requests without keys
and refuses wrong ones.

Every request is recorded in ``server.requests``; ``server.fail_next(status)`` makes the
next request(s) fail with that HTTP status (e.g. 429, 403) before any other check.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.servers._local import LocalHTTPServer
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
BARS_PATH = "/v2/stocks/bars"
NEWS_PATH = "/v1beta1/news"
CRYPTO_BARS_PATH = "/v1beta3/crypto/us/bars"


def daily_bar(session: str, open: float, high: float, low: float, close: float, volume: float) -> dict:
    """One daily bar as Alpaca sends it: ``t`` is midnight New York time of the session, in UTC
    (``...T05:00:00Z`` in winter, ``...T04:00:00Z`` in summer)."""
    midnight = dt.datetime.fromisoformat(session).replace(tzinfo=NEW_YORK)
    stamp = midnight.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"t": stamp, "o": open, "h": high, "l": low, "c": close, "v": volume,
            "n": 1000, "vw": round((high + low + close) / 3, 4)}


def crypto_bar(day: str, open: float, high: float, low: float, close: float, volume: float, *,
               stamp: str | None = None) -> dict:
    """One daily crypto bar as Alpaca sends it: ``t`` is the start of the UTC day (``...T00:00:00Z``);
    ``stamp`` overrides it (e.g. the former Chicago-midnight ``...T06:00:00Z``)."""
    return {"t": stamp or f"{day}T00:00:00Z", "o": open, "h": high, "l": low, "c": close, "v": volume,
            "n": 100, "vw": round((high + low + close) / 3, 4)}


@dataclass
class RecordedRequest:
    """One request as the server saw it (query values are the raw strings) and its answer."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    status: int | None = None
    response: dict | None = None


class AlpacaDataServer(LocalHTTPServer):
    """Serve ``bars`` (symbol -> list of ``daily_bar`` dicts) on 127.0.0.1, in a background thread.

    Use as a context manager; ``url`` is the value for ``APCA_API_DATA_URL``.
    """

    def __init__(self, bars: dict[str, list[dict]] | None = None, *, key: str = "test-key-id",
                 secret: str = "test-secret-key", page_size: int = 10_000, news: list[dict] | None = None,
                 crypto: dict[str, list[dict]] | None = None) -> None:
        self.bars = dict(bars or {})
        self.crypto = dict(crypto or {})  # pair -> crypto_bar dicts
        self.news = list(news or [])  # items shaped like news_item(...)
        self.key, self.secret, self.page_size = key, secret, page_size
        self.requests: list[RecordedRequest] = []
        self._faults: collections.deque[tuple[int, str]] = collections.deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.root_url

    def fail_next(self, status: int, message: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` and ``{"message": message}``."""
        text = message or {401: "unauthorized.", 403: "forbidden.", 429: "too many requests."}.get(status, "error")
        with self._lock:
            self._faults.extend([(status, text)] * times)

    def start(self) -> AlpacaDataServer:
        server = self

        class Handler(_Handler):
            owner = server

        return self._serve(Handler, "alpaca-data-server")

    # -- protocol -----------------------------------------------------------------------
    def _answer(self, request: RecordedRequest) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(request)
            fault = self._faults.popleft() if self._faults else None
        if fault:
            return fault[0], {"message": fault[1]}
        if request.method != "GET" or request.path not in (BARS_PATH, NEWS_PATH, CRYPTO_BARS_PATH):
            return 404, {"message": "Not Found"}
        headers = {k.lower(): v for k, v in request.headers.items()}
        sent = (headers.get("apca-api-key-id"), headers.get("apca-api-secret-key"))
        anonymous = request.path == CRYPTO_BARS_PATH and sent == (None, None)  # crypto data needs no keys
        if not anonymous and sent != (self.key, self.secret):
            return 401, {"message": "unauthorized."}
        query = request.query
        if request.path == NEWS_PATH:
            return self._news(query)
        return self._bars(query, self.crypto if request.path == CRYPTO_BARS_PATH else self.bars)

    def _bars(self, query: dict, served: dict[str, list[dict]]) -> tuple[int, dict]:
        """Stock or crypto bars: the same query, answer and paging."""
        symbols = [s for s in query.get("symbols", "").split(",") if s]
        if not symbols:
            return 400, {"message": "missing symbols"}
        if query.get("timeframe") != "1Day":
            return 422, {"message": f"this test server only serves timeframe=1Day, not {query.get('timeframe')!r}"}
        try:
            start = _instant(query.get("start"), dt.datetime.min)
            end = _instant(query.get("end"), dt.datetime.max)
            offset = _offset(query.get("page_token"))
        except ValueError as err:
            return 400, {"message": str(err)}
        items = [(symbol, bar) for symbol in sorted(set(symbols)) for bar in served.get(symbol, [])
                 if start <= _instant(bar["t"], None) <= end]
        size = min(int(query.get("limit") or 1000), self.page_size)
        page = items[offset : offset + size]
        grouped: dict[str, list[dict]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(bar)
        more = offset + size < len(items)
        return 200, {"bars": grouped, "next_page_token": _token(offset + size) if more else None}


    def _news(self, query: dict) -> tuple[int, dict]:
        """``GET /v1beta1/news``: items mentioning any requested symbol, created in [start, end], paged."""
        wanted = {s for s in query.get("symbols", "").split(",") if s}
        start = _instant(query.get("start"), dt.datetime.min)
        end = _instant(query.get("end"), dt.datetime.max)
        items = [n for n in self.news if (not wanted or wanted & set(n["symbols"]))
                 and start <= _instant(n["created_at"], None) <= end]
        items.sort(key=lambda n: n["created_at"], reverse=query.get("sort") != "asc")
        offset, size = _offset(query.get("page_token")), int(query.get("limit") or 50)
        more = offset + size < len(items)
        return 200, {"news": items[offset: offset + size], "next_page_token": _token(offset + size) if more else None}


def news_item(item_id: int, created_at: str, symbols: list[str], headline: str) -> dict:
    """A news article as Alpaca's news API returns it (``created_at`` in RFC 3339, UTC)."""
    return {"id": item_id, "headline": headline, "source": "benzinga", "url": None, "summary": "", "content": "",
            "author": "test", "created_at": created_at, "updated_at": created_at, "symbols": symbols, "images": []}


class _Handler(BaseHTTPRequestHandler):
    owner: AlpacaDataServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        request = RecordedRequest(self.command, parts.path, query, dict(self.headers.items()))
        status, body = self.owner._answer(request)
        request.status, request.response = status, body
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()  # a str: sent as it is
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args) -> None:  # keep pytest output clean
        pass


def _instant(text: str | None, default):
    if not text:
        return default.replace(tzinfo=dt.timezone.utc)
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, value = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        if kind == "offset":
            return int(value)
    except ValueError:
        pass
    raise ValueError(f"invalid page_token {token!r}")
