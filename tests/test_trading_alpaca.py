"""Whole trading cycles (`run_cycle` with a `Ledger` on a throw-away SQLite file) through
`AlpacaBroker`, i.e. the real alpaca-py ``TradingClient``, against the local Alpaca trading server
(``tests/servers/alpaca_trading.py``) on 127.0.0.1, with faults injected on the wire.

For every fault (429, 504 before and after the order was stored, no answer after the order was
stored, 422 duplicate client_order_id, 403 insufficient buying power) the cycle ends with each
order at the broker once, the ledger agreeing with the broker, and a re-run of the session that
sends nothing new (TRADING_SAFETY.md, "Restart and reconciliation"). Also: market closed, the kill
switch (HALTED, REDUCING), open orders of other sessions cancelled at the broker, bounded requests
(retries and the throttle), and several sessions converging to the target weights.

Retries sleep on `FakeTime` (no real waits); only the no-answer cases wait for a real (short) timeout.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from research_lib.broker import AlpacaBroker, BrokerUnavailable, RateLimited
from research_lib.risk import KillSwitch
from research_lib.trading import CycleInputs, CycleReport, Intent, Ledger, client_order_id, run_cycle
from tests.servers.alpaca_trading import DEFAULT_NOW, NEW_YORK, OPEN_STATUSES, AlpacaTradingServer
from tests.test_alpaca_broker import KEY, SECRET, FakeTime, broker_for, keys  # noqa: F401 (keys is a fixture)
from tests.test_trading_cycle import LIMITS

STRATEGY = "trend"
PRICES = {"AAPL": 100.0, "KO": 50.0, "MSFT": 400.0}
TARGETS = pd.Series({"AAPL": 0.3, "KO": 0.3, "MSFT": 0.3})
DAY1 = DEFAULT_NOW  # Wednesday 2024-03-13 10:00 New York: the market is open
DAY2 = dt.datetime(2024, 3, 14, 10, 0, tzinfo=NEW_YORK)
DAY3 = dt.datetime(2024, 3, 15, 10, 0, tzinfo=NEW_YORK)
READS = 4  # clock, account, positions, open orders: what a cycle reads before it sends
# The ledger status of an intent -> the broker statuses it may stand for.
AGREES = {"sent": OPEN_STATUSES, "adopted": OPEN_STATUSES, "filled": {"filled"}, "canceled": {"canceled"},
          "expired": {"expired"}}


@pytest.fixture
def server(keys):
    with AlpacaTradingServer(KEY, SECRET, cash=100_000, prices=PRICES) as server:
        yield server


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(tmp_path / "state.sqlite")


def alpaca(server: AlpacaTradingServer, fake: FakeTime, **settings) -> AlpacaBroker:
    """The real broker on the local server; retries and the throttle sleep on ``fake``."""
    return broker_for(server, monotonic=fake.monotonic, sleep=fake.sleep, **settings)


def inputs_at(now: dt.datetime, prices: dict[str, float] = PRICES, targets: pd.Series = TARGETS) -> CycleInputs:
    """The session of the server's ``now``, with the server's prices observed at ``now``."""
    series = pd.Series(prices, dtype=float)
    return CycleInputs(STRATEGY, now.astimezone(NEW_YORK).date(), targets, series, now, LIMITS,
                       adv=pd.Series(1e9, index=series.index))


def cid(symbol: str, side: str, now: dt.datetime = DAY1) -> str:
    return client_order_id(STRATEGY, now.date(), symbol, side)


def raw_client(server: AlpacaTradingServer) -> TradingClient:
    """A plain alpaca-py client: someone else (an operator, a twin run) using the same account."""
    return TradingClient(KEY, SECRET, paper=True, url_override=server.url)


def place(server: AlpacaTradingServer, symbol: str, side: str, qty: float, coid: str) -> str:
    """Place a market day order outside the cycle; its broker id."""
    order = raw_client(server).submit_order(MarketOrderRequest(symbol=symbol, qty=qty, side=OrderSide(side),
                                                               time_in_force=TimeInForce.DAY, client_order_id=coid))
    return str(order.id)


def hold(server: AlpacaTradingServer, symbol: str, qty: float, ledger: Ledger | None = None) -> None:
    """Start with a position: bought and filled at the current price, before any cycle. With
    ``ledger``, the strategy bought it in an earlier session (its fill is in the ledger);
    without, it was bought outside Spartan."""
    place(server, symbol, "buy", qty, f"setup-{symbol}")
    (filled,) = server.fill_open_orders()
    if ledger is not None:
        price = float(filled["filled_avg_price"])
        ledger.record_intent(Intent(f"setup-{symbol}", STRATEGY, "2024-03-12", symbol, "buy", qty, price, "filled",
                                    filled["id"], qty, price))


def posts(server: AlpacaTradingServer, since: int = 0) -> list:
    return [r for r in server.requests[since:] if (r.method, r.path) == ("POST", "/v2/orders")]


def before_submit(broker: AlpacaBroker, number: int, hook) -> None:
    """Call ``hook(symbol, side, quantity, client_order_id)`` just before the broker's submission
    ``number`` (0-based), so that an injected fault hits exactly that order's POST."""
    submit, seen = broker.submit_order, []

    def wrapped(symbol, side, quantity, client_order_id):
        if len(seen) == number:
            hook(symbol, side, quantity, client_order_id)
        seen.append(client_order_id)
        return submit(symbol, side, quantity, client_order_id)

    broker.submit_order = wrapped


def assert_ledger_agrees_with_broker(server: AlpacaTradingServer, ledger: Ledger,
                                     others: frozenset[str] = frozenset()) -> dict[str, str]:
    """Every order at the broker (but ``others``, placed outside the cycle) is an intent of the
    ledger, each client_order_id once; every intent's status, broker id, quantity and fills agree
    with the broker; no intent is left unresolved. Returns {client_order_id: ledger status}."""
    orders = server.orders()
    ids = [o["client_order_id"] for o in orders]
    assert len(ids) == len(set(ids)), f"a client_order_id twice at the broker: {ids}"
    at_broker = {o["client_order_id"]: o for o in orders if o["client_order_id"] not in others}
    intents = {i.client_order_id: i for i in ledger.intents(STRATEGY)}
    never_sent = ("rejected", "not_sent", "planned", "withdrawn")  # refused, or a schedule's child not sent
    assert set(at_broker) == {c for c, i in intents.items() if i.status not in never_sent}, (
        "orders at the broker and intents of the ledger differ (a duplicate under another id, or a lost order)")
    for coid, intent in intents.items():
        assert intent.status not in ("intent", "unknown"), f"{coid} left unresolved: {intent}"
        if coid not in at_broker:
            continue
        order = at_broker[coid]
        assert order["status"] in AGREES[intent.status], (coid, intent.status, order["status"])
        assert intent.broker_id == order["id"]
        assert (intent.symbol, intent.side) == (order["symbol"], order["side"])
        assert float(order["qty"]) == pytest.approx(intent.quantity, abs=1e-8)
        assert intent.filled_quantity == pytest.approx(float(order["filled_qty"]))
    return {c: i.status for c, i in intents.items()}


def assert_rerun_sends_nothing(broker: AlpacaBroker, ledger: Ledger, server: AlpacaTradingServer,
                               inputs: CycleInputs, others: frozenset[str] = frozenset()) -> CycleReport:
    before_orders, before_posts = server.orders(), len(posts(server))
    before = assert_ledger_agrees_with_broker(server, ledger, others)
    report = run_cycle(broker, ledger, inputs)
    assert (report.status, report.sent, report.adopted) == ("nothing_to_do", [], [])
    assert len(posts(server)) == before_posts and server.orders() == before_orders
    assert assert_ledger_agrees_with_broker(server, ledger, others) == before
    return report


def weights(server: AlpacaTradingServer, prices: dict[str, float]) -> dict[str, float]:
    equity = float(server.equity)
    return {s: float(q) * prices[s] / equity for s, q in server.positions().items()}


# -- one fault on one submission -----------------------------------------------------------------
def twin_run_places_it(server, symbol, side, quantity, coid):
    """A twin run of the same session places this very order just before us: ours is a duplicate."""
    place(server, symbol, side, round(quantity, 9), coid)


HTML_504 = "<html><body><h1>504 Gateway Time-out</h1></body></html>"
# Injected just before the cycle's second submission (KO; AAPL goes first, MSFT last): name ->
# (inject, the broker's timeout_s, KO's ledger status, the statuses of every POST of the cycle, our retry waits).
FAULTS = {
    "429 twice": (lambda s, *o: s.fail_next(429, times=2), 2.0, "sent", [200, 429, 429, 200, 200], [0.01, 0.02]),
    "504 before processing": (lambda s, *o: s.fail_next(504), 2.0, "sent", [200, 504, 200, 200], [0.01]),
    "504 after processing": (lambda s, *o: s.fail_next(504, after_processing=True), 2.0, "adopted",
                             [200, 504, 422, 200], [0.01]),
    "504 html after processing": (lambda s, *o: s.fail_next(504, body=HTML_504, after_processing=True), 2.0,
                                  "adopted", [200, 504, 422, 200], [0.01]),
    "timeout after accept": (lambda s, *o: s.timeout_after_accept_next("delay", delay_s=5.0), 0.5, "adopted",
                             [200, 200, 200], []),
    "connection dropped after accept": (lambda s, *o: s.timeout_after_accept_next("drop"), 0.5, "adopted",
                                        [200, 200, 200], []),
    "422 duplicate client_order_id": (twin_run_places_it, 2.0, "adopted", [200, 200, 422, 200], []),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_on_a_submission_ends_with_one_order_each_and_the_ledger_agreeing(server, fake, ledger, fault):
    inject, timeout_s, status, post_statuses, sleeps = FAULTS[fault]
    broker = alpaca(server, fake, timeout_s=timeout_s)
    before_submit(broker, 1, lambda *order: inject(server, *order))

    report = run_cycle(broker, ledger, inputs_at(DAY1))

    assert report.status == "traded" and report.rejected == []
    assert [r.status for r in posts(server)] == post_statuses
    assert fake.sleeps == sleeps and sum(fake.sleeps) <= broker.max_total_retry_s
    assert len(server.requests) <= READS + len(post_statuses) + 1  # + the look-up of an unknown outcome
    faulted = cid("KO", "buy")
    assert [a["client_order_id"] for a in report.adopted] == ([faulted] if status == "adopted" else [])
    assert sorted(s["client_order_id"] for s in report.sent) == sorted(
        {cid("AAPL", "buy"), cid("MSFT", "buy"), faulted} - {a["client_order_id"] for a in report.adopted})
    assert assert_ledger_agrees_with_broker(server, ledger) == {
        cid("AAPL", "buy"): "sent", faulted: status, cid("MSFT", "buy"): "sent"}
    assert {o["symbol"]: float(o["qty"]) for o in server.orders()} == pytest.approx(
        {"AAPL": 300, "KO": 600, "MSFT": 75})  # nothing doubled

    assert_rerun_sends_nothing(alpaca(server, fake), ledger, server, inputs_at(DAY1))


def test_insufficient_buying_power_is_rejected_with_the_brokers_reason_and_the_rest_is_sent(server, fake, ledger):
    hold(server, "KO", 1500, ledger)  # 75 % of the equity in KO, 25 000 cash: buys wait for the KO sale's cash
    setup = frozenset()  # the KO purchase is the strategy's own, in the ledger
    broker = alpaca(server, fake)
    targets = pd.Series({"AAPL": 0.4, "KO": 0.3, "MSFT": 0.2})

    report = run_cycle(broker, ledger, inputs_at(DAY1, targets=targets))

    # the sale first (it reduces a position), then AAPL: 40 000 > 25 000 of buying power, then MSFT: 20 000
    assert [(r.body["symbol"], r.body["side"], r.status) for r in posts(server)[1:]] == [
        ("KO", "sell", 200), ("AAPL", "buy", 403), ("MSFT", "buy", 200)]
    assert report.status == "traded" and [s["symbol"] for s in report.sent] == ["KO", "MSFT"]
    (rejected,) = report.rejected
    assert (rejected["symbol"], rejected["side"]) == ("AAPL", "buy")
    assert rejected["reason"].startswith("broker: Alpaca submit_order answered 403: insufficient buying power")
    aapl = ledger.intent(cid("AAPL", "buy"))
    assert aapl.status == "rejected" and aapl.broker_id is None
    assert "403: insufficient buying power (buying_power=25000, cost_basis=40000" in aapl.reason
    assert assert_ledger_agrees_with_broker(server, ledger, setup) == {
        "setup-KO": "filled", cid("KO", "sell"): "sent", cid("AAPL", "buy"): "rejected", cid("MSFT", "buy"): "sent"}

    assert_rerun_sends_nothing(alpaca(server, fake), ledger, server, inputs_at(DAY1, targets=targets), setup)


# -- market state and the kill switch ------------------------------------------------------------
def test_a_closed_market_sends_nothing(server, fake, ledger):
    server.set_market_open(False)
    report = run_cycle(alpaca(server, fake), ledger, inputs_at(DAY1))

    assert report.status == "market_closed" and report.sent == [] and report.adopted == []
    assert posts(server) == [] and server.orders() == [] and ledger.intents(STRATEGY) == []
    assert report.equity == 100_000  # it still reconciled

    server.set_market_open(None)  # the open session again: the same session now trades, once
    assert run_cycle(alpaca(server, fake), ledger, inputs_at(DAY1)).status == "traded"
    assert len(assert_ledger_agrees_with_broker(server, ledger)) == 3


def test_halted_sends_nothing_and_still_cancels_an_order_of_another_session(server, fake, ledger):
    manual = place(server, "AAPL", "buy", 5, "manual-1")
    ledger.set_kill_switch(STRATEGY, KillSwitch.HALTED, "spartan halt: operator")
    mark = len(server.requests)

    report = run_cycle(alpaca(server, fake), ledger, inputs_at(DAY1))

    assert (report.status, report.kill_switch) == ("halted", "halted")
    assert report.sent == [] and posts(server, mark) == [] and ledger.intents(STRATEGY) == []
    assert report.cancelled == ["manual-1"]
    assert [r.status for r in server.calls("DELETE", f"/v2/orders/{manual}")] == [204]
    assert [o["status"] for o in server.orders()] == ["canceled"]


def test_halted_after_a_session_traded_sends_nothing_more(server, fake, ledger):
    broker = alpaca(server, fake)
    assert run_cycle(broker, ledger, inputs_at(DAY1)).status == "traded"
    ledger.set_kill_switch(STRATEGY, KillSwitch.HALTED, "spartan halt: operator")
    sent = len(posts(server))

    report = run_cycle(broker, ledger, inputs_at(DAY1))

    assert report.status == "halted" and report.sent == [] and len(posts(server)) == sent
    assert len(server.orders()) == 3
    assert_ledger_agrees_with_broker(server, ledger)


def test_reducing_sends_only_orders_that_reduce_a_position(server, fake, ledger):
    hold(server, "KO", 1000, ledger)  # 50 % of the equity
    setup = frozenset()  # the KO purchase is the strategy's own, in the ledger
    ledger.set_kill_switch(STRATEGY, KillSwitch.REDUCING, "daily loss limit (set by the test)")
    mark = len(server.requests)
    targets = pd.Series({"AAPL": 0.3, "KO": 0.2, "MSFT": 0.3})

    report = run_cycle(alpaca(server, fake), ledger, inputs_at(DAY1, targets=targets))

    assert report.kill_switch == "reducing" and report.status == "traded"
    assert [(r.body["symbol"], r.body["side"], r.body["qty"], r.status) for r in posts(server, mark)] == [
        ("KO", "sell", 600.0, 200)]
    assert sorted((r["symbol"], r["side"]) for r in report.rejected) == [("AAPL", "buy"), ("MSFT", "buy")]
    assert all(r["reason"].startswith("kill_switch: state REDUCING") for r in report.rejected)
    assert assert_ledger_agrees_with_broker(server, ledger, setup) == {"setup-KO": "filled", cid("KO", "sell"): "sent"}

    assert_rerun_sends_nothing(alpaca(server, fake), ledger, server, inputs_at(DAY1, targets=targets), setup)


def test_a_position_the_ledger_cannot_explain_halts_and_sends_nothing(server, fake, ledger):
    hold(server, "KO", 300)  # bought outside Spartan (by hand, or by another strategy on the account)
    mark = len(server.requests)
    report = run_cycle(alpaca(server, fake), ledger, inputs_at(DAY1))
    assert report.status == "halted" and report.mismatches == [{"symbol": "KO", "broker": 300.0, "ledger": 0.0}]
    assert posts(server, mark) == [] and ledger.intents(STRATEGY) == []
    state, why = ledger.kill_switch(STRATEGY)
    assert state is KillSwitch.HALTED and why == "reconciliation mismatch: KO broker 300 vs ledger fills 0"


# -- open orders found at the start --------------------------------------------------------------
def test_open_orders_of_other_sessions_are_cancelled_at_the_broker(server, fake, ledger):
    broker = alpaca(server, fake)
    day0 = dt.datetime(2024, 3, 12, 15, 0, tzinfo=NEW_YORK)
    server.set_time(day0)  # yesterday: the strategy's own order, left open (it should have expired)
    run_cycle(broker, ledger, inputs_at(day0, targets=pd.Series({"MSFT": 0.3})))
    (yesterday,) = ledger.intents(STRATEGY)
    assert (yesterday.client_order_id, yesterday.status) == (cid("MSFT", "buy", day0), "sent")
    server.set_time(DAY1)
    manual = place(server, "AAPL", "buy", 5, "manual-1")  # and an operator's order
    mark = len(server.requests)

    report = run_cycle(broker, ledger, inputs_at(DAY1))

    assert sorted(report.cancelled) == sorted([yesterday.client_order_id, "manual-1"])
    deletes = [r for r in server.requests[mark:] if r.method == "DELETE"]
    assert sorted((r.path, r.status) for r in deletes) == sorted(
        [(f"/v2/orders/{yesterday.broker_id}", 204), (f"/v2/orders/{manual}", 204)])
    by_cid = {o["client_order_id"]: o for o in server.orders()}
    assert by_cid["manual-1"]["status"] == by_cid[yesterday.client_order_id]["status"] == "canceled"
    assert report.status == "traded" and len(report.sent) == 3  # today's orders, sized without the cancelled ones
    assert {o["symbol"]: float(o["qty"]) for o in server.orders() if o["status"] == "new"} == pytest.approx(
        {"AAPL": 300, "KO": 600, "MSFT": 75})
    # the cycle cancelled yesterday's intent itself: its ledger status must not stay "sent" (open)
    assert ledger.intent(yesterday.client_order_id).status == "canceled"
    assert_ledger_agrees_with_broker(server, ledger, frozenset({"manual-1"}))

    report = assert_rerun_sends_nothing(broker, ledger, server, inputs_at(DAY1), frozenset({"manual-1"}))
    assert report.cancelled == []
    assert ledger.intent(yesterday.client_order_id).status == "canceled"


# -- bounded requests: retries and the throttle --------------------------------------------------
def test_retried_reads_keep_the_cycle_going_within_the_bounds(server, fake, ledger):
    server.fail_next(429, times=2)  # the cycle's first read
    server.fail_next(503)           # and then once more
    broker = alpaca(server, fake)

    report = run_cycle(broker, ledger, inputs_at(DAY1))

    assert report.status == "traded" and len(report.sent) == 3
    assert [r.status for r in server.calls("GET", "/v2/clock")] == [429, 429, 503, 200]
    assert fake.sleeps == [0.01, 0.02, 0.04]
    assert len(server.requests) <= READS + 3 + 3
    assert_ledger_agrees_with_broker(server, ledger)


def test_an_outage_stops_the_cycle_after_bounded_retries_and_a_rerun_recovers(server, fake, ledger):
    broker = alpaca(server, fake, max_retries=3, retry_wait_s=1.0, max_total_retry_s=10.0)
    server.fail_next(503, times=4)

    with pytest.raises(BrokerUnavailable, match=r"503: service unavailable\. Gave up after 4 attempt"):
        run_cycle(broker, ledger, inputs_at(DAY1))

    assert len(server.requests) == 4 and fake.sleeps == [1.0, 2.0, 4.0]
    assert posts(server) == [] and ledger.intents(STRATEGY) == []
    report = run_cycle(broker, ledger, inputs_at(DAY1))
    assert report.status == "traded" and len(report.sent) == 3
    assert_ledger_agrees_with_broker(server, ledger)


def test_a_server_rate_limit_beyond_the_retries_stops_the_cycle_and_the_rerun_sends_the_rest_once(
        server, fake, ledger):
    server.rate_limit(READS + 2)  # room for the reads and two orders in this (real) minute
    broker = alpaca(server, fake, max_retries=3)

    with pytest.raises(RateLimited, match=r"429: rate limit exceeded\. Gave up after 4 attempt"):
        run_cycle(broker, ledger, inputs_at(DAY1))

    assert [r.status for r in posts(server)] == [200, 200] + [429] * 4  # bounded: 1 + max_retries
    assert fake.sleeps == [0.01, 0.02, 0.04]
    statuses = {i.client_order_id: i.status for i in ledger.intents(STRATEGY)}
    assert statuses == {cid("AAPL", "buy"): "sent", cid("KO", "buy"): "sent", cid("MSFT", "buy"): "unknown"}
    assert [o["client_order_id"] for o in server.orders()] == [cid("AAPL", "buy"), cid("KO", "buy")]

    server.rate_limit(None)  # the next minute
    report = run_cycle(broker, ledger, inputs_at(DAY1))

    assert {"client_order_id": cid("MSFT", "buy"), "outcome": "not_sent"} in report.resolved
    assert [s["client_order_id"] for s in report.sent] == [cid("MSFT", "buy")]
    assert assert_ledger_agrees_with_broker(server, ledger) == {
        cid("AAPL", "buy"): "sent", cid("KO", "buy"): "sent", cid("MSFT", "buy"): "sent"}
    assert_rerun_sends_nothing(broker, ledger, server, inputs_at(DAY1))


def test_the_throttle_spaces_a_cycles_requests(server, fake, ledger):
    per_minute = 5
    broker = alpaca(server, fake, requests_per_minute=per_minute)

    report = run_cycle(broker, ledger, inputs_at(DAY1))

    assert report.status == "traded" and len(report.sent) == 3
    n = len(server.requests)
    assert n > per_minute and all(r.status == 200 for r in server.requests)
    assert fake.sleeps and fake.now >= 60.0 * ((n - 1) // per_minute)  # n requests need that long at 5 a minute
    assert_ledger_agrees_with_broker(server, ledger)


# -- several sessions ----------------------------------------------------------------------------
def test_sessions_converge_to_the_targets_and_resolve_the_previous_sessions_intents(server, fake, ledger):
    broker = alpaca(server, fake)
    first = run_cycle(broker, ledger, inputs_at(DAY1))
    assert first.status == "traded" and len(first.sent) == 3
    server.fill_open_orders()
    assert weights(server, PRICES) == pytest.approx(dict(TARGETS), abs=1e-6)

    prices = {"AAPL": 105.0, "KO": 49.0, "MSFT": 410.0}
    server.set_time(DAY2)
    server.set_prices(prices)
    second = run_cycle(broker, ledger, inputs_at(DAY2, prices))

    day1 = ledger.intents(STRATEGY, str(DAY1.date()))
    assert [(i.symbol, i.status) for i in day1] == [("AAPL", "filled"), ("KO", "filled"), ("MSFT", "filled")]
    assert all(i.filled_quantity == pytest.approx(i.quantity) and i.filled_avg_price == PRICES[i.symbol]
               for i in day1)
    assert second.status == "traded" and second.equity == pytest.approx(10_000 + 300 * 105 + 600 * 49 + 75 * 410)
    assert sorted((s["symbol"], s["side"]) for s in second.sent) == [("AAPL", "sell"), ("KO", "buy"),
                                                                      ("MSFT", "sell")]
    assert_ledger_agrees_with_broker(server, ledger)
    server.fill_open_orders()
    assert weights(server, prices) == pytest.approx(dict(TARGETS), abs=1e-4)

    server.set_time(DAY3)  # the book is at its targets: nothing to send; day 2's intents resolve
    third = run_cycle(broker, ledger, inputs_at(DAY3, prices))
    assert third.status == "nothing_to_do" and third.sent == []
    assert {i.status for i in ledger.intents(STRATEGY)} == {"filled"}
    assert len(server.orders()) == 6
    assert_ledger_agrees_with_broker(server, ledger)


def test_partial_fills_and_expired_day_orders_are_recorded_and_the_next_session_completes_the_book(
        server, fake, ledger):
    broker = alpaca(server, fake)
    run_cycle(broker, ledger, inputs_at(DAY1))
    ids = {o["symbol"]: o["id"] for o in server.orders()}
    server.fill_order(ids["AAPL"], None, 100)
    server.fill_order(ids["KO"], 200, 50)  # a third of it
    assert sorted(server.expire_day_orders()) == sorted([ids["KO"], ids["MSFT"]])  # the close

    server.set_time(DAY2)
    second = run_cycle(broker, ledger, inputs_at(DAY2))

    day1 = {i.symbol: i for i in ledger.intents(STRATEGY, str(DAY1.date()))}
    assert {s: (i.status, i.filled_quantity) for s, i in day1.items()} == {
        "AAPL": ("filled", 300), "KO": ("expired", 200), "MSFT": ("expired", 0)}
    assert day1["KO"].filled_avg_price == 50
    assert {s["symbol"]: s["quantity"] for s in second.sent} == pytest.approx({"KO": 400, "MSFT": 75})
    assert_rerun_sends_nothing(broker, ledger, server, inputs_at(DAY2))
    server.fill_open_orders()
    assert weights(server, PRICES) == pytest.approx(dict(TARGETS), abs=1e-6)
