"""Polygon.io daily bars through the official client (``polygon-api-client``, ``from polygon import RESTClient``).

Conventions
-----------
- One request per ticker: ``GET /v2/aggs/ticker/{ticker}/range/1/day/{start}/{end}?adjusted=true``,
  both dates inclusive; the client follows ``next_url`` until the last page.
- ``adjusted=true`` adjusts for **splits only**: Polygon does not adjust aggregates for dividends, so
  the closes are split-adjusted price closes and returns computed from them leave dividends out.
- A daily bar's ``t`` is the start of its session in New York time (midnight ET, in ms since the
  epoch: ``...05:00Z`` in winter, ``...04:00Z`` in summer); the row is that exchange-local session date.
- An unknown ticker is an empty answer (``resultsCount: 0``, no ``results``); it is kept as an
  all-NaN column so that validation names it.
- The key is read from ``POLYGON_API_KEY`` only and is sent by the client as an
  ``Authorization: Bearer`` header; no message raised here contains it.
- Retries: the client's urllib3 ``Retry`` retries 413/429/499/5xx ``POLYGON_RETRIES`` times with a
  backoff of 0, 0.2, 0.4 s (factor 0.1, not settable), or the server's ``Retry-After`` when it sends one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import threading
from urllib.parse import quote, quote_plus

import pandas as pd

from research_lib.data._frame import FIELDS, bars_frame
from research_lib.errors import SpartanError

POLYGON_KEY_ENV = "POLYGON_API_KEY"
POLYGON_URL_ENV = "POLYGON_API_URL"  # e.g. a self-hosted proxy, or the local server of the tests
POLYGON_URL = "https://api.polygon.io"
POLYGON_RETRIES = 3
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 10.0, 30.0
DEFAULT_START = dt.date(2016, 1, 1)  # Polygon needs a start; the history a plan holds varies
NEW_YORK = "America/New_York"


def fetch_polygon(symbols: list[str], start: dt.date | None, end: dt.date | None) -> tuple[pd.DataFrame, None]:
    """Daily split-adjusted bars of ``symbols`` from ``start`` to ``end`` (inclusive) from Polygon.io.

    Returns ``(prices, None)``: a canonical frame (not yet validated); ``None`` splits, Polygon
    has adjusted for them.

    Raises
    ------
    SpartanError
        without ``POLYGON_API_KEY``, or when Polygon refuses a request (naming the ticker and the fix).
    """
    from polygon import RESTClient

    key = os.environ.get(POLYGON_KEY_ENV)
    if not key:
        raise SpartanError(
            f"data.source 'polygon' needs {POLYGON_KEY_ENV} in the environment (or in a git-ignored .env file at "
            "the workspace root); or use data.source: bundled offline."
        )
    base = os.environ.get(POLYGON_URL_ENV, "").rstrip("/") or POLYGON_URL
    client = RESTClient(api_key=key, base=base, retries=POLYGON_RETRIES,
                        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S)
    first = start or DEFAULT_START
    last = end or pd.Timestamp.now(tz=NEW_YORK).date()
    aggs = {ticker: _daily_aggs(client, ticker, first, last, key, base) for ticker in symbols}
    return from_polygon(aggs, symbols), None


def from_polygon(aggs_by_symbol: dict[str, list], symbols: list[str]) -> pd.DataFrame:
    """Convert Polygon daily aggregates (``polygon.rest.models.Agg``, per ticker) to a canonical frame.

    Rows are New York session dates (UTC days for Polygon's crypto ``X:`` and forex ``C:`` tickers,
    whose daily bars start at midnight UTC), in order whatever the order received; a symbol without
    aggregates is an all-NaN column; a missing value (``None``) is NaN. The same bar received twice
    (same timestamp, same values) is kept once; two different bars for one session are refused.
    """
    rows = [{"symbol": symbol, "t": agg.timestamp, **{f: getattr(agg, f) for f in FIELDS}}
            for symbol, items in aggs_by_symbol.items() for agg in items]
    table = pd.DataFrame(rows, columns=["symbol", "t", *FIELDS])
    stamps = pd.to_datetime(table["t"], unit="ms", utc=True)
    utc_day = table["symbol"].str.startswith(("X:", "C:"))  # Polygon's crypto and forex: UTC days
    local = stamps.dt.tz_convert(NEW_YORK).dt.tz_localize(None).dt.normalize()
    table["date"] = local.where(~utc_day, stamps.dt.tz_localize(None).dt.normalize())
    return bars_frame(table.drop(columns="t"), symbols, "polygon")


def _daily_aggs(client, ticker: str, first: dt.date, last: dt.date, key: str, base: str) -> list:
    """Every page of ``ticker``'s adjusted daily aggregates, or a SpartanError saying why not.

    The client stops reading pages at one that is not JSON, logging an error rather than raising:
    that would cut the history short, so such a log record refuses the load."""
    from polygon.exceptions import AuthError, BadResponse
    from urllib3.exceptions import HTTPError

    with _watched(key) as errors:
        try:
            aggs = list(client.list_aggs(ticker, 1, "day", first.isoformat(), last.isoformat(),
                                         adjusted=True, sort="asc", limit=50_000))
        except (BadResponse, AuthError, HTTPError) as err:
            refusal = _refusal(ticker, err, key, base)
        except TypeError:  # "results": null, or a result that is not a list of bars
            refusal = (f"Polygon answered the daily aggregates for {ticker} with results that are not a list of "
                       "bars; retry later, and report it to Polygon if it persists.")
        else:
            if not errors:
                return aggs
            refusal = _scrub(f"Polygon sent a page of the daily aggregates for {ticker} that could not be read "
                             f"({errors[0]}); the history would stop there, so nothing was loaded: retry later.", key)
    raise SpartanError(refusal)  # raised outside the handler: no chained error, which may quote the key


@contextlib.contextmanager
def _watched(key: str):
    """The client's error log records while the block runs (their messages, in a list), and urllib3's
    log records holding the key (as written, or URL-encoded) with it replaced by ``***``: of this
    thread only (the client runs in it), so a fetch in another thread is neither refused nor rewritten."""
    errors: list[str] = []
    here = threading.get_ident()
    secrets = {key, quote(key, safe=""), quote_plus(key)} - {""}

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR and record.thread == here:
                errors.append(record.getMessage())

    class Redact(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            text = record.getMessage() if record.thread == here else ""
            if any(secret in text for secret in secrets):
                for secret in secrets:
                    text = text.replace(secret, "***")
                record.msg, record.args = text, ()
            return True

    client_log, handler, redact = logging.getLogger("RESTClient"), Collect(), Redact()
    wire_logs = [logging.getLogger(name) for name in ("urllib3.connectionpool", "urllib3.util.retry")]
    client_log.addHandler(handler)
    for log in wire_logs:
        log.addFilter(redact)
    try:
        yield errors
    finally:
        client_log.removeHandler(handler)
        for log in wire_logs:
            log.removeFilter(redact)


def _refusal(ticker: str, err: Exception, key: str, base: str) -> str:
    """What went wrong for ``ticker`` and the fix, without the key."""
    text = str(err)
    status = re.search(r"too many (\d{3}) error responses", text)
    if status:  # urllib3 gave up retrying
        code = int(status.group(1))
        fix = ("wait a minute and retry, or upgrade the plan's request rate at https://polygon.io/pricing"
               if code == 429 else "Polygon is failing: retry later")
        detail = f"HTTP {code} after {POLYGON_RETRIES} retries"
    elif type(err).__module__.startswith("urllib3"):
        detail, fix = f"could not reach {base}: {type(err).__name__}", f"check the network, or {POLYGON_URL_ENV}"
    else:
        detail, fix = _answer(text)
    return _scrub(f"Polygon refused the daily aggregates for {ticker} ({detail}); {fix}.", key)


def _answer(body: str) -> tuple[str, str]:
    """Polygon's error body (``{"status", "error" | "message", "request_id"}``) -> (detail, fix)."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    message = str(answer.get("error") or answer.get("message") or body.strip()[:200])
    detail = f"{answer.get('status', 'error')}: {message}"
    if "api key" in message.lower() or answer.get("status") == "AUTH_ERROR":
        return f"HTTP 401, {detail}", f"check {POLYGON_KEY_ENV} (or the .env file at the workspace root)"
    if answer.get("status") == "NOT_AUTHORIZED":
        return f"HTTP 403, {detail}", "your Polygon plan does not cover this data: check the plan or data.start"
    if "exceeded the maximum requests" in message:
        return f"HTTP 429, {detail}", "wait a minute and retry, or upgrade the plan's request rate"
    return detail, f"check the ticker and dates, or {POLYGON_URL_ENV} if set"


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text
