"""`AlpacaBroker`: the real alpaca-py ``TradingClient`` against the local trading server
(``tests/servers/alpaca_trading.py``): every call's round trip, the error mapping, our bounded
retries (alpaca-py's are off), timeouts, unknown outcomes, the throttle, the live opt-in and
the keys that never leak.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import socket
import time
import traceback

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, PositionSide, TimeInForce
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position as AlpacaPosition
from alpaca.trading.requests import MarketOrderRequest

from research_lib.broker import (OPEN_STATUSES, AlpacaBroker, BrokerError, BrokerUnavailable, DuplicateClientOrderId,
                                 InsufficientBuyingPower, OrderRejected, RateLimited, UnknownOutcome)
from research_lib.broker._alpaca import KEY_ID_ENV, LIVE_CONFIRMATION, SECRET_KEY_ENV, _order, _position
from research_lib.params import SECRET_NAMES
from research_lib.errors import ConfigError
from tests.servers.alpaca_trading import DEFAULT_NOW, NEW_YORK, AlpacaTradingServer

KEY, SECRET = "PK" + "TEST" * 4, "SK" + "CANARY" * 6  # fake canary keys, built at run time
COID = "momentum-20240313-AAPL-b"


class FakeTime:
    """A monotonic clock that moves only when slept on; records the sleeps."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never send local requests to a proxy
    monkeypatch.setenv(KEY_ID_ENV, KEY)
    monkeypatch.setenv(SECRET_KEY_ENV, SECRET)


@pytest.fixture
def server(keys):
    with AlpacaTradingServer(KEY, SECRET, cash=10_000, prices={"AAPL": 100, "MSFT": 400}) as server:
        yield server


def broker_for(server: AlpacaTradingServer, **kwargs) -> AlpacaBroker:
    settings = {"url_override": server.url, "timeout_s": 2.0, "retry_wait_s": 0.01, **kwargs}
    return AlpacaBroker(**settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def statuses(server: AlpacaTradingServer) -> list[int]:
    return [r.status for r in server.requests]


# -- round trips ---------------------------------------------------------------------------------
def test_clock_and_account_round_trip(server):
    broker = broker_for(server)
    server.set_account(pattern_day_trader=True)

    clock = broker.clock()
    assert (clock.now, clock.is_open) == (DEFAULT_NOW, True)
    assert clock.next_close == dt.datetime(2024, 3, 13, 16, 0, tzinfo=NEW_YORK)
    assert all(t.tzinfo is not None for t in (clock.now, clock.next_open, clock.next_close))
    account = broker.account()
    assert (account.equity, account.cash, account.buying_power) == (10_000.0, 10_000.0, 10_000.0)
    assert isinstance(account.equity, float) and (account.trading_blocked, account.pattern_day_trader) == (False, True)
    server.set_account(trading_blocked=True)
    assert broker.account().trading_blocked is True
    assert (broker.name, broker.paper) == ("alpaca", True)


def test_submit_sends_a_fractional_market_day_order_and_the_order_round_trips(server):
    broker = broker_for(server)
    order = broker.submit_order("AAPL", "buy", 2.5, COID)

    assert server.calls("POST", "/v2/orders")[0].body == {
        "symbol": "AAPL", "qty": 2.5, "side": "buy", "type": "market", "time_in_force": "day", "client_order_id": COID}
    assert (order.client_order_id, order.symbol, order.side, order.quantity, order.status) == (
        COID, "AAPL", "buy", 2.5, "new")
    assert (order.filled_quantity, order.filled_avg_price, order.submitted_at) == (0.0, None, DEFAULT_NOW)
    assert order.broker_id == server.orders()[0]["id"] and order.is_open
    assert broker.order_by_client_id(COID) == order
    assert broker.order_by_client_id("never-sent") is None
    assert broker.account().buying_power == 10_000 - 250


def test_open_orders_are_oldest_first_and_fills_update_orders_and_positions(server):
    broker = broker_for(server)
    first = broker.submit_order("AAPL", "buy", 10, "first")
    second = broker.submit_order("MSFT", "buy", 2, "second")
    assert [o.client_order_id for o in broker.open_orders()] == ["first", "second"]

    server.fill_order(first.broker_id, 4, 100)
    assert broker.order_by_client_id("first").status == "partially_filled"
    server.fill_order(first.broker_id, None, 102)
    filled = broker.order_by_client_id("first")
    assert (filled.status, filled.filled_quantity, filled.filled_avg_price) == ("filled", 10.0, 101.2)
    assert broker.open_orders() == [second]
    (aapl,) = broker.positions().values()
    assert (aapl.symbol, aapl.quantity, aapl.avg_entry_price, aapl.market_value) == ("AAPL", 10.0, 101.2, 1020.0)

    order = broker.submit_order("AAPL", "sell", 0.1 + 0.2, "sell-aapl")  # rounded to Alpaca's 9 decimals
    assert server.calls("POST", "/v2/orders")[-1].body["qty"] == 0.3 and order.quantity == 0.3


def test_an_order_placed_while_closed_is_accepted(server):
    server.set_time(dt.datetime(2024, 3, 16, 12, 0, tzinfo=NEW_YORK))  # Saturday
    broker = broker_for(server)

    assert broker.clock().is_open is False
    assert broker.submit_order("AAPL", "buy", 1, COID).status == "accepted"


def test_cancel_an_open_order_and_refuse_a_closed_or_unknown_one(server):
    broker = broker_for(server)
    order = broker.submit_order("AAPL", "buy", 1, COID)

    assert broker.cancel_order(order.broker_id) is None
    assert broker.order_by_client_id(COID).status == "canceled" and broker.open_orders() == []
    with pytest.raises(OrderRejected, match=r'cancel_order answered 422: order is already in "canceled" state'):
        broker.cancel_order(order.broker_id)
    with pytest.raises(OrderRejected, match="answered 404: order not found"):
        broker.cancel_order("00000000-0000-4000-8000-000000000000")
    sent = len(server.requests)
    with pytest.raises(OrderRejected, match="'sim-00000001' is not an Alpaca order id"):
        broker.cancel_order("sim-00000001")
    assert len(server.requests) == sent


# -- mapping alpaca-py's models ------------------------------------------------------------------
def test_every_alpaca_status_maps_to_a_spartan_status(server):
    broker_for(server).submit_order("AAPL", "buy", 10, COID)
    raw = server.orders()[0]

    def mapped(status: str, filled: str = "0") -> str:
        return _order(AlpacaOrder(**{**raw, "status": status, "filled_qty": filled, "filled_avg_price": "100"})).status

    for status in OrderStatus:  # fails when alpaca-py learns a status this module does not map
        assert mapped(status.value) in OPEN_STATUSES + ("filled", "canceled", "expired", "rejected"), status
    assert [mapped(s) for s in ("new", "accepted", "pending_new", "filled", "canceled", "expired", "rejected",
                                "replaced")] == ["new", "accepted", "accepted", "filled", "canceled", "expired",
                                                 "rejected", "canceled"]
    assert [mapped("pending_cancel", f) for f in ("0", "4", "10")] == ["new", "partially_filled", "filled"]
    assert mapped("done_for_day", "4") == "partially_filled" and mapped("canceled", "4") == "canceled"


def test_a_short_position_has_a_negative_quantity(server):
    client = TradingClient(KEY, SECRET, url_override=server.url)
    client.submit_order(MarketOrderRequest(symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))
    server.fill_open_orders()
    raw = client.get_all_positions()[0].model_dump()

    short = _position(AlpacaPosition(**{**raw, "qty": "-3", "side": PositionSide.SHORT, "market_value": "-300"}))
    assert (short.quantity, short.market_value) == (-3.0, -300.0)
    assert _position(AlpacaPosition(**raw)).quantity == 3.0


def test_an_open_notional_order_is_refused_not_guessed(server):
    TradingClient(KEY, SECRET, url_override=server.url).submit_order(
        MarketOrderRequest(symbol="AAPL", notional=250, side=OrderSide.BUY, time_in_force=TimeInForce.DAY))

    with pytest.raises(BrokerError, match="placed by notional amount; Spartan trades shares only"):
        broker_for(server).open_orders()


# -- refusals --------------------------------------------------------------------------------------
def test_a_duplicate_client_order_id_is_refused_and_the_order_is_findable(server):
    broker = broker_for(server)
    first = broker.submit_order("AAPL", "buy", 1, COID)
    broker.cancel_order(first.broker_id)  # unique over the whole history, closed orders included

    with pytest.raises(DuplicateClientOrderId, match="422: client_order_id must be unique.*order_by_client_id"):
        broker.submit_order("AAPL", "buy", 1, COID)
    assert broker.order_by_client_id(COID).broker_id == first.broker_id
    assert statuses(server).count(422) == 1  # not retried


def test_insufficient_buying_power(server):
    with pytest.raises(InsufficientBuyingPower, match=r"403: insufficient buying power \(buying_power=10000, "
                                                      r"cost_basis=20000\)"):
        broker_for(server).submit_order("AAPL", "buy", 200, COID)
    assert server.orders() == []


@pytest.mark.parametrize("symbol, side, quantity, message", [
    ("AAPL", "sell", 1, r"403: insufficient qty available for order \(requested: 1, available: 0\)"),
    ("NOPE", "buy", 1, r'422: asset "NOPE" not found'),
])
def test_other_refusals_carry_alpacas_message(server, symbol, side, quantity, message):
    with pytest.raises(OrderRejected, match=message):
        broker_for(server).submit_order(symbol, side, quantity, COID)
    assert server.orders() == [] and len(server.requests) == 1


def test_a_non_json_error_body_is_quoted(server):
    server.fail_next(400, body="<html><body>400 Bad Request</body></html>")
    with pytest.raises(OrderRejected, match=r"answered 400: non-JSON body '<html><body>400 Bad Request</body></html>'"):
        broker_for(server).submit_order("AAPL", "buy", 1, COID)


@pytest.mark.parametrize("side, quantity, coid, error, message", [
    ("short", 1, COID, OrderRejected, r"side 'short' is not valid; valid sides: \['buy', 'sell'\]"),
    ("buy", 0, COID, OrderRejected, "quantity 0 must be a finite number of shares"),
    ("buy", math.nan, COID, OrderRejected, "quantity nan must be"),
    ("buy", 1e-12, COID, OrderRejected, "quantity 1e-12 must be"),
    ("buy", 1, "x" * 49, ValueError, "has 49 characters; it must have 1 to 48"),
])
def test_invalid_orders_are_refused_before_sending(server, side, quantity, coid, error, message):
    with pytest.raises(error, match=message):
        broker_for(server).submit_order("AAPL", side, quantity, coid)
    assert server.requests == []


def test_a_refused_key_pair_names_the_variables(keys):
    with AlpacaTradingServer(KEY, "another-secret") as server:
        with pytest.raises(BrokerError, match=f"401: request is not authorized. Check {KEY_ID_ENV} and "
                                              f"{SECRET_KEY_ENV}"):
            broker_for(server).account()
        assert len(server.requests) == 1


# -- retries, timeouts, unknown outcomes -----------------------------------------------------------
def test_429_then_success_is_retried_by_us_with_growing_waits(server):
    fake = FakeTime()
    server.fail_next(429, times=2)

    assert broker_for(server, monotonic=fake.monotonic, sleep=fake.sleep).account().cash == 10_000
    assert statuses(server) == [429, 429, 200]
    assert fake.sleeps == [0.01, 0.02]  # our waits: alpaca-py's own retry would sleep 3 s with time.sleep


def test_alpaca_py_does_not_retry_behind_our_back(server):
    server.fail_next(429, times=5)
    with pytest.raises(RateLimited, match="Gave up after 1 attempt"):
        broker_for(server, max_retries=0).account()
    assert statuses(server) == [429]


def test_persistent_429_raises_rate_limited_after_max_retries_quickly(server):
    server.fail_next(429, times=10)
    started = time.monotonic()
    with pytest.raises(RateLimited, match=r"answered 429: rate limit exceeded\. Gave up after 4 attempt\(s\)"):
        broker_for(server, max_retries=3, max_total_retry_s=5.0).positions()

    assert statuses(server) == [429] * 4
    assert time.monotonic() - started < 2.0  # waits 0.01 + 0.02 + 0.04, far below max_total_retry_s


def test_the_total_retry_time_is_bounded(server):
    fake = FakeTime()
    server.fail_next(503, times=50)
    broker = broker_for(server, max_retries=40, retry_wait_s=1.0, max_total_retry_s=10.0, monotonic=fake.monotonic,
                        sleep=fake.sleep)
    with pytest.raises(BrokerUnavailable, match=r"503: service unavailable\. Gave up after 4 attempt\(s\) in 7\.0 s"):
        broker.clock()

    assert fake.sleeps == [1.0, 2.0, 4.0]  # the next wait (8 s) would end after 10 s
    assert len(server.requests) == 4


@pytest.mark.parametrize("call", ["account", "submit"])
def test_a_504_before_processing_is_retried(server, call):
    server.fail_next(504)
    broker = broker_for(server)
    if call == "account":
        assert broker.account().cash == 10_000
    else:
        assert broker.submit_order("AAPL", "buy", 1, COID).client_order_id == COID
        assert len(server.orders()) == 1
    assert statuses(server) == [504, 200]


def test_a_504_after_processing_becomes_a_duplicate_to_adopt(server):
    server.fail_next(504, after_processing=True)  # the order is stored, the answer is a gateway's 504
    broker = broker_for(server)
    with pytest.raises(DuplicateClientOrderId, match="first attempt got no usable answer .*504.*probably placed"):
        broker.submit_order("AAPL", "buy", 1, COID)

    assert [r.status for r in server.calls("POST", "/v2/orders")] == [504, 422]
    (stored,) = server.orders()
    assert broker.order_by_client_id(COID).broker_id == stored["id"]


def test_a_5xx_with_an_html_body_is_retried_then_reported(server):
    server.fail_next(502, times=10, body="<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(BrokerUnavailable, match="answered 502: non-JSON body '<html><body>502 Bad Gateway"):
        broker_for(server, max_retries=2).account()
    assert statuses(server) == [502] * 3


@pytest.mark.parametrize("how", ["delay", "drop"])
def test_no_answer_to_a_submission_is_an_unknown_outcome_never_resent(server, how):
    server.timeout_after_accept_next(how, delay_s=2.0)
    broker = broker_for(server, timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(UnknownOutcome, match="submit_order sent, but no answer came back"):
        broker.submit_order("AAPL", "buy", 1, COID)

    assert time.monotonic() - started < 1.5  # the timeout, not the server's 2 s
    (post,) = server.calls("POST", "/v2/orders")
    order = broker.order_by_client_id(COID)
    assert (order.status, order.broker_id) == ("new", post.response["id"])


def test_an_unreachable_broker_is_unavailable_even_for_a_submission(keys):
    fake = FakeTime()
    broker = AlpacaBroker(url_override=f"http://127.0.0.1:{free_port()}", timeout_s=1.0, max_retries=2,
                          retry_wait_s=0.5, monotonic=fake.monotonic, sleep=fake.sleep)
    with pytest.raises(BrokerUnavailable, match="account got no answer .*ConnectionError.*Gave up after 3"):
        broker.account()
    with pytest.raises(BrokerUnavailable, match="submit_order got no answer"):  # nothing was sent: safe to resend
        broker.submit_order("AAPL", "buy", 1, COID)
    assert fake.sleeps == [0.5, 1.0] * 2


# -- throttle --------------------------------------------------------------------------------------
def test_the_throttle_allows_n_requests_in_any_rolling_minute(server):
    fake = FakeTime()
    broker = broker_for(server, requests_per_minute=3, monotonic=fake.monotonic, sleep=fake.sleep)
    sent_at = []
    for pause in (0, 10, 10, 10, 0, 0, 0):
        fake.now += pause
        broker.clock()
        sent_at.append(fake.now)

    assert sent_at == [0, 10, 20, 60, 70, 80, 120]
    assert fake.sleeps == [30, 10, 10, 40]
    assert all(sum(t <= s < t + 60 for s in sent_at) <= 3 for t in sent_at)
    assert len(server.requests) == 7


def test_retries_count_against_the_throttle(server):
    fake = FakeTime()
    server.fail_next(429)
    broker = broker_for(server, requests_per_minute=1, retry_wait_s=1.0, max_total_retry_s=120.0,
                        monotonic=fake.monotonic, sleep=fake.sleep)
    broker.clock()

    assert fake.sleeps == [1.0, 59.0] and statuses(server) == [429, 200]


# -- settings, keys and the live opt-in -------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"timeout_s": 0}, r"timeout_s must be a finite number of seconds > 0 \(got 0\)"),
    ({"retry_wait_s": -1}, "retry_wait_s must be a finite number of seconds >= 0"),
    ({"max_total_retry_s": math.inf}, "max_total_retry_s must be a finite number"),
    ({"max_retries": -1}, r"max_retries must be an integer >= 0 \(got -1\)"),
    ({"requests_per_minute": 201}, r"requests_per_minute must be an integer from 1 to 200, Alpaca's limit \(got 201\)"),
    ({"requests_per_minute": 0}, "requests_per_minute must be an integer from 1 to 200"),
])
def test_settings_out_of_range_are_refused(keys, settings, message):
    with pytest.raises(ValueError, match=message):
        AlpacaBroker(**settings)


@pytest.mark.parametrize("present, missing", [
    ({}, f"{KEY_ID_ENV} and {SECRET_KEY_ENV} are not set"),
    ({KEY_ID_ENV: KEY}, f"; {SECRET_KEY_ENV} is not set"),
    ({KEY_ID_ENV: KEY, SECRET_KEY_ENV: "  "}, f"; {SECRET_KEY_ENV} is not set"),
])
def test_missing_keys_are_a_config_error_naming_the_variables_and_the_fix(monkeypatch, present, missing):
    for name in (KEY_ID_ENV, SECRET_KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in present.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{missing}. Export them in the shell or write them to the workspace's "
                                          "git-ignored .env") as caught:
        AlpacaBroker()
    assert KEY not in str(caught.value)
    assert {KEY_ID_ENV, SECRET_KEY_ENV} <= set(SECRET_NAMES)  # the config's secret scan covers them


@pytest.mark.parametrize("settings, message", [
    ({"paper": False}, "paper=False, which trades real money, but live=False and live_confirmation=None"),
    ({"paper": False, "live": True}, "but live=True and live_confirmation=None"),
    ({"paper": False, "live": True, "live_confirmation": "yes"}, "live_confirmation='yes'"),
    ({"live": True, "live_confirmation": LIVE_CONFIRMATION}, "live=True contradicts paper=True"),
    ({"url_override": "https://api.alpaca.markets/"}, "url_override='https://api.alpaca.markets/' is Alpaca's live"),
])
def test_live_trading_is_refused_without_both_opt_ins(keys, settings, message):
    with pytest.raises(ConfigError, match=message) as caught:
        AlpacaBroker(**settings)
    assert f"pass paper=False, live=True and live_confirmation={LIVE_CONFIRMATION!r}" in str(caught.value)


def test_both_opt_ins_allow_a_live_broker(server):
    broker = broker_for(server, paper=False, live=True, live_confirmation=LIVE_CONFIRMATION)
    assert broker.paper is False and broker.account().cash == 10_000
    assert AlpacaBroker().url == "https://paper-api.alpaca.markets"  # the default is paper


def test_keys_never_appear_in_errors_reprs_or_logs(server, caplog):
    caplog.set_level(logging.DEBUG)  # alpaca-py's, urllib3's and ours
    broker = broker_for(server, timeout_s=0.2)
    server.fail_next(429)
    broker.account()
    errors: list[BaseException] = []
    server.fail_next(503, times=4)  # 1 + max_retries
    with pytest.raises(BrokerUnavailable) as caught:
        broker.clock()
    errors.append(caught.value)
    server.timeout_after_accept_next("drop")
    for expected in (UnknownOutcome, DuplicateClientOrderId):
        with pytest.raises(expected) as caught:
            broker.submit_order("AAPL", "buy", 1, COID)
        errors.append(caught.value)
    with AlpacaTradingServer(KEY, "another-secret") as other, pytest.raises(BrokerError, match="401") as caught:
        broker_for(other).account()
    errors.append(caught.value)

    outputs = [repr(broker), str(broker), caplog.text] + [
        text for e in errors for text in (str(e), repr(e), "".join(traceback.format_exception(e)))]
    assert "Retry 1 of 3" in caplog.text  # the logs were captured
    for text in outputs:
        assert KEY not in text and SECRET not in text
