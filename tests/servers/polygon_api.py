"""A local stand-in for Polygon.io's aggregates endpoint, as ``polygon-api-client`` (1.16) uses it.

``RESTClient(api_key, base=url).list_aggs(ticker, 1, "day", from_, to, adjusted=True, sort="asc",
limit=50000)`` sends::

    GET /v2/aggs/ticker/AAPL/range/1/day/2024-03-04/2024-03-15?adjusted=true&sort=asc&limit=50000
    Authorization: Bearer <key>

and reads ``{"ticker", "queryCount", "resultsCount", "adjusted", "results": [{"v", "vw", "o", "c",
"h", "l", "t", "n"}], "status": "OK", "request_id", "count", "next_url"}``. Like the real API,
``from``/``to`` are dates (inclusive) or ms timestamps; ``t`` is the start of the session in New
York time, in ms; an unknown ticker answers ``resultsCount: 0`` without ``results``. When rows
remain after a page, ``next_url`` points back here with the path's ``from`` moved to the next
row and the query reduced to an opaque ``cursor`` (base64 of ``adjusted``, ``limit`` and ``sort``,
as Polygon's cursors are); the client follows it with no other parameter. ``adjusted=false``
serves the ``unadjusted`` bars where given. A missing or wrong key answers 401 with Polygon's
body. ``fail_next(429)`` answers the next requests with Polygon's rate-limit body (no
``Retry-After``, so the client backs off 0, 0.2, 0.4 s). Requests are in ``server.requests``.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import re
import threading
import uuid
from urllib.parse import parse_qsl, urlencode

from tests.servers._local import LocalHTTPServer
from tests.servers.alpaca_data import RecordedRequest, _Handler
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
AGGS_PATH = re.compile(r"^/v2/aggs/ticker/(?P<ticker>[^/]+)/range/(?P<multiplier>\d+)/(?P<timespan>[a-z]+)"
                       r"/(?P<start>[^/]+)/(?P<end>[^/]+)$")
MESSAGES = {
    401: "Unknown API Key",
    403: "You are not entitled to this data. Please upgrade your plan at https://polygon.io/pricing",
    429: "You've exceeded the maximum requests per minute, please wait or upgrade your subscription to continue. "
         "https://polygon.io/pricing",
}


def daily_agg(session: str, open: float, high: float, low: float, close: float, volume: float) -> dict:
    """One daily aggregate as Polygon sends it: ``t`` is midnight New York time of the session, in ms."""
    midnight = dt.datetime.fromisoformat(session).replace(tzinfo=NEW_YORK)
    return {"v": volume, "vw": round((high + low + close) / 3, 4), "o": open, "c": close, "h": high, "l": low,
            "t": int(midnight.timestamp() * 1000), "n": 1000}


class PolygonServer(LocalHTTPServer):
    """Serve ``aggs`` (ticker -> ``daily_agg`` dicts, adjusted) on 127.0.0.1; ``unadjusted`` (ticker ->
    dicts) is what ``adjusted=false`` gets for the tickers it holds. ``url`` is the value for
    ``POLYGON_API_URL``; at most ``page_size`` rows per page, whatever ``limit`` says."""

    def __init__(self, aggs: dict[str, list[dict]] | None = None, *, unadjusted: dict[str, list[dict]] | None = None,
                 key: str = "test-polygon-key", page_size: int = 50_000) -> None:
        self.aggs, self.unadjusted = dict(aggs or {}), dict(unadjusted or {})
        self.key, self.page_size = key, page_size
        self.garbled_pages: set[int] = set()  # pages (1 = a request's first) answered 200 with a body that is not JSON
        self.key_in_next_url = False  # a next_url carrying the key as apiKey (a proxy's habit)
        self.requests: list[RecordedRequest] = []
        self._faults: collections.deque[tuple[int, str]] = collections.deque()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.root_url

    def fail_next(self, status: int, message: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` and Polygon's error body."""
        with self._lock:
            self._faults.extend([(status, message or MESSAGES.get(status, "error"))] * times)

    def start(self) -> PolygonServer:
        server = self

        class Handler(_Handler):
            owner = server

        return self._serve(Handler, "polygon-server")

    # -- protocol -----------------------------------------------------------------------
    def _answer(self, request: RecordedRequest) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(request)
            fault = self._faults.popleft() if self._faults else None
        request_id = uuid.uuid4().hex
        if fault:  # Polygon's 403 says NOT_AUTHORIZED in "message"; its other errors say ERROR in "error"
            entitled = fault[0] == 403
            return fault[0], {"status": "NOT_AUTHORIZED" if entitled else "ERROR", "request_id": request_id,
                              "message" if entitled else "error": fault[1]}
        headers = {k.lower(): v for k, v in request.headers.items()}
        given = headers.get("authorization", "").removeprefix("Bearer ") or request.query.get("apiKey")
        if not given:
            return 401, {"status": "ERROR", "request_id": request_id, "error": "API Key was not provided"}
        if given != self.key:
            return 401, {"status": "ERROR", "request_id": request_id, "error": MESSAGES[401]}
        route = AGGS_PATH.match(request.path)
        if request.method != "GET" or not route:
            return 404, {"status": "NOT_FOUND", "request_id": request_id, "message": "Not found"}
        if (route["multiplier"], route["timespan"]) != ("1", "day"):
            return 400, {"status": "ERROR", "request_id": request_id, "error": "this test server serves 1/day only"}
        query = dict(request.query)
        if "cursor" in query:
            cursor = query.pop("cursor")
            query.update(parse_qsl(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()))
        adjusted = query.get("adjusted", "true") != "false"
        ascending = query.get("sort", "asc") != "desc"
        size = min(int(query.get("limit") or 5000), 50_000, self.page_size)
        try:
            first, last = _ms(route["start"], end=False), _ms(route["end"], end=True)
        except ValueError as err:
            return 400, {"status": "ERROR", "request_id": request_id, "error": str(err)}
        ticker = route["ticker"]
        served = (self.unadjusted if not adjusted and ticker in self.unadjusted else self.aggs).get(ticker, [])
        rows = sorted((a for a in served if first <= a["t"] <= last), key=lambda a: a["t"], reverse=not ascending)
        page = rows[:size]
        page_number = 1 + sum(1 for r in self.requests if "cursor" in r.query)  # this one included
        if page_number in self.garbled_pages:
            return 200, "<html><body>502 Bad Gateway</body></html>"
        body = {"ticker": ticker, "queryCount": len(page), "resultsCount": len(page), "adjusted": adjusted,
                "status": "OK", "request_id": request_id, "count": len(page)}
        if page:
            body["results"] = page
        if len(rows) > size:
            cursor = base64.urlsafe_b64encode(urlencode({"adjusted": str(adjusted).lower(), "limit": query.get(
                "limit") or 5000, "sort": "asc" if ascending else "desc"}).encode()).decode().rstrip("=")
            start, end = (rows[size]["t"], route["end"]) if ascending else (route["start"], rows[size]["t"])
            body["next_url"] = f"{self.url}/v2/aggs/ticker/{ticker}/range/1/day/{start}/{end}?cursor={cursor}"
            if self.key_in_next_url:
                body["next_url"] += "&" + urlencode({"apiKey": self.key})
        return 200, body


def _ms(text: str, *, end: bool) -> int:
    """A path's ``from``/``to``: ms since the epoch, or a date meaning its whole New York day (inclusive)."""
    if text.isdigit():
        return int(text)
    day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end else 0)
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=NEW_YORK)
    return int(midnight.timestamp() * 1000) - (1 if end else 0)
