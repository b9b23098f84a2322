"""A local stand-in for the part of Alpaca's Trading REST API v2 that alpaca-py's ``TradingClient``
uses, so that tests drive the real client (retries, errors, idempotency) without the network.

What alpaca-py 0.44 puts on the wire (read from ``alpaca/common/rest.py`` and
``alpaca/trading/client.py``)
------------------------------------------------------------------------------------------------
``TradingClient(key, secret, paper=True, url_override=server.url)`` sends every request to
``url_override + "/v2" + path`` with the headers ``APCA-API-KEY-ID``, ``APCA-API-SECRET-KEY`` and
``User-Agent: APCA-PY/<version> ...``. GET and DELETE carry their arguments as query parameters,
POST as a JSON body::

    get_account()                 GET    /v2/account                  -> TradeAccount
    get_clock()                   GET    /v2/clock                    -> Clock
    submit_order(request)         POST   /v2/orders                   -> Order
        body = request.to_request_fields(): unset fields are left out, numbers stay JSON numbers,
        e.g. {"symbol": "AAPL", "qty": 10.0, "side": "buy", "type": "market",
              "time_in_force": "day", "client_order_id": "..."} (+ "limit_price": 180.5, "notional")
    get_orders(GetOrdersRequest)  GET    /v2/orders?status=open|closed|all&limit=&after=&until=
                                         &direction=asc|desc&nested=True&side=&symbols=AAPL,MSFT
    get_order_by_id(id)           GET    /v2/orders/{id}   (a non-UUID id is a ValueError before any request)
    get_order_by_client_id(coid)  GET    /v2/orders:by_client_order_id?client_order_id=...
    cancel_order_by_id(id)        DELETE /v2/orders/{id}   -> 204 without a body; returns None
    cancel_orders()               DELETE /v2/orders        -> 207 [{"id", "status", "body"}]
    get_all_positions()           GET    /v2/positions     -> [Position]
    get_open_position(symbol)     GET    /v2/positions/{symbol or asset_id}
    close_position(symbol, req)   DELETE /v2/positions/{symbol}?qty=|percentage= -> Order

Responses are parsed into pydantic models that ignore unknown fields. Money and quantities are
strings (``"cash": "100000"``, ``"qty": "10"``), ids are UUIDs, times RFC 3339.

Errors, retries and timeouts (the trading code relies on these)
---------------------------------------------------------------
* Every non-2xx answer raises ``alpaca.common.exceptions.APIError(response.text, http_error)``:
  ``err.status_code`` is the HTTP status; ``err.code`` and ``err.message`` ``json.loads`` the body,
  so a non-JSON body (a gateway's HTML 504, say) makes them raise ``JSONDecodeError`` while
  ``str(err)`` is still the raw text. This server answers errors as Alpaca does,
  ``{"code": <8 digits>, "message": ...}``:

  - 401 ``40110000 "request is not authorized"`` (missing or wrong key pair);
  - 422 ``40010001 "client_order_id must be unique"`` (over the account's whole history,
    canceled and filled orders included);
  - 422 ``40010001 "client_order_id must be no more than 48 characters"``;
  - 422 ``40010001`` for a bad quantity (``"qty must be > 0"``, ``"invalid qty: ..."``) and other
    invalid fields;
  - 403 ``40310000 "insufficient buying power"`` with ``buying_power`` and ``cost_basis``; a sell
    beyond the position less what open sells hold: 403 ``40310000 "insufficient qty available for
    order (requested: q, available: a)"`` (a cash account: no shorting);
  - 404 ``40410000 "order not found"`` / ``"position does not exist"``;
  - 422 ``42210000 'order is already in "filled" state'`` when cancelling a closed order.

  The codes and messages above are Alpaca's as quoted in alpaca-py's issue tracker; the messages of
  rarer rejections (unknown symbol, unsupported order types) are this server's own wording. An
  injected fault without a body gets ``{"code": status * 100000 + 10000, "message": <reason>}``
  (429: ``42910000 "rate limit exceeded"``, the code being this server's guess).
* Retries: ``RESTClient._request`` retries ONLY statuses in ``client._retry_codes`` (default
  ``[429, 504]``), ``client._retry`` more times (default 3, so up to 4 attempts), sleeping
  ``client._retry_wait`` seconds (default 3) before each retry: a persistent 429 costs at least
  9 s before the final ``APIError``. The retry resends the same request, so a POST answered 504
  after the order was accepted is retried and then rejected as a duplicate client_order_id
  (without a client_order_id it would become a second order). ``TradingClient.__init__`` does not
  forward ``RESTClient``'s ``retry_attempts`` / ``retry_wait_seconds`` arguments and alpaca-py reads
  no environment variables (``APCA_RETRY_MAX`` / ``APCA_RETRY_WAIT`` belong to the older
  ``alpaca-trade-api`` package): set the private attributes after construction instead
  (``client._retry = 0`` disables retries; ``_retry_wait`` may be a float).
* Timeouts: alpaca-py calls ``client._session.request(...)`` (a ``requests.Session``) with NO
  timeout, so a stalled connection blocks forever. Give the session one, e.g. mount a
  ``requests.adapters.HTTPAdapter`` subclass whose ``send`` fills in a default ``timeout`` on
  ``client._session`` for ``http://`` and ``https://``. A timeout surfaces as
  ``requests.exceptions.ReadTimeout`` (a dropped connection as ``requests.exceptions.ConnectionError``),
  neither wrapped in ``APIError`` nor retried by alpaca-py or by requests (``max_retries=0``).
  Worst case for one call: ``(_retry + 1) * timeout + _retry * _retry_wait``.

The server's model
------------------
One cash account (``multiplier`` "1", no shorting, ``fee_bps`` charged on each fill, none by
default). The tradable symbols are those with a price (``prices=`` or ``set_prices``); prices also
mark positions to market. ``buying_power`` is cash less what open buy orders hold (remaining
quantity times the limit price, or times the price at submission for a market order, or the
notional). Arithmetic is exact (``Decimal``). Accepted orders are ``"new"`` while the market is
open and ``"accepted"`` while it is closed; nothing fills until the test says so
(``fill_open_orders``, ``fill_order``), unless ``fill_on_submit=True``, which fills marketable
orders at the current price while the market is open. Only simple market and limit orders,
``day`` or ``gtc``, are accepted; fractional quantities and notional amounts only for market day
orders. Crypto pairs (a symbol with a slash, ``BTC/USD``) follow Alpaca's crypto rules: ``gtc`` or
``ioc`` only, fractional quantities for market and limit orders, no shorting, trading at any hour
(``new`` and, with ``fill_on_submit``, filled whatever the stock market's clock says); their
positions come back as Alpaca lists them, without the slash (``BTCUSD``, ``asset_class: crypto``).
``GET /v2/assets/{symbol}`` (``BTCUSD`` or ``BTC/USD``) answers a pair's record with its
``min_order_size``, ``min_trade_increment`` and ``price_increment`` (``pair_rules``; default
0.0001, 0.0001 and 0.01), which a crypto order must respect (422 otherwise). The clock (default Wednesday 2024-03-13 10:00 New York) moves only by ``set_time``; it is
open 9:30-16:00 New York on weekdays (no holidays) unless ``set_market_open`` overrides it. Day
orders expire only when the test calls ``expire_day_orders``.

Test hooks (thread-safe): ``fail_next(status, times, body, after_processing)``,
``timeout_after_accept_next(how, delay_s)``, ``rate_limit(per_minute)``; every request is in
``server.requests`` (the secret header recorded as ``"<redacted>"``; the secret is never echoed).
"""

from __future__ import annotations

import collections
import datetime as dt
import http
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from tests.servers._local import LocalHTTPServer

from tests.servers import alpaca_data
from tests.servers.alpaca_data import NEW_YORK

ORDERS_PATH = "/v2/orders"
BY_CLIENT_ORDER_ID_PATH = "/v2/orders:by_client_order_id"
POSITIONS_PATH = "/v2/positions"
ASSETS_PATH = "/v2/assets/"
MAX_CLIENT_ORDER_ID_CHARS = 48
DEFAULT_NOW = dt.datetime(2024, 3, 13, 10, 0, tzinfo=NEW_YORK)
SESSION_HOURS = (dt.time(9, 30), dt.time(16, 0))  # New York, Monday to Friday
OPEN_STATUSES = frozenset({"new", "accepted", "partially_filled"})
REDACTED = "<redacted>"
_ORDER_ID = re.compile(r"^/v2/orders/([^/:]+)$")
_POSITION = re.compile(r"^/v2/positions/([^/]+)$")
_SHARE_STEP = Decimal("1e-9")  # Alpaca's quantity precision


@dataclass
class RecordedRequest(alpaca_data.RecordedRequest):
    """``alpaca_data.RecordedRequest`` plus the parsed JSON ``body`` and the injected ``fault``
    (``"injected"``, ``"delayed"`` or ``"dropped"``), if any."""

    body: object = None
    fault: str | None = None


class _Rejected(Exception):
    """An Alpaca error answer: ``status`` and ``{"code", "message", **extra}``."""

    def __init__(self, status: int, code: int, message: str, **extra) -> None:
        super().__init__(message)
        self.status, self.body = status, {"code": code, "message": message, **extra}


@dataclass
class _Fault:
    status: int
    body: object
    after_processing: bool


@dataclass
class _Order:
    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    reference_price: Decimal  # the price at submission: what a market buy holds
    extended_hours: bool
    submitted_at: dt.datetime
    status: str
    filled_qty: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    updated_at: dt.datetime | None = None
    filled_at: dt.datetime | None = None
    canceled_at: dt.datetime | None = None
    expired_at: dt.datetime | None = None

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    def held_cash(self) -> Decimal:
        """What this order holds of buying power while open (buys only)."""
        if not self.open or self.side != "buy":
            return Decimal(0)
        if self.notional is not None:
            return self.notional - self.filled_value
        return (self.qty - self.filled_qty) * (self.limit_price or self.reference_price)

    def held_qty(self) -> Decimal:
        """Shares this order holds of the position while open (sells only)."""
        if not self.open or self.side != "sell":
            return Decimal(0)
        if self.notional is not None:
            return (self.notional - self.filled_value) / self.reference_price
        return self.qty - self.filled_qty

    def to_json(self) -> dict:
        intent = "buy_to_open" if self.side == "buy" else "sell_to_close"
        return {
            "id": self.id, "client_order_id": self.client_order_id,
            "created_at": _stamp(self.submitted_at), "updated_at": _stamp(self.updated_at or self.submitted_at),
            "submitted_at": _stamp(self.submitted_at), "filled_at": _stamp(self.filled_at),
            "expired_at": _stamp(self.expired_at), "canceled_at": _stamp(self.canceled_at), "failed_at": None,
            "replaced_at": None, "replaced_by": None, "replaces": None, "expires_at": None,
            "asset_id": asset_id(self.symbol), "symbol": self.symbol, "asset_class": "us_equity",
            "notional": _text(self.notional), "qty": _text(self.qty), "filled_qty": _text(self.filled_qty),
            "filled_avg_price": _text(self.filled_value / self.filled_qty) if self.filled_qty else None,
            "order_class": "simple", "order_type": self.type, "type": self.type, "side": self.side,
            "position_intent": intent, "time_in_force": self.time_in_force, "limit_price": _text(self.limit_price),
            "stop_price": None, "status": self.status, "extended_hours": self.extended_hours, "legs": None,
            "trail_percent": None, "trail_price": None, "hwm": None,
        }


@dataclass
class _Position:
    qty: Decimal
    avg_entry_price: Decimal


def asset_id(symbol: str) -> str:
    """The (stable, made-up) asset id this server gives ``symbol``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-trading-test-server/{symbol}"))


class AlpacaTradingServer(LocalHTTPServer):
    """A paper account behind Alpaca's trading API on 127.0.0.1, in a background thread.

    Use as a context manager; ``url`` is the value for ``TradingClient(url_override=...)``.

    Parameters
    ----------
    key, secret : str
        The key pair requests must carry.
    cash : float
        Starting cash (USD); also the starting ``last_equity``.
    prices : dict[str, float], optional
        Price per tradable symbol (USD a share).
    now : datetime, optional
        Timezone-aware start of the server clock.
    fee_bps : float
        Fee on the value of every fill, in basis points.
    fill_on_submit : bool
        Fill marketable orders at the current price on submission while the market is open.
    """

    def __init__(self, key: str = "test-key-id", secret: str = "test-secret-key", *, cash: float = 100_000,
                 prices: dict[str, float] | None = None, now: dt.datetime | None = None, fee_bps: float = 0.0,
                 fill_on_submit: bool = False) -> None:
        self.key, self._secret = key, secret
        self.fee_bps, self.fill_on_submit = _decimal(fee_bps, "fee_bps", minimum=0), fill_on_submit
        self.pair_rules: dict[str, tuple[str, str, str]] = {}  # pair -> (min_order_size, min_trade_increment, price_increment)
        self.requests: list[RecordedRequest] = []
        self.account_id, self.account_number = str(uuid.uuid4()), "PA3TESTSERVER"
        self._lock = threading.RLock()
        self._cash = self._last_equity = _decimal(cash, "cash", minimum=0)
        self._flags = {"trading_blocked": False, "account_blocked": False, "transfers_blocked": False,
                       "pattern_day_trader": False}
        self._prices: dict[str, Decimal] = {}
        self._orders: dict[str, _Order] = {}  # by id, in submission order
        self._by_client_id: dict[str, str] = {}
        self._positions: dict[str, _Position] = {}
        self._now, self._open_override = DEFAULT_NOW, None
        self._faults: collections.deque[_Fault] = collections.deque()
        self._stall: tuple[str, float] | None = None
        self._per_minute: int | None = None
        self._hits: collections.deque[float] = collections.deque()
        self._released = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.set_prices(prices or {})
        if now is not None:
            self.set_time(now)

    def __repr__(self) -> str:  # never shows the secret
        return f"AlpacaTradingServer(key={self.key!r}, url={self.url if self._httpd else None!r})"

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.root_url

    def start(self) -> AlpacaTradingServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        return self._serve(handler, "alpaca-trading-server")

    def _before_stop(self) -> None:
        self._released.set()  # delayed answers go out now

    # -- market and account state ----------------------------------------------------------
    def set_time(self, when: dt.datetime) -> None:
        """Move the server clock to ``when`` (timezone-aware)."""
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"set_time needs a timezone-aware datetime, got {when!r}; "
                             "try when.replace(tzinfo=ZoneInfo('America/New_York'))")
        with self._lock:
            self._now = when

    def set_market_open(self, is_open: bool | None) -> None:
        """Force ``is_open`` in the clock (``None``: follow the 9:30-16:00 weekday schedule)."""
        with self._lock:
            self._open_override = is_open

    def set_prices(self, prices: dict[str, float]) -> None:
        """Set the price (USD a share) of symbols: they become tradable, positions are marked to it."""
        parsed = {symbol: _decimal(price, f"prices[{symbol!r}]") for symbol, price in prices.items()}
        with self._lock:
            self._prices.update(parsed)

    def set_account(self, *, cash: float | None = None, last_equity: float | None = None,
                    trading_blocked: bool | None = None, account_blocked: bool | None = None,
                    transfers_blocked: bool | None = None, pattern_day_trader: bool | None = None) -> None:
        """Change the account: cash (USD), last_equity (USD, yesterday's close) or its flags."""
        with self._lock:
            if cash is not None:
                self._cash = _decimal(cash, "cash", minimum=0)
            if last_equity is not None:
                self._last_equity = _decimal(last_equity, "last_equity", minimum=0)
            flags = {"trading_blocked": trading_blocked, "account_blocked": account_blocked,
                     "transfers_blocked": transfers_blocked, "pattern_day_trader": pattern_day_trader}
            self._flags.update({name: bool(value) for name, value in flags.items() if value is not None})

    @property
    def cash(self) -> Decimal:
        with self._lock:
            return self._cash

    @property
    def equity(self) -> Decimal:
        with self._lock:
            return self._cash + self._market_value()

    def positions(self) -> dict[str, Decimal]:
        """Quantity held per symbol."""
        with self._lock:
            return {symbol: position.qty for symbol, position in self._positions.items()}

    def orders(self) -> list[dict]:
        """Every order ever accepted, oldest first, as the API shows it."""
        with self._lock:
            return [order.to_json() for order in self._orders.values()]

    def calls(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests with this method and path."""
        with self._lock:
            return [r for r in self.requests if (r.method, r.path) == (method, path)]

    # -- fills -------------------------------------------------------------------------------
    def fill_open_orders(self, prices: dict[str, float] | None = None) -> list[dict]:
        """Fill every open order that is marketable at ``prices`` (after ``set_prices(prices)``;
        without prices, at the current ones): market orders, buy limits at or above the price,
        sell limits at or below it, all at that price. Returns the filled orders."""
        with self._lock:
            self.set_prices(prices or {})
            filled = [order for order in list(self._orders.values()) if self._fill_if_marketable(order)]
            return [order.to_json() for order in filled]

    def fill_order(self, order_id: str, qty: float | None, price: float) -> dict:
        """Fill ``qty`` shares (``None``: the rest) of an open order at ``price``; returns the order."""
        with self._lock:
            order = self._orders.get(str(order_id))
            if order is None:
                raise ValueError(f"fill_order: no order with id {order_id!r}; known ids: {list(self._orders)}")
            if not order.open:
                raise ValueError(f"fill_order: order {order_id} is {order.status!r}, only open orders fill")
            price = _decimal(price, "price")
            if order.notional is not None:
                if qty is not None:
                    raise ValueError("fill_order: a notional order fills whole; pass qty=None")
                self._execute(order, _shares(order.notional - order.filled_value, price), price, complete=True)
            else:
                remaining = order.qty - order.filled_qty
                qty = remaining if qty is None else _decimal(qty, "qty")
                if qty > remaining:
                    raise ValueError(f"fill_order: qty {qty} exceeds the {remaining} shares left on order {order_id}")
                self._execute(order, qty, price, complete=qty == remaining)
            return order.to_json()

    def expire_day_orders(self) -> list[str]:
        """Expire every open day order (what the close does); returns their ids."""
        with self._lock:
            expired = [o for o in self._orders.values() if o.open and o.time_in_force == "day"]
            for order in expired:
                order.status, order.expired_at, order.updated_at = "expired", self._now, self._now
            return [order.id for order in expired]

    # -- fault injection -----------------------------------------------------------------------
    def fail_next(self, status: int, times: int = 1, body: dict | str | None = None, *,
                  after_processing: bool = False) -> None:
        """Answer the next ``times`` requests with ``status`` and ``body`` (a dict is sent as JSON,
        a str as is). By default the requests are not processed (a gateway refusing them); with
        ``after_processing=True`` they are (an order is stored) and only the answer is lost."""
        if body is None:
            body = {"code": status * 100_000 + 10_000, "message": _reason(status)}
        with self._lock:
            self._faults.extend([_Fault(status, body, after_processing)] * times)

    def timeout_after_accept_next(self, how: Literal["delay", "drop"] = "delay", delay_s: float = 2.0) -> None:
        """The next ``POST /v2/orders`` is processed (stored if valid) but its answer is lost:
        ``"delay"`` sends it ``delay_s`` seconds late (set the client's timeout below that),
        ``"drop"`` closes the connection without an answer."""
        if how not in ("delay", "drop"):
            raise ValueError(f"how must be 'delay' or 'drop', not {how!r}")
        with self._lock:
            self._stall = (how, float(delay_s))

    def rate_limit(self, per_minute: int | None) -> None:
        """Answer 429 to requests beyond ``per_minute`` in any 60 s (``None``: no limit)."""
        with self._lock:
            self._per_minute, self._hits = per_minute, collections.deque()

    # -- protocol --------------------------------------------------------------------------------
    def _answer(self, request: RecordedRequest, key: str | None, secret: str | None, raw: bytes):
        """The status, body, extra headers and stall (or None) for one request."""
        with self._lock:
            self.requests.append(request)
            fault = self._faults.popleft() if self._faults else None
            headers: dict[str, str] = {}
            if fault is not None and not fault.after_processing:
                status, body = fault.status, fault.body
            else:
                try:
                    status, body = self._process(request, key, secret, raw, headers)
                except _Rejected as rejected:
                    status, body = rejected.status, rejected.body
                if fault is not None:
                    status, body = fault.status, fault.body
            stall = None
            if self._stall and (request.method, request.path) == ("POST", ORDERS_PATH):
                stall, self._stall = self._stall, None
            request.status, request.response = status, body
            if fault is not None:
                request.fault = "injected"
            elif stall is not None:
                request.fault = {"delay": "delayed", "drop": "dropped"}[stall[0]]
            return status, body, headers, stall

    def _process(self, request: RecordedRequest, key, secret, raw: bytes, headers: dict) -> tuple[int, object]:
        if key != self.key or secret != self._secret:
            raise _Rejected(401, 40110000, "request is not authorized")
        if self._per_minute is not None:
            self._throttle(headers)
        if raw:
            try:
                request.body = json.loads(raw)
            except ValueError:
                raise _Rejected(400, 40010000, "request body format is invalid") from None
        method, path, query = request.method, request.path, request.query
        if (method, path) == ("GET", "/v2/account"):
            return 200, self._account_json()
        if (method, path) == ("GET", "/v2/clock"):
            return 200, self._clock_json()
        if (method, path) == ("GET", ORDERS_PATH):
            return 200, self._list_orders(query)
        if (method, path) == ("POST", ORDERS_PATH):
            return 200, self._submit(request.body)
        if (method, path) == ("DELETE", ORDERS_PATH):
            return 207, self._cancel_all()
        if (method, path) == ("GET", BY_CLIENT_ORDER_ID_PATH):
            return 200, self._order(self._by_client_id.get(query.get("client_order_id", ""), "")).to_json()
        if (match := _ORDER_ID.match(path)) and method in ("GET", "DELETE"):
            order = self._order(match.group(1))
            return (200, order.to_json()) if method == "GET" else (204, self._cancel(order))
        if method == "GET" and path.startswith(ASSETS_PATH):
            return 200, self._asset_json(path.removeprefix(ASSETS_PATH))
        if (method, path) == ("GET", POSITIONS_PATH):
            return 200, [self._position_json(symbol) for symbol in sorted(self._positions)]
        if (match := _POSITION.match(path)) and method in ("GET", "DELETE"):
            symbol = self._position_symbol(match.group(1))
            return 200, self._position_json(symbol) if method == "GET" else self._close_position(symbol, query)
        raise _Rejected(404, 40410000, "endpoint not found")

    def _throttle(self, headers: dict) -> None:
        now = time.monotonic()
        while self._hits and now - self._hits[0] >= 60:
            self._hits.popleft()
        limited = len(self._hits) >= self._per_minute
        if not limited:
            self._hits.append(now)
        reset = int(time.time() + 60 - (now - self._hits[0])) if self._hits else int(time.time() + 60)
        headers.update({"X-RateLimit-Limit": str(self._per_minute), "X-RateLimit-Reset": str(reset),
                        "X-RateLimit-Remaining": str(max(0, self._per_minute - len(self._hits)))})
        if limited:
            raise _Rejected(429, 42910000, "rate limit exceeded")

    # -- resources -------------------------------------------------------------------------------
    def _market_value(self) -> Decimal:
        return sum((p.qty * self._prices[s] for s, p in self._positions.items()), Decimal(0))

    def _buying_power(self) -> Decimal:
        held = sum((order.held_cash() for order in self._orders.values()), Decimal(0))
        return max(Decimal(0), self._cash - held)

    def _account_json(self) -> dict:
        market_value, buying_power = self._market_value(), _text(self._buying_power())
        equity = _text(self._cash + market_value)
        return {
            "id": self.account_id, "account_number": self.account_number, "status": "ACTIVE",
            "crypto_status": "ACTIVE", "currency": "USD", "cash": _text(self._cash), "buying_power": buying_power,
            "regt_buying_power": buying_power, "daytrading_buying_power": buying_power,
            "non_marginable_buying_power": buying_power, "effective_buying_power": buying_power,
            "options_buying_power": buying_power, "accrued_fees": "0", "pending_transfer_in": "0",
            "pending_transfer_out": "0", "portfolio_value": equity, "equity": equity,
            "last_equity": _text(self._last_equity), "long_market_value": _text(market_value),
            "short_market_value": "0", "initial_margin": _text(market_value), "maintenance_margin": "0",
            "last_maintenance_margin": "0", "sma": "0", "multiplier": "1", "shorting_enabled": False,
            "trade_suspended_by_user": False, "daytrade_count": 0, "options_approved_level": 0,
            "options_trading_level": 0, "created_at": "2024-01-02T14:30:00Z", **self._flags,
        }

    def _clock_json(self) -> dict:
        is_open, next_open, next_close = market_clock(self._now)
        if self._open_override is not None:
            is_open = self._open_override
        local = self._now.astimezone(NEW_YORK)
        return {"timestamp": local.isoformat(), "is_open": is_open,
                "next_open": next_open.isoformat(), "next_close": next_close.isoformat()}

    def _market_open(self) -> bool:
        return self._clock_json()["is_open"]

    def _order(self, order_id: str) -> _Order:
        order = self._orders.get(order_id)
        if order is None:
            raise _Rejected(404, 40410000, "order not found")
        return order

    def _list_orders(self, query: dict[str, str]) -> list[dict]:
        status = query.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise _Rejected(422, 40010001, f"invalid status {status!r}: use open, closed or all")
        try:
            limit = int(query.get("limit", 50))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 500:
            raise _Rejected(422, 40010001, f"invalid limit {query.get('limit')!r}: use 1 to 500")
        after, until = _instant(query.get("after")), _instant(query.get("until"))
        symbols = {s for s in query.get("symbols", "").split(",") if s}
        orders = [o for o in self._orders.values()
                  if (status == "all" or o.open == (status == "open"))
                  and (not symbols or o.symbol in symbols) and query.get("side", o.side) == o.side
                  and (after is None or o.submitted_at > after) and (until is None or o.submitted_at < until)]
        if query.get("direction", "desc") == "desc":
            orders.reverse()
        return [order.to_json() for order in orders[:limit]]

    def _submit(self, body: object) -> dict:
        order = self._validate(body)
        if order.side == "buy":
            cost = order.held_cash()
            if cost > self._buying_power():
                raise _Rejected(403, 40310000, "insufficient buying power",
                                buying_power=_text(self._buying_power()), cost_basis=_text(cost))
        else:
            self._check_available(order.symbol, order.held_qty())
        self._orders[order.id] = order
        self._by_client_id[order.client_order_id] = order.id
        if self.fill_on_submit and ("/" in order.symbol or self._market_open()):  # crypto trades at any hour
            self._fill_if_marketable(order)
        return order.to_json()

    def _validate(self, body: object) -> _Order:
        """An order from a POST body, or the 4xx Alpaca answers to it."""
        if not isinstance(body, dict):
            raise _Rejected(400, 40010000, "request body format is invalid")
        if self._flags["trading_blocked"] or self._flags["account_blocked"]:
            raise _Rejected(403, 40310000, "account is not allowed to trade")
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise _Rejected(422, 40010001, "symbol is required")
        if symbol not in self._prices:
            raise _Rejected(422, 40010001, f'asset "{symbol}" not found')
        side, kind, tif = body.get("side"), body.get("type"), body.get("time_in_force")
        if side not in ("buy", "sell"):
            raise _Rejected(422, 40010001, f"invalid side {side!r}: use buy or sell")
        if kind not in ("market", "limit"):
            raise _Rejected(422, 40010001, f"order type {kind!r}: this test server takes market and limit orders")
        crypto = "/" in symbol
        if crypto and tif not in ("gtc", "ioc"):
            raise _Rejected(422, 40010001, f"invalid crypto time_in_force {tif!r}: crypto orders take gtc or ioc")
        if not crypto and tif not in ("day", "gtc"):
            raise _Rejected(422, 40010001, f"time_in_force {tif!r}: this test server takes day and gtc orders")
        if body.get("order_class") not in (None, "", "simple"):
            raise _Rejected(422, 40010001, f"order_class {body['order_class']!r}: this test server takes simple orders")
        if (body.get("qty") is None) == (body.get("notional") is None):
            raise _Rejected(422, 40010001, "exactly one of qty or notional is required")
        qty = _field(body, "qty")
        notional = _field(body, "notional")
        limit_price = _field(body, "limit_price")
        if (kind == "limit") != (limit_price is not None):
            raise _Rejected(422, 40010001, "limit_price is required for limit orders and only for them")
        fractional = notional is not None or qty != qty.to_integral_value()
        if fractional and not crypto and (kind, tif) != ("market", "day"):
            raise _Rejected(422, 40010001, "fractional and notional orders must be market day orders")
        client_order_id = body.get("client_order_id") or str(uuid.uuid4())
        if not isinstance(client_order_id, str) or len(client_order_id) > MAX_CLIENT_ORDER_ID_CHARS:
            raise _Rejected(422, 40010001, "client_order_id must be no more than 48 characters")
        if client_order_id in self._by_client_id:
            raise _Rejected(422, 40010001, "client_order_id must be unique")
        order = _Order(id=str(uuid.uuid4()), client_order_id=client_order_id, symbol=symbol, side=side, type=kind,
                       time_in_force=tif, qty=qty, notional=notional, limit_price=limit_price,
                       reference_price=self._prices[symbol], extended_hours=bool(body.get("extended_hours")),
                       submitted_at=self._now, status="new" if crypto or self._market_open() else "accepted")
        if crypto and qty is not None:
            self._check_pair_rules(order)
        return order

    def _asset_json(self, name: str) -> dict:
        symbol = next((s for s in self._prices if name in (s, s.replace("/", ""))), None)
        if symbol is None:
            raise _Rejected(404, 40410000, "asset not found")
        record = {"id": asset_id(symbol), "class": "crypto" if "/" in symbol else "us_equity", "symbol": symbol,
                  "exchange": "CRYPTO" if "/" in symbol else "NASDAQ", "name": symbol, "status": "active",
                  "tradable": True, "marginable": "/" not in symbol, "shortable": "/" not in symbol,
                  "easy_to_borrow": "/" not in symbol, "fractionable": True}
        if "/" in symbol:
            rules = self.pair_rules.get(symbol, ("0.0001", "0.0001", "0.01"))
            record.update(zip(("min_order_size", "min_trade_increment", "price_increment"), rules))
        return record

    def _check_pair_rules(self, order: _Order) -> None:
        """A crypto order's quantity and limit price on its pair's increments, as Alpaca checks them."""
        minimum, step, tick = (Decimal(v) for v in self.pair_rules.get(order.symbol, ("0.0001", "0.0001", "0.01")))
        if order.qty < minimum:
            raise _Rejected(422, 40010001, f"qty must be >= {minimum} (min_order_size of {order.symbol})")
        if order.qty % step:
            raise _Rejected(422, 40010001, f"qty must be a multiple of {step} (min_trade_increment)")
        if order.limit_price is not None and order.limit_price % tick:
            raise _Rejected(422, 40010001, f"limit_price must be a multiple of {tick} (price_increment)")

    def _check_available(self, symbol: str, requested: Decimal) -> None:
        existing = self._positions[symbol].qty if symbol in self._positions else Decimal(0)
        held = sum((o.held_qty() for o in self._orders.values() if o.symbol == symbol), Decimal(0))
        available = existing - held
        if requested > available:
            raise _Rejected(403, 40310000, f"insufficient qty available for order (requested: {_text(requested)}, "
                            f"available: {_text(available)})", available=_text(available),
                            existing_qty=_text(existing), held_for_orders=_text(held), symbol=symbol)

    def _cancel(self, order: _Order) -> None:
        if not order.open:
            raise _Rejected(422, 42210000, f'order is already in "{order.status}" state')
        order.status, order.canceled_at, order.updated_at = "canceled", self._now, self._now

    def _cancel_all(self) -> list[dict]:
        cancelled = []
        for order in [o for o in self._orders.values() if o.open]:
            self._cancel(order)
            cancelled.append({"id": order.id, "status": 200, "body": order.to_json()})
        return cancelled

    def _position_symbol(self, symbol_or_asset_id: str) -> str:
        for symbol in self._positions:
            if symbol_or_asset_id in (symbol, symbol.replace("/", ""), asset_id(symbol)):
                return symbol
        raise _Rejected(404, 40410000, "position does not exist")

    def _position_json(self, symbol: str) -> dict:
        position, price = self._positions[symbol], self._prices[symbol]
        market_value, cost_basis = position.qty * price, position.qty * position.avg_entry_price
        pl = market_value - cost_basis
        return {
            "asset_id": asset_id(symbol), "symbol": symbol.replace("/", ""),  # Alpaca lists BTC/USD as BTCUSD
            "exchange": "CRYPTO" if "/" in symbol else "NASDAQ",
            "asset_class": "crypto" if "/" in symbol else "us_equity", "asset_marginable": "/" not in symbol, "qty": _text(position.qty), "qty_available": _text(position.qty),
            "avg_entry_price": _text(position.avg_entry_price), "side": "long", "market_value": _text(market_value),
            "cost_basis": _text(cost_basis), "unrealized_pl": _text(pl), "unrealized_plpc": _text(pl / cost_basis),
            "unrealized_intraday_pl": _text(pl), "unrealized_intraday_plpc": _text(pl / cost_basis),
            "current_price": _text(price), "lastday_price": _text(price), "change_today": "0",
        }

    def _close_position(self, symbol: str, query: dict[str, str]) -> dict:
        held = self._positions[symbol].qty
        if "qty" in query and "percentage" in query:
            raise _Rejected(422, 40010001, "only one of qty or percentage is allowed")
        qty = held
        if "qty" in query:
            qty = _field(query, "qty")
        elif "percentage" in query:
            qty = (held * _field(query, "percentage") / 100).quantize(_SHARE_STEP, ROUND_DOWN)
        return self._submit({"symbol": symbol, "qty": str(qty), "side": "sell", "type": "market",
                             "time_in_force": "gtc" if "/" in symbol else "day"})

    # -- execution -------------------------------------------------------------------------------
    def _fill_if_marketable(self, order: _Order) -> bool:
        price = self._prices[order.symbol]
        if order.type == "limit":
            marketable = price <= order.limit_price if order.side == "buy" else price >= order.limit_price
        else:
            marketable = True
        if not order.open or not marketable:
            return False
        if order.notional is not None:
            self._execute(order, _shares(order.notional - order.filled_value, price), price, complete=True)
        else:
            self._execute(order, order.qty - order.filled_qty, price, complete=True)
        return True

    def _execute(self, order: _Order, qty: Decimal, price: Decimal, *, complete: bool) -> None:
        """Fill ``qty`` shares of ``order`` at ``price``: cash, position and order move together."""
        value = qty * price
        fee = value * self.fee_bps / 10_000
        position = self._positions.get(order.symbol, _Position(Decimal(0), Decimal(0)))
        if order.side == "buy":
            self._cash -= value + fee
            total = position.qty + qty
            self._positions[order.symbol] = _Position(total, (position.qty * position.avg_entry_price + value) / total)
        else:
            if qty > position.qty:
                raise ValueError(f"filling {qty} of {order.symbol} would sell short (held: {position.qty})")
            self._cash += value - fee
            position.qty -= qty
            if position.qty == 0:
                del self._positions[order.symbol]
        order.filled_qty += qty
        order.filled_value += value
        order.status = "filled" if complete else "partially_filled"
        order.filled_at = order.updated_at = self._now
        self._prices[order.symbol] = price


def market_clock(now: dt.datetime) -> tuple[bool, dt.datetime, dt.datetime]:
    """``(is_open, next_open, next_close)`` at ``now`` for 9:30-16:00 New York sessions on
    weekdays; ``next_close`` is the close of the current session, or of the next one."""
    day = now.astimezone(NEW_YORK).date()
    sessions = []
    while len(sessions) < 2:
        if day.weekday() < 5:
            bounds = tuple(dt.datetime.combine(day, t, tzinfo=NEW_YORK) for t in SESSION_HOURS)
            if bounds[1] > now:
                sessions.append(bounds)
        day += dt.timedelta(days=1)
    (open_, close), (following_open, _) = sessions
    is_open = open_ <= now < close
    return is_open, following_open if is_open else open_, close


class _Handler(BaseHTTPRequestHandler):
    owner: AlpacaTradingServer

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: (REDACTED if k.lower() == "apca-api-secret-key" else v) for k, v in self.headers.items()}
        request = RecordedRequest(self.command, parts.path, query, headers)
        status, body, extra, stall = self.owner._answer(
            request, self.headers.get("APCA-API-KEY-ID"), self.headers.get("APCA-API-SECRET-KEY"), raw)
        if stall is not None:
            how, delay_s = stall
            if how == "drop":
                self.close_connection = True
                return
            self.owner._released.wait(delay_s)
        payload = b"" if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/html")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (timed out) before a delayed answer
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve  # noqa: N815 (http.server's naming)

    def log_message(self, format, *args) -> None:  # keep pytest output clean
        pass


def _number(value) -> Decimal:
    """``value`` as a Decimal; NaN when it is not a number."""
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal("NaN")


def _decimal(value, name: str, *, minimum: int | None = None) -> Decimal:
    """A finite number (> 0, or >= minimum) as a Decimal; ValueError naming ``name`` otherwise."""
    number = _number(value)
    if not number.is_finite() or not (number > 0 if minimum is None else number >= minimum):
        bound = "> 0" if minimum is None else f">= {minimum}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def _field(body: dict, name: str) -> Decimal | None:
    """A positive number field of a request (``None`` when absent), or Alpaca's 422."""
    if body.get(name) is None:
        return None
    number = _number(body[name])
    if not number.is_finite():
        raise _Rejected(422, 40010001, f"invalid {name}: {body[name]!r}")
    if number <= 0:
        raise _Rejected(422, 40010001, f"{name} must be > 0")
    return number


def _shares(notional: Decimal, price: Decimal) -> Decimal:
    return (notional / price).quantize(_SHARE_STEP, ROUND_DOWN)


def _text(number: Decimal | None) -> str | None:
    """A Decimal as Alpaca writes numbers: a plain decimal string ("100000", "180.5")."""
    return None if number is None else format(number.normalize(), "f")


def _stamp(when: dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _instant(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _Rejected(422, 40010001, f"invalid timestamp {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _reason(status: int) -> str:
    if status == 429:
        return "rate limit exceeded"
    try:
        return http.HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
