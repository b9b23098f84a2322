"""Execution algorithms at Alpaca (issue 18): the trading cycle works a schedule itself, in the
session it runs in, through the real alpaca-py client against the local Alpaca trading server on
127.0.0.1. Each child is a limit day order for whole shares, sent when its first bar starts; its
fills are polled until its last bar ends; what is left then is cancelled. Tested with partial
fills, a rejected child and a crash mid-schedule, after which a re-run completes the schedule
without sending any child twice.

Time is the server's: the cycle's sleep moves the server's clock (and, as the market would, fills
part of each open child at a marketable price), so no test waits for real.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pandas as pd
import pytest

from research_lib.config import ExecutionConfig
from research_lib.trading import Ledger, run_cycle
from research_lib.trading._working import bar_start
from tests.servers.alpaca_trading import DEFAULT_NOW, NEW_YORK, AlpacaTradingServer
from tests.test_alpaca_broker import KEY, SECRET, FakeTime, keys  # noqa: F401 (keys is a fixture)
from tests.test_alpaca_broker import broker_for as real_broker
from tests.test_trading_alpaca import STRATEGY, assert_ledger_agrees_with_broker, inputs_at

PRICES = {"AAPL": 100.0, "KO": 50.0}
TARGETS = pd.Series({"AAPL": 0.3, "KO": 0.3})
TWAP = ExecutionConfig(algorithm="twap", window_start_bar=3, window_end_bar=19, bars_per_slice=3)  # to 11:05


class Crash(BaseException):
    """The process dies here (raised from the cycle's sleep: nothing after it runs)."""


class Market:
    """The cycle's sleep: moves the server's clock, and each time fills ``share`` of every open
    child's remaining whole shares at the current price (marketable inside its limit)."""

    def __init__(self, server: AlpacaTradingServer, share: float = 0.5, crash_after: int | None = None):
        self.server, self.share, self.crash_after, self.sleeps = server, share, crash_after, 0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.crash_after is not None and self.sleeps > self.crash_after:
            raise Crash()
        now = self.server._now + dt.timedelta(seconds=seconds)
        self.server.set_time(now)
        for order in self.server.orders():
            if order["status"] in ("new", "accepted", "partially_filled") and order["type"] == "limit":
                left = Decimal(order["qty"]) - Decimal(order["filled_qty"])
                take = int(left * Decimal(str(self.share)))
                if take >= 1:
                    self.server.fill_order(order["id"], float(take), PRICES[order["symbol"]])


@pytest.fixture
def server(keys):
    with AlpacaTradingServer(KEY, SECRET, cash=100_000, prices=PRICES) as server:
        yield server


def broker_for(server: AlpacaTradingServer):
    """The real broker on the local server; its throttle and retries wait on a fake clock."""
    fake = FakeTime()
    return real_broker(server, monotonic=fake.monotonic, sleep=fake.sleep)


def worked_inputs(now: dt.datetime = DEFAULT_NOW, execution: ExecutionConfig = TWAP):
    return dataclasses.replace(inputs_at(now, PRICES, TARGETS), execution=execution)


def children(server: AlpacaTradingServer) -> list[dict]:
    return [o for o in server.orders() if o["client_order_id"].startswith(STRATEGY)]


def test_a_twap_schedule_at_alpaca_sends_each_child_at_its_bar_and_cancels_what_is_left(server, tmp_path):
    ledger, market = Ledger(tmp_path / "state.sqlite"), Market(server)
    report = run_cycle(broker_for(server), ledger, worked_inputs(), sleep=market.sleep)
    assert report.status == "traded" and {s["symbol"] for s in report.scheduled} == set(PRICES)
    session = DEFAULT_NOW.date()
    for schedule in ledger.schedules(STRATEGY, str(session)):
        assert schedule.slices[0]["bar"] == 7, "the window starts at the bar after the cycle's start (10:00)"
        assert all(float(c["quantity"]).is_integer() for c in schedule.slices), "limit orders are whole shares"
        assert sum(c["quantity"] for c in schedule.slices) == int(0.3 * 100_000 / PRICES[schedule.symbol])
    sent = children(server)
    assert len(sent) == sum(len(s.slices) for s in ledger.schedules(STRATEGY, str(session)))
    by_id = {c["client_order_id"]: c for s in ledger.schedules(STRATEGY, str(session)) for c in s.slices}
    for order in sent:
        child = by_id[order["client_order_id"]]
        submitted = dt.datetime.fromisoformat(order["submitted_at"].replace("Z", "+00:00"))
        assert submitted >= bar_start(session, child["bar"]), "never sent before its bars"
        assert order["type"] == "limit" and order["time_in_force"] == "day"
        limit = float(order["limit_price"])
        assert limit <= child["limit_price"] + 1e-9 and round(limit, 2) == limit, "a buy's limit on the cent, inside"
        assert order["status"] in ("filled", "canceled"), "nothing left working after the schedule"
        if order["status"] == "canceled":  # partly filled, cancelled when its bars ended
            canceled = dt.datetime.fromisoformat(order["canceled_at"].replace("Z", "+00:00"))
            assert canceled >= bar_start(session, child["bar"] + child["bars"])
            assert 0 < float(order["filled_qty"]) < float(order["qty"])
    assert any(o["status"] == "canceled" for o in sent), "some child was cut off part-filled at its bars' end"
    assert_ledger_agrees_with_broker(server, ledger)
    again = run_cycle(broker_for(server), ledger, worked_inputs(server._now), sleep=market.sleep)
    assert again.sent == [] and len(children(server)) == len(sent), "a re-run sends nothing more"


def test_a_rejected_child_is_recorded_and_the_schedule_goes_on(server, tmp_path):
    ledger, market, broker = Ledger(tmp_path / "state.sqlite"), Market(server, share=1.0), broker_for(server)
    submit = broker.submit_order

    def refuse_the_third(*args, **kwargs):  # the broker refuses the third child's POST
        if len(children(server)) == 2 and not server.calls("POST", "/v2/orders")[2:]:
            server.fail_next(403, body={"code": 40310000, "message": "insufficient buying power"})
        return submit(*args, **kwargs)

    broker.submit_order = refuse_the_third
    report = run_cycle(broker, ledger, worked_inputs(), sleep=market.sleep)
    refused = [i for i in ledger.intents(STRATEGY) if i.status == "rejected"]
    assert len(refused) == 1 and "insufficient buying power" in refused[0].reason
    assert any("insufficient buying power" in r["reason"] for r in report.rejected)
    planned = sum(len(s.slices) for s in ledger.schedules(STRATEGY, str(DEFAULT_NOW.date())))
    assert len(children(server)) == planned - 1, "every other child was sent"
    assert_ledger_agrees_with_broker(server, ledger)


@pytest.mark.parametrize("crash_after", [2, 9])  # with children open, and later with some done
def test_a_crash_mid_schedule_reruns_to_completion_without_sending_a_child_twice(server, tmp_path, crash_after):
    ledger = Ledger(tmp_path / "state.sqlite")
    with pytest.raises(Crash):
        run_cycle(broker_for(server), ledger, worked_inputs(), sleep=Market(server, crash_after=crash_after).sleep)
    before = {o["client_order_id"] for o in children(server)}
    resumed = run_cycle(broker_for(server), ledger, worked_inputs(server._now), sleep=Market(server).sleep)
    assert resumed.scheduled == [], "the recorded schedule is resumed, not planned again"
    ids = [o["client_order_id"] for o in children(server)]
    assert len(ids) == len(set(ids)) and before <= set(ids)
    planned = {c["client_order_id"] for s in ledger.schedules(STRATEGY, str(DEFAULT_NOW.date())) for c in s.slices}
    assert set(ids) == planned, "every child sent once, the schedule completed"
    assert all(o["status"] in ("filled", "canceled") for o in children(server))
    assert_ledger_agrees_with_broker(server, ledger)


def test_the_close_ends_the_work_and_withdraws_the_children_not_sent(server, tmp_path):
    ledger = Ledger(tmp_path / "state.sqlite")
    late = dt.datetime(2024, 3, 13, 15, 40, tzinfo=NEW_YORK)  # past the window: worked up to the close
    server.set_time(late)
    market = Market(server, share=0.0)

    def close_early(seconds):
        market.sleep(seconds)
        if server._now >= dt.datetime(2024, 3, 13, 15, 50, tzinfo=NEW_YORK):
            server.set_market_open(False)  # an early close: the market shuts before the schedule is done
            server.expire_day_orders()

    every_bar = ExecutionConfig(algorithm="twap", window_start_bar=3, window_end_bar=78, bars_per_slice=1)
    report = run_cycle(broker_for(server), ledger, worked_inputs(late, every_bar), sleep=close_early)
    statuses = {i.status for i in ledger.intents(STRATEGY)}
    assert report.scheduled and statuses <= {"expired", "withdrawn", "canceled"} and "withdrawn" in statuses
    assert_ledger_agrees_with_broker(server, ledger)
    assert all(o["status"] != "new" for o in children(server))


# ------------------------------------------------------------------ what an operator or the market does meanwhile

def test_a_reducing_kill_switch_set_while_working_stops_the_buys_still_to_come(server, tmp_path):
    from research_lib.risk import KillSwitch
    ledger, market, operator = Ledger(tmp_path / "state.sqlite"), Market(server), Ledger(tmp_path / "state.sqlite")
    at_switch = []

    def sleep(seconds):
        market.sleep(seconds)
        if market.sleeps == 1:  # `spartan` from another shell, while the schedule works
            operator.set_kill_switch(STRATEGY, KillSwitch.REDUCING, "operator: reduce only")
            at_switch.append(len(children(server)))
    report = run_cycle(broker_for(server), ledger, worked_inputs(), sleep=sleep)
    later = children(server)[at_switch[0]:]
    assert later == [] and any("REDUCING" in r["reason"] for r in report.rejected)


def test_a_halt_while_working_cancels_what_works_and_the_ledger_keeps_every_fill(server, tmp_path):
    from research_lib.risk import KillSwitch
    ledger, market, operator = Ledger(tmp_path / "state.sqlite"), Market(server, share=1.0), Ledger(tmp_path / "state.sqlite")

    def sleep(seconds):
        market.sleep(seconds)  # the children working fill whole here
        if market.sleeps == 2:
            operator.set_kill_switch(STRATEGY, KillSwitch.HALTED, "operator halt")
    report = run_cycle(broker_for(server), ledger, worked_inputs(), sleep=sleep)
    assert report.status == "halted" and report.kill_switch == "halted"
    assert all(o["status"] != "new" for o in children(server))
    statuses = assert_ledger_agrees_with_broker(server, ledger)
    assert "withdrawn" in statuses.values() and "filled" in statuses.values()


def test_a_cancel_refused_because_the_child_just_filled_records_the_fill_and_the_work_goes_on(server, tmp_path):
    ledger, market, broker = Ledger(tmp_path / "state.sqlite"), Market(server), broker_for(server)
    cancel = broker.cancel_order

    def fills_first(broker_id):  # the rest fills between the last read and the DELETE: Alpaca answers 422
        order = next(o for o in server.orders() if o["id"] == broker_id)
        server.fill_order(broker_id, None, PRICES[order["symbol"]])
        return cancel(broker_id)

    broker.cancel_order = fills_first
    run_cycle(broker, ledger, worked_inputs(), sleep=market.sleep)
    planned = {c["client_order_id"] for s in ledger.schedules(STRATEGY, str(DEFAULT_NOW.date())) for c in s.slices}
    assert {o["client_order_id"] for o in children(server)} == planned
    assert {o["status"] for o in children(server)} == {"filled"}
    assert_ledger_agrees_with_broker(server, ledger)


def test_a_child_whose_answer_was_lost_is_found_adopted_and_cancelled_at_its_end(server, tmp_path):
    from tests.test_alpaca_broker import FakeTime
    ledger, market, fake = Ledger(tmp_path / "state.sqlite"), Market(server, share=0.3), FakeTime()
    broker = real_broker(server, timeout_s=0.5, monotonic=fake.monotonic, sleep=fake.sleep)
    submit, sent = broker.submit_order, []

    def answer_lost(*args, **kwargs):  # stored by Alpaca, the answer lost, and the first lookup misses it
        sent.append(args)
        if len(sent) != 2:
            return submit(*args, **kwargs)
        server.timeout_after_accept_next("delay", 1.0)
        try:
            return submit(*args, **kwargs)
        finally:
            server.fail_next(404, body={"code": 40410000, "message": "order not found"})

    broker.submit_order = answer_lost
    run_cycle(broker, ledger, worked_inputs(), sleep=market.sleep)
    assert all(o["status"] in ("filled", "canceled") for o in children(server)), "none works past its bars"
    assert_ledger_agrees_with_broker(server, ledger)


def test_a_cycle_started_after_the_window_works_the_bars_left_up_to_the_close(server, tmp_path):
    ledger, late = Ledger(tmp_path / "state.sqlite"), dt.datetime(2024, 3, 13, 15, 0, tzinfo=NEW_YORK)
    server.set_time(late)
    run_cycle(broker_for(server), ledger, worked_inputs(late), sleep=Market(server).sleep)
    for schedule in ledger.schedules(STRATEGY, str(late.date())):
        bars = [c["bar"] for c in schedule.slices]
        assert bars == [67, 70, 73, 76], "a child every 15 minutes from 15:05 to the close, not one burst"
