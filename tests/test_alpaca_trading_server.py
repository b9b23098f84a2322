"""The local Alpaca trading API (``tests/servers/alpaca_trading.py``) speaks the protocol of the real
alpaca-py ``TradingClient``: account, clock, orders, fills, positions, errors, retries and timeouts.

These tests also pin the alpaca-py behaviour Spartan's broker relies on (what it retries, how long it
waits, that it sets no timeout, how errors surface), so an alpaca-py upgrade that changes it fails
here first.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import inspect
import json
import time

import pytest
import requests
from alpaca.common import constants
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AccountStatus, OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import ClosePositionRequest, GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from requests.adapters import HTTPAdapter

from tests.servers.alpaca_trading import DEFAULT_NOW, NEW_YORK, REDACTED, AlpacaTradingServer

KEY, SECRET = "test-trading-key", "test-trading-secret-canary-7f3a"
COID = "momentum-2024-03-13-AAPL-rebalance"  # a deterministic client_order_id, <= 48 chars


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never send local requests to a proxy
    with AlpacaTradingServer(KEY, SECRET, cash=10_000, prices={"AAPL": 100, "MSFT": 400}) as server:
        yield server


class TimeoutAdapter(HTTPAdapter):
    """Gives every request of a session a timeout (alpaca-py passes none)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def send(self, request, **kwargs):
        kwargs["timeout"] = kwargs.get("timeout") or self.timeout_s
        return super().send(request, **kwargs)


def client_for(server: AlpacaTradingServer, *, secret: str = SECRET, timeout_s: float | None = 2.0,
               retries: int = 3, retry_wait_s: float = 0.01) -> TradingClient:
    client = TradingClient(KEY, secret, paper=True, url_override=server.url)
    if timeout_s is not None:
        for prefix in ("http://", "https://"):
            client._session.mount(prefix, TimeoutAdapter(timeout_s))
    client._retry, client._retry_wait = retries, retry_wait_s  # not settable through TradingClient()
    return client


def market(qty: float = 10, side: OrderSide = OrderSide.BUY, client_order_id: str = COID, symbol: str = "AAPL"):
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY,
                              client_order_id=client_order_id)


def limit(limit_price: float, qty: float = 10, client_order_id: str = COID):
    return LimitOrderRequest(symbol="AAPL", qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                             limit_price=limit_price, client_order_id=client_order_id)


# -- account and clock ----------------------------------------------------------------------------
def test_account_round_trip_has_alpacas_fields_as_strings(server):
    account = client_for(server).get_account()

    assert account.status == AccountStatus.ACTIVE and account.currency == "USD"
    assert (account.cash, account.buying_power, account.equity, account.last_equity, account.portfolio_value) == (
        "10000", "10000", "10000", "10000", "10000")
    assert (account.trading_blocked, account.account_blocked, account.pattern_day_trader) == (False, False, False)
    (request,) = server.requests
    assert (request.method, request.path, request.status) == ("GET", "/v2/account", 200)
    assert request.headers["APCA-API-KEY-ID"] == KEY and request.headers["APCA-API-SECRET-KEY"] == REDACTED
    assert request.headers["User-Agent"].startswith("APCA-PY/")


def test_account_flags_and_last_equity_are_settable(server):
    server.set_account(trading_blocked=True, pattern_day_trader=True, last_equity=12_000)
    account = client_for(server).get_account()

    assert (account.trading_blocked, account.pattern_day_trader, account.last_equity) == (True, True, "12000")
    with pytest.raises(APIError) as caught:
        client_for(server).submit_order(market())
    assert (caught.value.status_code, caught.value.code) == (403, 40310000)


def test_clock_follows_the_server_time_and_the_override(server):
    client = client_for(server)
    clock = client.get_clock()
    assert (clock.timestamp, clock.is_open) == (DEFAULT_NOW, True)  # Wednesday 10:00 New York
    assert clock.next_close == dt.datetime(2024, 3, 13, 16, 0, tzinfo=NEW_YORK)
    assert clock.next_open == dt.datetime(2024, 3, 14, 9, 30, tzinfo=NEW_YORK)

    server.set_time(dt.datetime(2024, 3, 15, 17, 0, tzinfo=NEW_YORK))  # Friday after the close
    clock = client.get_clock()
    assert clock.is_open is False
    assert clock.next_open == dt.datetime(2024, 3, 18, 9, 30, tzinfo=NEW_YORK)
    assert clock.next_close == dt.datetime(2024, 3, 18, 16, 0, tzinfo=NEW_YORK)

    server.set_time(DEFAULT_NOW)
    server.set_market_open(False)  # a holiday, say
    assert client.get_clock().is_open is False
    with pytest.raises(ValueError, match="timezone-aware"):
        server.set_time(dt.datetime(2024, 3, 13, 10, 0))


# -- orders, fills, positions ----------------------------------------------------------------------
def test_market_order_round_trip_fill_position_and_cash(server):
    client = client_for(server)
    order = client.submit_order(market(qty=10))

    assert (order.client_order_id, order.symbol, order.qty, order.status) == (COID, "AAPL", "10", OrderStatus.NEW)
    assert server.calls("POST", "/v2/orders")[0].body == {  # what alpaca-py puts on the wire
        "symbol": "AAPL", "qty": 10.0, "side": "buy", "type": "market", "time_in_force": "day", "client_order_id": COID}
    assert client.get_order_by_id(order.id) == order
    assert client.get_order_by_client_id(COID) == order
    assert server.calls("GET", "/v2/orders:by_client_order_id")[0].query == {"client_order_id": COID}
    assert client.get_account().buying_power == "9000"  # held by the open order at 100 a share

    (filled,) = server.fill_open_orders({"AAPL": 101.5})
    order = client.get_order_by_id(order.id)
    assert filled["id"] == str(order.id)
    assert (order.status, order.filled_qty, order.filled_avg_price) == (OrderStatus.FILLED, "10", "101.5")
    position = client.get_open_position("AAPL")
    assert (position.qty, position.avg_entry_price, position.market_value, position.cost_basis) == (
        "10", "101.5", "1015", "1015")
    account = client.get_account()
    assert (account.cash, account.equity, account.buying_power, account.long_market_value) == (
        "8985", "10000", "8985", "1015")

    server.set_prices({"AAPL": 110})
    assert client.get_account().equity == "10085"
    assert client.get_all_positions()[0].unrealized_pl == "85"


def test_partial_fills_average_the_price(server):
    client = client_for(server)
    order = client.submit_order(market(qty=10))

    server.fill_order(order.id, 4, 100)
    order = client.get_order_by_id(order.id)
    assert (order.status, order.filled_qty, client.get_open_position("AAPL").qty) == (
        OrderStatus.PARTIALLY_FILLED, "4", "4")
    server.fill_order(order.id, None, 102)  # the rest
    order = client.get_order_by_id(order.id)
    assert (order.status, order.filled_qty, order.filled_avg_price) == (OrderStatus.FILLED, "10", "101.2")
    assert server.cash == 10_000 - 400 - 612
    with pytest.raises(ValueError, match="only open orders fill"):
        server.fill_order(order.id, 1, 100)


def test_limit_orders_fill_only_when_marketable(server):
    order = client_for(server).submit_order(limit(99))

    assert server.fill_open_orders({"AAPL": 100}) == []
    (filled,) = server.fill_open_orders({"AAPL": 98.5})
    assert (filled["id"], filled["status"], filled["filled_avg_price"]) == (str(order.id), "filled", "98.5")


def test_notional_orders_buy_fractional_shares_and_fees_are_charged(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with AlpacaTradingServer(KEY, SECRET, cash=10_000, prices={"AAPL": 100}, fee_bps=10) as server:
        request = MarketOrderRequest(symbol="AAPL", notional=250, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
        order = client_for(server).submit_order(request)
        server.fill_open_orders()

        assert (order.notional, order.qty) == ("250", None)
        assert server.positions() == {"AAPL": 2.5}
        assert server.cash == 10_000 - 250 - 0.25  # 10 bps of 250
        with pytest.raises(APIError, match="fractional and notional orders must be market day orders"):
            client_for(server).submit_order(limit(99, qty=1.5, client_order_id="frac-limit"))


def test_orders_wait_while_closed_and_fill_on_submit_while_open(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    saturday = dt.datetime(2024, 3, 16, 12, 0, tzinfo=NEW_YORK)
    with AlpacaTradingServer(KEY, SECRET, prices={"AAPL": 100}, fill_on_submit=True, now=saturday) as server:
        client = client_for(server)
        assert client.submit_order(market(client_order_id="weekend")).status == OrderStatus.ACCEPTED

        server.set_time(DEFAULT_NOW)
        order = client.submit_order(market(client_order_id="weekday"))
        assert (order.status, order.filled_avg_price) == (OrderStatus.FILLED, "100")
        assert server.expire_day_orders() == [str(client.get_order_by_client_id("weekend").id)]
        assert client.get_order_by_client_id("weekend").status == OrderStatus.EXPIRED


def test_positions_close_and_unknown_position_is_404(server):
    client = client_for(server)
    with pytest.raises(APIError) as caught:
        client.get_open_position("AAPL")
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (
        404, 40410000, "position does not exist")

    client.submit_order(market(qty=10))
    server.fill_open_orders({"AAPL": 100})
    close = client.close_position("AAPL", ClosePositionRequest(percentage="40"))
    assert (close.side, close.qty, close.status) == (OrderSide.SELL, "4", OrderStatus.NEW)
    server.fill_open_orders({"AAPL": 105})
    assert client.get_open_position("AAPL").qty == "6"
    assert server.cash == 10_000 - 1000 + 420
    client.close_position("AAPL")
    server.fill_open_orders()
    assert client.get_all_positions() == [] and server.positions() == {}


# -- rejections arising from state ------------------------------------------------------------------
def test_duplicate_client_order_id_is_rejected_over_the_whole_history(server):
    client = client_for(server)
    first = client.submit_order(limit(90))
    client.cancel_order_by_id(first.id)

    with pytest.raises(APIError, match="client_order_id must be unique") as caught:
        client.submit_order(market())
    err = caught.value
    assert (err.status_code, err.code, err.message) == (422, 40010001, "client_order_id must be unique")
    assert [o["id"] for o in server.orders()] == [str(first.id)]


def test_concurrent_submissions_of_one_client_order_id_make_one_order(server):
    def submit(_):
        try:
            return str(client_for(server).submit_order(market()).id)
        except APIError as err:
            return err.message

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(submit, range(6)))

    (accepted,) = [o["id"] for o in server.orders()]
    assert sorted(outcomes) == sorted([accepted] + ["client_order_id must be unique"] * 5)


def test_insufficient_buying_power_is_403_and_stores_nothing(server):
    client = client_for(server)
    client.submit_order(limit(95, qty=60, client_order_id="holds-5700"))  # open orders hold buying power

    with pytest.raises(APIError, match="insufficient buying power") as caught:
        client.submit_order(market(qty=50))
    err = caught.value
    assert (err.status_code, err.code) == (403, 40310000)
    assert json.loads(str(err)) == {"code": 40310000, "message": "insufficient buying power",
                                    "buying_power": "4300", "cost_basis": "5000"}
    assert len(server.orders()) == 1


def test_selling_more_than_is_held_is_403(server):
    with pytest.raises(APIError, match=r"insufficient qty available for order \(requested: 1, available: 0\)") as err:
        client_for(server).submit_order(market(qty=1, side=OrderSide.SELL))
    assert err.value.status_code == 403


@pytest.mark.parametrize("changes, message", [
    ({"client_order_id": "x" * 49}, "client_order_id must be no more than 48 characters"),
    ({"qty": 0}, "qty must be > 0"),
    ({"qty": -5}, "qty must be > 0"),
    ({"symbol": "NOPE"}, 'asset "NOPE" not found'),
])
def test_invalid_orders_are_422(server, changes, message):
    request = market(**changes)
    with pytest.raises(APIError) as caught:
        client_for(server).submit_order(request)

    assert (caught.value.status_code, caught.value.code, caught.value.message) == (422, 40010001, message)
    assert server.orders() == []


@pytest.mark.parametrize("payload, status, message", [
    (b"{not json", 400, "request body format is invalid"),
    (b'{"symbol": "AAPL", "qty": "ten", "side": "buy", "type": "market", "time_in_force": "day"}', 422,
     "invalid qty: 'ten'"),
])
def test_malformed_bodies_are_rejected(server, payload, status, message):
    headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET, "Content-Type": "application/json"}
    answer = requests.post(f"{server.url}/v2/orders", data=payload, headers=headers, timeout=2)

    assert (answer.status_code, answer.json()["message"]) == (status, message)


def test_a_48_character_client_order_id_is_accepted(server):
    assert client_for(server).submit_order(market(client_order_id="x" * 48)).client_order_id == "x" * 48


# -- listing and cancelling ------------------------------------------------------------------------
def test_list_open_closed_and_filtered_orders(server):
    client = client_for(server)
    aapl = client.submit_order(market(client_order_id="aapl"))
    msft = client.submit_order(market(qty=2, symbol="MSFT", client_order_id="msft"))
    server.fill_order(aapl.id, None, 100)

    assert [o.id for o in client.get_orders()] == [msft.id]  # status=open by default
    assert [o.id for o in client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))] == [aapl.id]
    everything = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
    assert [o.id for o in everything] == [msft.id, aapl.id]  # newest first
    only = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, symbols=["AAPL"], limit=10))
    assert [o.id for o in only] == [aapl.id]
    assert server.requests[-1].query == {"status": "all", "limit": "10", "symbols": "AAPL"}
    assert server.calls("GET", "/v2/orders")[2].query == {"status": "all", "nested": "True"}


def test_cancel_one_then_cancel_all(server):
    client = client_for(server)
    first = client.submit_order(limit(90, client_order_id="first"))
    second = client.submit_order(limit(91, client_order_id="second"))
    filled = client.submit_order(market(qty=1, client_order_id="filled"))
    server.fill_order(filled.id, None, 100)

    assert client.cancel_order_by_id(first.id) is None
    assert server.calls("DELETE", f"/v2/orders/{first.id}")[0].status == 204
    assert client.get_order_by_id(first.id).status == OrderStatus.CANCELED
    for order, state in [(first, "canceled"), (filled, "filled")]:
        with pytest.raises(APIError) as caught:
            client.cancel_order_by_id(order.id)
        err = caught.value
        assert (err.status_code, err.code, err.message) == (422, 42210000, f'order is already in "{state}" state')

    (response,) = client.cancel_orders()
    assert (response.id, response.status) == (second.id, 200)
    assert server.calls("DELETE", "/v2/orders")[0].status == 207
    assert client.get_orders() == []
    assert client.get_account().buying_power == client.get_account().cash == "9900"


def test_unknown_orders_are_404(server):
    client = client_for(server)
    with pytest.raises(APIError) as caught:
        client.get_order_by_client_id("never-sent")
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (404, 40410000, "order not found")
    with pytest.raises(APIError, match="order not found"):
        client.get_order_by_id("00000000-0000-4000-8000-000000000000")
    with pytest.raises(ValueError):  # alpaca-py checks the UUID before sending anything
        client.get_order_by_id("not-a-uuid")
    assert len(server.requests) == 2


# -- authentication ----------------------------------------------------------------------------------
def test_wrong_secret_is_401_and_no_secret_is_recorded_or_echoed(server):
    with pytest.raises(APIError) as caught:
        client_for(server, secret="wrong-secret").get_account()

    err = caught.value
    assert (err.status_code, err.code, err.message) == (401, 40110000, "request is not authorized")
    client_for(server).get_account()
    recorded = repr(server.requests) + repr(server)
    assert SECRET not in recorded and "wrong-secret" not in recorded and SECRET not in str(err)


# -- retries, faults and timeouts --------------------------------------------------------------------
def test_alpaca_py_retry_defaults_are_pinned(server):
    client = TradingClient(KEY, SECRET, url_override=server.url)

    assert (constants.DEFAULT_RETRY_ATTEMPTS, constants.DEFAULT_RETRY_WAIT_SECONDS) == (3, 3)
    assert constants.DEFAULT_RETRY_EXCEPTION_CODES == [429, 504]
    assert (client._retry, client._retry_wait, client._retry_codes) == (3, 3, [429, 504])
    assert "retry_attempts" not in inspect.signature(TradingClient.__init__).parameters


@pytest.mark.parametrize("status", [429, 504])
def test_429_and_504_are_retried_then_succeed(server, status):
    server.fail_next(status, times=2)
    account = client_for(server, retry_wait_s=0.01).get_account()

    assert account.cash == "10000"
    assert [r.status for r in server.requests] == [status, status, 200]
    assert [r.fault for r in server.requests] == ["injected", "injected", None]


def test_persistent_429_raises_after_four_attempts_and_the_wait_is_the_clients(server):
    server.fail_next(429, times=10)
    started = time.monotonic()
    with pytest.raises(APIError) as caught:
        client_for(server, retries=3, retry_wait_s=0.05).get_account()

    assert time.monotonic() - started >= 3 * 0.05
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (429, 42910000, "rate limit exceeded")
    assert len(server.requests) == 4  # 1 + client._retry


def test_other_errors_and_retries_zero_are_not_retried(server):
    server.fail_next(500)
    with pytest.raises(APIError):
        client_for(server).get_account()
    server.fail_next(429)
    with pytest.raises(APIError):
        client_for(server, retries=0).get_account()
    assert [r.status for r in server.requests] == [500, 429]


def test_a_non_json_gateway_error_has_no_code(server):
    server.fail_next(502, body="<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(APIError, match="502 Bad Gateway") as caught:
        client_for(server).get_account()

    assert caught.value.status_code == 502
    with pytest.raises(json.JSONDecodeError):
        caught.value.code


def test_a_504_after_accept_is_retried_into_a_duplicate_and_the_order_exists_once(server):
    server.fail_next(504, after_processing=True)
    client = client_for(server)
    with pytest.raises(APIError, match="client_order_id must be unique"):
        client.submit_order(market())

    assert [r.status for r in server.calls("POST", "/v2/orders")] == [504, 422]
    assert len(server.orders()) == 1
    assert client.get_order_by_client_id(COID).status == OrderStatus.NEW  # adopt it


@pytest.mark.parametrize("how, exception", [
    ("delay", requests.exceptions.ReadTimeout),
    ("drop", requests.exceptions.ConnectionError),
])
def test_timeout_after_accept_leaves_an_order_the_client_can_find(server, how, exception):
    server.timeout_after_accept_next(how, delay_s=2.0)
    client = client_for(server, timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(exception):
        client.submit_order(market())

    assert time.monotonic() - started < 1.5
    (post,) = server.calls("POST", "/v2/orders")  # neither alpaca-py nor requests retried it
    assert (post.status, post.fault) == (200, {"delay": "delayed", "drop": "dropped"}[how])
    order = client.get_order_by_client_id(COID)
    assert (order.status, str(order.id)) == (OrderStatus.NEW, post.response["id"])


def test_alpaca_py_sets_no_timeout_of_its_own(server):
    server.timeout_after_accept_next("delay", delay_s=0.3)
    started = time.monotonic()
    order = client_for(server, timeout_s=None).submit_order(market())

    assert time.monotonic() - started >= 0.3 and order.client_order_id == COID


def test_rate_limit_answers_429_beyond_the_budget(server):
    server.rate_limit(2)
    client = client_for(server, retries=0)
    client.get_clock()
    client.get_clock()
    with pytest.raises(APIError, match="rate limit exceeded"):
        client.get_clock()

    assert [r.status for r in server.requests] == [200, 200, 429]
    assert server.requests[-1].response == {"code": 42910000, "message": "rate limit exceeded"}
