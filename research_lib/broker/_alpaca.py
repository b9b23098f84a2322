"""Alpaca behind the `Broker` interface, through alpaca-py's ``TradingClient`` (paper by default).

Conventions
-----------
- **Keys** come from the environment only (``APCA_API_KEY_ID``, ``APCA_API_SECRET_KEY``; a
  git-ignored ``.env`` is read into it by `research_lib.env.load_env_file`). They live in the
  client's headers and nowhere else: never in a message, a repr or a log line.
- **Paper by default.** A live endpoint (``paper=False``, or ``url_override`` naming Alpaca's
  live host) is refused unless ``live=True`` *and* ``live_confirmation == LIVE_CONFIRMATION``.
- **Orders** are day orders in shares, each with the caller's ``client_order_id``: at market
  (fractional allowed, rounded to Alpaca's 9 decimals), or limit orders for whole shares at a
  price on Alpaca's tick (the children of an execution schedule, which the trading cycle sends
  when their bars start and cancels when they end: `works_schedules` is False).
- **Crypto pairs** (``BTC/USD``: `research_lib.data.asset_class`) follow Alpaca's crypto rules:
  good-till-cancelled orders (Alpaca takes no day orders for crypto), fractional quantities at
  market and at a limit on the pair's increments (its asset record, read once:
  `research_lib.broker._pairs`), no shorting (Alpaca refuses a sell beyond the holding), at any hour.
  Alpaca lists a crypto position without its slash (``BTCUSD``); `positions` names it as the
  orders do (``BTC/USD``), so the ledger's symbols and the broker's match.
- **Timeouts.** alpaca-py sets no HTTP timeout; every request here gets ``timeout_s`` (connect
  and read) from an adapter mounted on the client's ``requests`` session.
- **Retries.** alpaca-py's own retry (429 and 504, 3 times, 3 s apart) is turned off. A call
  is retried here when the broker answers 429 (`RateLimited`) or 5xx (`BrokerUnavailable`),
  or, for reads and cancels, when no answer comes back; waits double from ``retry_wait_s``.
  A call gives up after ``max_retries`` retries, or when the next wait would end more than
  ``max_total_retry_s`` after its first attempt; so one call lasts at most about
  ``max_total_retry_s + timeout_s`` (plus throttle waits).
- **Submissions are never resent blindly.** A ``POST /v2/orders`` that times out or loses its
  connection after it was sent raises `UnknownOutcome` at once (look the order up with
  `AlpacaBroker.order_by_client_id`). Only a 429, a 5xx, or a connection that could not be
  made is resent, always with the same ``client_order_id``: Alpaca refuses a second order with
  it. So when a 5xx came *after* Alpaca stored the order (a gateway's 504, say), the resend is
  answered "client_order_id must be unique" and `DuplicateClientOrderId` is raised, exactly as
  when an earlier run placed it: the trading cycle adopts the order in both cases, one path.
- **Errors.** 422 "client_order_id must be unique": `DuplicateClientOrderId`; 403 "insufficient
  buying power": `InsufficientBuyingPower`; any other 4xx to a submission or a cancel:
  `OrderRejected` with Alpaca's message (a non-JSON body is quoted as text); a 4xx to a read:
  `BrokerError` (404 to `order_by_client_id`: ``None``).
- **Throttle.** At most ``requests_per_minute`` requests (retries included) in any rolling
  60 s per `AlpacaBroker` (Alpaca allows 200 a minute per account); a request beyond it sleeps.
- **Statuses** map to `OrderStatus`: ``filled``, ``canceled``, ``expired`` and ``rejected`` as
  they are, ``replaced`` as ``canceled`` (Spartan never replaces; the replacement has its own
  id). Every other Alpaca status is an open order: ``accepted`` while not yet live at a venue
  (``accepted``, ``pending_new``, ``accepted_for_bidding``, ``pending_review``, ``held``,
  ``suspended``), ``new`` otherwise (``new``, ``pending_cancel``, ``pending_replace``,
  ``stopped``, ``done_for_day``, ``calculated``), and, whatever the status says,
  ``partially_filled`` once some shares filled and ``filled`` once all did.
- **Money and quantities** are floats in account currency and shares; a short position has a
  negative quantity; times are timezone-aware, as Alpaca sends them.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import numbers
import os
import threading
import time
import uuid
from typing import Callable, Literal, TypeVar

import requests
import urllib3
from alpaca.common.enums import BaseURL
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetClass, OrderSide, PositionSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position as AlpacaPosition
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from requests.adapters import HTTPAdapter

from research_lib.broker._base import (Account, BrokerError, BrokerOrder, BrokerUnavailable, Clock,
                                       DuplicateClientOrderId, InsufficientBuyingPower, OrderRejected, OrderStatus,
                                       Position, RateLimited, UnknownOutcome, check_client_order_id)
from research_lib.broker._pairs import PairRules, pair_limit, pair_quantity
from research_lib.data import CRYPTO_QUOTES, asset_class
from research_lib.errors import ConfigError

KEY_ID_ENV, SECRET_KEY_ENV = "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"
LIVE_CONFIRMATION = "I understand this trades real money"  # live_confirmation must equal this to trade live
ALPACA_REQUESTS_PER_MINUTE = 200  # Alpaca's limit per account
OPEN_ORDERS_LIMIT = 500  # the most orders one GET /v2/orders returns
QUANTITY_DECIMALS = 9  # Alpaca's share precision
BrokerCall = Literal["clock", "account", "positions", "open_orders", "submit_order", "order_by_client_id",
                     "cancel_order", "asset"]
_OPEN = {"new": "new", "pending_cancel": "new", "pending_replace": "new", "stopped": "new", "done_for_day": "new",
         "calculated": "new", "accepted": "accepted", "pending_new": "accepted", "accepted_for_bidding": "accepted",
         "pending_review": "accepted", "held": "accepted", "suspended": "accepted",
         "partially_filled": "partially_filled"}
_CLOSED = {"filled": "filled", "canceled": "canceled", "replaced": "canceled", "expired": "expired",
           "rejected": "rejected"}
_T = TypeVar("_T")
log = logging.getLogger(__name__)


class RequestThrottle:
    """At most ``per_minute`` requests in any rolling 60 s: `wait` sleeps until one more may go.

    ``monotonic`` and ``sleep`` are injectable (seconds) so tests run on a fake clock.
    """

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.per_minute = per_minute
        self._monotonic, self._sleep, self._pairs = monotonic, sleep, {}
        self._sent: collections.deque[float] = collections.deque(maxlen=per_minute)
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until a request may be sent, and count it as sent."""
        with self._lock:
            if len(self._sent) == self.per_minute:
                pause = max(0.0, self._sent[0] + 60.0 - self._monotonic())
                if pause > 0:
                    log.info("Alpaca throttle: %d requests in the last minute; waiting %.1f s", self.per_minute, pause)
                    self._sleep(pause)
            self._sent.append(self._monotonic())


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request of a session ``timeout_s`` when the caller passed none (alpaca-py never does)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().send(request, **kwargs)


class AlpacaBroker:
    """Alpaca's trading API as a `research_lib.broker.Broker` (see the module docstring).

    Parameters
    ----------
    paper : trade Alpaca's paper account (the default).
    live : with ``paper=False``, the first of the two opt-ins to trade real money.
    live_confirmation : the second opt-in: must equal `LIVE_CONFIRMATION` when trading live.
    url_override : the API's base URL instead of Alpaca's (a local test server, a proxy).
    timeout_s : connect and read timeout of every HTTP request, in seconds.
    max_retries : retries of one call after a 429, a 5xx or (not for submissions) no answer.
    retry_wait_s : the first wait before a retry, in seconds; each further wait doubles.
    max_total_retry_s : no retry starts later than this many seconds after the call's first attempt.
    requests_per_minute : the throttle, in requests per rolling minute (1 to 200, Alpaca's limit).
    name : the broker's name in reports.
    monotonic, sleep : the clock and the sleep of the throttle and the retries (tests inject fakes).

    Raises
    ------
    ConfigError
        if a key is missing from the environment, or a live endpoint lacks either opt-in.
    ValueError
        if a number is out of range.
    """

    def __init__(self, paper: bool = True, *, live: bool = False, live_confirmation: str | None = None,
                 url_override: str | None = None, timeout_s: float = 10.0, max_retries: int = 3,
                 retry_wait_s: float = 1.0, max_total_retry_s: float = 30.0, requests_per_minute: int = 150,
                 name: str = "alpaca", monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        _check_number("timeout_s", timeout_s, positive=True)
        _check_number("retry_wait_s", retry_wait_s)
        _check_number("max_total_retry_s", max_total_retry_s)
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ValueError(f"max_retries must be an integer >= 0 (got {max_retries!r}); 0 turns retries off.")
        if not (isinstance(requests_per_minute, int) and 1 <= requests_per_minute <= ALPACA_REQUESTS_PER_MINUTE):
            raise ValueError(f"requests_per_minute must be an integer from 1 to {ALPACA_REQUESTS_PER_MINUTE}, "
                             f"Alpaca's limit (got {requests_per_minute!r}); the default 150 leaves a margin.")
        _check_live(paper, live, live_confirmation, url_override)
        key_id, secret_key = _keys()
        self.name, self.paper = name, bool(paper)
        self.url = url_override or (BaseURL.TRADING_PAPER if paper else BaseURL.TRADING_LIVE).value
        self.timeout_s, self.max_retries = float(timeout_s), max_retries
        self.retry_wait_s, self.max_total_retry_s = float(retry_wait_s), float(max_total_retry_s)
        self.requests_per_minute = requests_per_minute
        self._monotonic, self._sleep, self._pairs = monotonic, sleep, {}
        self._throttle = RequestThrottle(requests_per_minute, monotonic, sleep)
        self._client = TradingClient(key_id, secret_key, paper=paper, url_override=url_override)
        self._client._retry = 0  # alpaca-py's retry resends blindly and sleeps 3 s; `_call` retries instead
        for prefix in ("http://", "https://"):
            self._client._session.mount(prefix, _TimeoutAdapter(self.timeout_s))

    works_schedules = False  # orders go at once: the trading cycle times the children of a schedule

    def __repr__(self) -> str:  # never shows the keys
        return f"AlpacaBroker(name={self.name!r}, paper={self.paper}, url={self.url!r})"

    # -- the Broker interface ------------------------------------------------------------

    def clock(self) -> Clock:
        """Alpaca's clock: now, whether the market is open, the next open and close (tz-aware)."""
        clock = self._call("clock", self._client.get_clock)
        return Clock(now=clock.timestamp, is_open=clock.is_open, next_open=clock.next_open,
                     next_close=clock.next_close)

    def account(self) -> Account:
        """Equity, cash and buying power; ``trading_blocked`` also when the account is blocked or
        trading is suspended by the user."""
        account = self._call("account", self._client.get_account)
        return Account(equity=_float(account.equity, "equity"), cash=_float(account.cash, "cash"),
                       buying_power=_float(account.buying_power, "buying_power"),
                       trading_blocked=bool(account.trading_blocked or account.account_blocked
                                            or account.trade_suspended_by_user),
                       pattern_day_trader=bool(account.pattern_day_trader))

    def positions(self) -> dict[str, Position]:
        """Holdings by symbol (shorts negative)."""
        return {position.symbol: position
                for position in map(_position, self._call("positions", self._client.get_all_positions))}

    def open_orders(self) -> list[BrokerOrder]:
        """Open orders, oldest first.

        Raises
        ------
        BrokerError
            if there are 500 or more (one answer may not hold them all), or one was placed by
            notional amount (Spartan trades shares only).
        """
        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=OPEN_ORDERS_LIMIT, direction="asc")
        orders = self._call("open_orders", lambda: self._client.get_orders(request))
        if len(orders) >= OPEN_ORDERS_LIMIT:
            raise BrokerError(f"Alpaca lists {len(orders)} open orders, as many as one answer holds, so some may be "
                              "missing; cancel stale orders at Alpaca and re-run.")
        return [_order(order) for order in orders]

    def submit_order(self, symbol: str, side: Literal["buy", "sell"], quantity: float,
                     client_order_id: str, *, limit_price: float | None = None, bar: int | None = None,
                     bars: int = 1) -> BrokerOrder:
        """Send a day order for ``quantity`` shares: at market (rounded to 9 decimals), or with
        ``limit_price`` a limit order for whole shares (Alpaca takes fractional quantities at market
        only), its price to the cent (to 1/100 cent under $1; a buy's rounded down and a sell's up,
        so that it stays inside the limit asked for). A crypto pair's order is good till cancelled
        and fractional at a limit too. Alpaca sends an order at once: ``bar`` is
        refused (the trading cycle sends each child of a schedule when its bars start).

        Raises
        ------
        ValueError
            if ``client_order_id`` is empty or longer than 48 characters (nothing is sent).
        OrderRejected
            for a side other than buy or sell or a quantity that is not a finite number > 0
            (nothing is sent), or any refusal by Alpaca other than those below.
        DuplicateClientOrderId
            if Alpaca already has an order with this ``client_order_id`` (adopt it).
        InsufficientBuyingPower
            if Alpaca refused the order for buying power.
        UnknownOutcome
            if the request was sent but no answer came back (look the order up).
        RateLimited, BrokerUnavailable
            if 429 or 5xx answers, or failures to connect, outlasted the retries.
        """
        check_client_order_id(client_order_id)
        if bar is not None:
            raise OrderRejected("Alpaca sends an order at once: it takes no bar to work it in (the trading cycle "
                                "sends each child of a schedule when its bars start). Nothing was sent.")
        if side not in ("buy", "sell"):
            raise OrderRejected(f"side {side!r} is not valid; valid sides: ['buy', 'sell']")
        if not (isinstance(quantity, numbers.Real) and math.isfinite(quantity)
                and round(float(quantity), QUANTITY_DECIMALS) > 0):
            raise OrderRejected(f"quantity {quantity!r} must be a finite number of shares >= 1e-{QUANTITY_DECIMALS}.")
        crypto = asset_class(symbol) == "crypto"
        fields = {"symbol": symbol, "side": OrderSide(side), "client_order_id": client_order_id,
                  "time_in_force": TimeInForce.GTC if crypto else TimeInForce.DAY}  # crypto takes no day orders
        if crypto:
            rules = self._pair_rules(symbol)
            fields["qty"] = pair_quantity(symbol, float(quantity), rules)  # floored: never more than checked
            request = (MarketOrderRequest(**fields) if limit_price is None else
                       LimitOrderRequest(limit_price=pair_limit(symbol, limit_price, side, rules), **fields))
        elif limit_price is None:
            request = MarketOrderRequest(qty=round(float(quantity), QUANTITY_DECIMALS), **fields)
        else:
            request = LimitOrderRequest(qty=_whole_shares(quantity), limit_price=_tick(limit_price, side), **fields)
        return _order(self._call("submit_order", lambda: self._client.submit_order(request)))

    def order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The account's order with this ``client_order_id``, whatever its status, or None."""
        try:
            order = self._call("order_by_client_id", lambda: self._client.get_order_by_client_id(client_order_id))
        except _NotFound:
            return None
        return _order(order)

    def cancel_order(self, broker_id: str) -> None:
        """Ask Alpaca to cancel an open order (the cancel completes asynchronously at Alpaca).

        A closed or unknown order raises `OrderRejected`. A cancel whose answer was lost is
        resent; if the first one went through, the resend is refused as 'order is already in
        "canceled" state': look the order up to tell.
        """
        try:
            uuid.UUID(broker_id)
        except (TypeError, ValueError):
            raise OrderRejected(f"broker_id {broker_id!r} is not an Alpaca order id (a UUID); "
                                "nothing was sent.") from None
        self._call("cancel_order", lambda: self._client.cancel_order_by_id(broker_id))

    def _pair_rules(self, symbol: str) -> PairRules:
        """The crypto pair's order rules, from its asset record (asked for once; BTCUSD names BTC/USD)."""
        if symbol not in self._pairs:
            try:
                asset = self._call("asset", lambda: self._client.get_asset(symbol.replace("/", "")))
            except _NotFound:
                raise OrderRejected(f"Alpaca lists no crypto pair {symbol}; nothing was sent.") from None
            self._pairs[symbol] = PairRules(asset.min_order_size, asset.min_trade_increment, asset.price_increment)
        return self._pairs[symbol]

    # -- requests ------------------------------------------------------------------------

    def _call(self, what: BrokerCall, send: Callable[[], _T]) -> _T:
        """``send()`` through the throttle, its errors translated, retried within the bounds."""
        started, attempt, previous = self._monotonic(), 0, None
        while True:
            self._throttle.wait()
            try:
                return send()
            except APIError as err:
                error = _translate(err, what, previous)
            except requests.exceptions.RequestException as err:
                error = _no_answer(err, what)
            if not isinstance(error, (RateLimited, BrokerUnavailable)):
                raise error
            wait = self.retry_wait_s * 2 ** attempt
            elapsed = self._monotonic() - started
            if attempt >= self.max_retries or elapsed + wait > self.max_total_retry_s:
                raise type(error)(f"{error} Gave up after {attempt + 1} attempt(s) in {elapsed:.1f} s (max_retries="
                                  f"{self.max_retries}, max_total_retry_s={self.max_total_retry_s:g}).")
            attempt, previous = attempt + 1, str(error)
            log.warning("%s Retry %d of %d in %.2f s.", error, attempt, self.max_retries, wait)
            self._sleep(wait)


class _NotFound(BrokerError):
    """A read answered 404."""


def _translate(err: APIError, what: BrokerCall, previous: str | None) -> BrokerError:
    """The `BrokerError` for Alpaca's error answer to ``what``; ``previous`` describes the earlier
    failed attempt of the same call, if this one is a resend."""
    status, message = err.status_code, _alpaca_message(str(err))
    text = f"Alpaca {what} answered {status}: {message}."
    if status == 429:
        return RateLimited(text)
    if status is None or status >= 500:
        return BrokerUnavailable(text)
    if status == 401:
        return BrokerError(f"{text} Check {KEY_ID_ENV} and {SECRET_KEY_ENV}, and that paper keys go with paper=True.")
    if what == "submit_order":
        if status == 422 and "client_order_id must be unique" in message:
            cause = (f" This call's first attempt got no usable answer ({previous}): it probably placed the order."
                     if previous else "")
            return DuplicateClientOrderId(f"{text}{cause} Adopt the existing order: look it up with "
                                          "order_by_client_id.")
        if status == 403 and "insufficient buying power" in message:
            return InsufficientBuyingPower(text)
        return OrderRejected(text)
    if what == "cancel_order":
        return OrderRejected(text)
    return _NotFound(text) if status == 404 else BrokerError(text)


def _no_answer(err: requests.exceptions.RequestException, what: BrokerCall) -> BrokerError:
    """A request that got no HTTP answer: retryable, except a submission that may have arrived."""
    reason = getattr(err.args[0], "reason", None) if err.args else None
    not_sent = (isinstance(err, requests.exceptions.ConnectTimeout)
                or isinstance(reason, urllib3.exceptions.NewConnectionError))  # no connection: nothing left
    detail = f"{type(err).__name__}: {err}"
    if what == "submit_order" and not not_sent:
        return UnknownOutcome(f"Alpaca submit_order sent, but no answer came back ({detail}); the order may exist: "
                              "look it up with order_by_client_id before sending it again.")
    return BrokerUnavailable(f"Alpaca {what} got no answer ({detail}).")


def _alpaca_message(body: str) -> str:
    """Alpaca's ``message`` (with the body's other fields), or the body itself if it is not Alpaca's JSON."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "message" in parsed:
        extra = ", ".join(f"{k}={v}" for k, v in parsed.items() if k not in ("code", "message"))
        return str(parsed["message"]) + (f" ({extra})" if extra else "")
    text = " ".join(body.split())
    return f"non-JSON body {text[:200]!r}" if text else "empty body"


def _order(order: AlpacaOrder) -> BrokerOrder:
    if order.qty is None:
        raise BrokerError(f"Alpaca order {order.id} ({order.symbol}, client_order_id {order.client_order_id!r}) was "
                          "placed by notional amount; Spartan trades shares only. Cancel it at Alpaca or let it fill.")
    quantity, filled = float(order.qty), float(order.filled_qty or 0)
    return BrokerOrder(client_order_id=order.client_order_id, broker_id=str(order.id), symbol=order.symbol,
                       side=order.side.value, quantity=quantity, status=_status(order.status.value, quantity, filled),
                       filled_quantity=filled,
                       filled_avg_price=float(order.filled_avg_price) if filled else None,
                       submitted_at=order.submitted_at)


def _status(alpaca_status: str, quantity: float, filled: float) -> OrderStatus:
    """Alpaca's status as one of `OrderStatus` (see the module docstring)."""
    if alpaca_status in _CLOSED:
        return _CLOSED[alpaca_status]
    if alpaca_status not in _OPEN:
        raise BrokerError(f"Alpaca order status {alpaca_status!r} is unknown; known: {sorted({**_OPEN, **_CLOSED})}. "
                          "Map it in research_lib/broker/_alpaca.py.")
    if filled <= 0:
        return _OPEN[alpaca_status]
    return "partially_filled" if filled < quantity else "filled"


def _position(position: AlpacaPosition) -> Position:
    quantity = abs(float(position.qty))
    return Position(symbol=_pair(position.symbol) if position.asset_class == AssetClass.CRYPTO else position.symbol, quantity=-quantity if position.side == PositionSide.SHORT else quantity,
                    avg_entry_price=float(position.avg_entry_price),
                    market_value=_float(position.market_value, f"market_value of {position.symbol}"))


def _pair(symbol: str) -> str:
    """A crypto position's symbol as orders spell it: ``BTCUSD`` -> ``BTC/USD`` (Alpaca lists
    positions without the slash); a symbol with a slash, or no known quote currency, as it is."""
    if "/" in symbol:
        return symbol
    for quote in sorted(CRYPTO_QUOTES, key=len, reverse=True):  # USDT before USD
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[:-len(quote)]}/{quote}"
    return symbol


def _whole_shares(quantity: float) -> int:
    """A limit order's quantity: whole shares (a float within 1e-9 of one counts as it)."""
    whole = round(float(quantity))
    if abs(float(quantity) - whole) > 10.0 ** -QUANTITY_DECIMALS or whole < 1:
        raise OrderRejected(f"quantity {quantity!r}: Alpaca takes limit orders for whole shares only (fractional "
                            "quantities at market); nothing was sent.")
    return whole


def _tick(limit_price: float, side: str) -> float:
    """A limit price on Alpaca's tick (a cent, 1/100 cent under $1), rounded towards the inside
    of the limit asked for: down for a buy, up for a sell."""
    if not (isinstance(limit_price, numbers.Real) and math.isfinite(limit_price) and limit_price > 0):
        raise OrderRejected(f"limit_price {limit_price!r} must be a finite price > 0; nothing was sent.")
    step = 0.01 if limit_price >= 1.0 else 0.0001
    ticks = limit_price / step
    ticks = math.floor(ticks + 1e-9) if side == "buy" else math.ceil(ticks - 1e-9)
    if ticks < 1:
        raise OrderRejected(f"limit_price {limit_price!r} is below Alpaca's tick; nothing was sent.")
    return round(ticks * step, 4)


def _float(value: str | float | None, what: str) -> float:
    if value is None:
        raise BrokerError(f"Alpaca's answer lacks {what}.")
    return float(value)


def _check_number(name: str, value: float, *, positive: bool = False) -> None:
    bound = "> 0" if positive else ">= 0"
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a finite number of seconds {bound} (got {value!r}).")


def _check_live(paper: bool, live: bool, live_confirmation: str | None, url_override: str | None) -> None:
    """Refuse a live endpoint without both opt-ins, and contradictory settings."""
    opt_in = (f"To trade real money pass paper=False, live=True and live_confirmation={LIVE_CONFIRMATION!r} "
              "(research_lib.broker._alpaca.LIVE_CONFIRMATION); otherwise keep paper=True.")
    if live and paper:
        raise ConfigError(f"live=True contradicts paper=True. {opt_in}")
    live_host = (url_override or "").rstrip("/") == BaseURL.TRADING_LIVE.value
    if (not paper or live_host) and not (live and live_confirmation == LIVE_CONFIRMATION):
        where = f"url_override={url_override!r} is Alpaca's live endpoint" if paper else "paper=False"
        raise ConfigError(f"{where}, which trades real money, but live={live!r} and live_confirmation="
                          f"{live_confirmation!r}. {opt_in}")


def _keys() -> tuple[str, str]:
    """The key pair from the environment, or a `ConfigError` naming what is missing (never a value)."""
    missing = [name for name in (KEY_ID_ENV, SECRET_KEY_ENV) if not os.environ.get(name, "").strip()]
    if missing:
        raise ConfigError(f"AlpacaBroker needs {KEY_ID_ENV} and {SECRET_KEY_ENV} in the environment; "
                          f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. Export them in the "
                          "shell or write them to the workspace's git-ignored .env (research_lib.env.load_env_file "
                          "reads it), or trade with the sim broker.")
    return os.environ[KEY_ID_ENV], os.environ[SECRET_KEY_ENV]
