"""The simulated broker: next-session fills with the backtest's costs, books that balance,
idempotent client ids, persistence in SQLite, and fault hooks for the trading cycle."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.broker import (BrokerUnavailable, DuplicateClientOrderId, InsufficientBuyingPower, OrderRejected,
                                 RateLimited, SimBroker, UnknownOutcome)
from tests.conftest import REPO, make_prices

NAN = float("nan")


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """Five sessions from Thursday 2020-01-02; NEW starts on the third, OLD ends after the third."""
    return make_prices({"AAA": [100.0, 110.0, 120.0, 90.0, 95.0],
                        "NEW": [NAN, NAN, 20.0, 21.0, 22.0],
                        "OLD": [50.0, 51.0, 52.0, NAN, NAN]}, start="2020-01-02")


def day(prices: pd.DataFrame, i: int) -> pd.Timestamp:
    return prices.index[i]


def assert_books_balance(sim: SimBroker, prices: pd.DataFrame) -> None:
    """Every fill is at the close of the session after its order's submission with the model's
    costs, each filled order has exactly one fill, a holding whose prices end is closed at its last
    close on the first session without one, and cash and positions are the sum of both."""
    close, sessions = prices["close"], prices.index
    orders = {o.broker_id: o for o in sim.orders()}
    fills = sim.fills()
    fills_per_order = Counter(f.broker_id for f in fills)
    assert set(fills_per_order) <= set(orders) and set(fills_per_order.values()) <= {1}
    for order in orders.values():
        assert (order.status == "filled") == (order.broker_id in fills_per_order), order
    cash, held, sim_date = sim.starting_cash, defaultdict(float), sim.sim_date
    closures = []  # a holding whose prices end: closed at its last close on the first session without one
    for day in sessions[sessions <= sim_date]:
        for fill in [f for f in fills if pd.Timestamp(f.session) == day]:
            order = orders[fill.broker_id]
            submitted = sessions.get_loc(pd.Timestamp(order.submitted_at.date()))
            assert pd.Timestamp(fill.session) == sessions[submitted + 1] <= sim_date
            sign = 1.0 if fill.side == "buy" else -1.0
            reference = close.at[pd.Timestamp(fill.session), fill.symbol]
            assert fill.price == pytest.approx(reference * (1 + sign * sim.spread_bps / 1e4), rel=1e-12)
            assert fill.commission == pytest.approx(sim.cost_bps / 1e4 * fill.quantity * reference, rel=1e-12)
            assert (fill.quantity, fill.price) == (order.filled_quantity, order.filled_avg_price)
            cash += -sign * fill.quantity * fill.price - fill.commission
            held[fill.symbol] += sign * fill.quantity
        for symbol, quantity in list(held.items()):
            if abs(quantity) > 1e-9 and np.isnan(close.at[day, symbol]):
                last = close[symbol].loc[:day].dropna().iloc[-1]
                cash += quantity * last * (1 + (sim.delisting_return or 0.0))
                closures.append((day.date(), symbol, quantity, last))
                held[symbol] = 0.0
    assert [(d.session, d.symbol) for d in sim.delistings()] == [(d, s) for d, s, _, _ in closures]
    for closure, (_, _, quantity, last) in zip(sim.delistings(), closures):
        assert (closure.quantity, closure.price) == (pytest.approx(quantity, rel=1e-12), last)
    account, positions = sim.account(), sim.positions()
    assert account.cash == pytest.approx(cash, rel=1e-12, abs=1e-9)  # cash moves by fills and delistings only
    for symbol in set(held) | set(positions):
        reported = positions[symbol].quantity if symbol in positions else 0.0
        assert reported == pytest.approx(held[symbol], abs=1e-9), symbol
    marks = close.ffill().loc[sim_date]
    assert account.equity == pytest.approx(cash + sum(p.quantity * marks[s] for s, p in positions.items()), rel=1e-12)
    assert all(o.submitted_at.date() == sim_date.date() for o in sim.open_orders())  # none left behind


def test_an_order_fills_at_the_next_sessions_close_with_the_backtest_costs(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices, starting_cash=10_000.0, cost_bps=10.0, spread_bps=5.0)
    order = sim.submit_order("AAA", "buy", 10, "buy-aaa")
    assert (order.status, order.filled_quantity, sim.account().cash) == ("new", 0.0, 10_000.0)

    sim.advance_to(day(prices, 1))
    filled = sim.order_by_client_id("buy-aaa")
    buy_price, buy_commission = 110.0 * 1.0005, 10e-4 * 10 * 110.0
    assert (filled.status, filled.filled_quantity) == ("filled", 10)
    assert filled.filled_avg_price == pytest.approx(buy_price)
    assert sim.account().cash == pytest.approx(10_000.0 - 10 * buy_price - buy_commission)
    assert sim.positions()["AAA"].avg_entry_price == pytest.approx(buy_price)

    sim.submit_order("AAA", "sell", 4, "sell-aaa")
    sim.advance_to(day(prices, 2))
    assert sim.order_by_client_id("sell-aaa").filled_avg_price == pytest.approx(120.0 * 0.9995)
    expected_cash = 10_000.0 - 10 * buy_price - buy_commission + 4 * 120.0 * 0.9995 - 10e-4 * 4 * 120.0
    account = sim.account()
    assert account.cash == pytest.approx(expected_cash)
    assert account.equity == pytest.approx(expected_cash + 6 * 120.0)
    position = sim.positions()["AAA"]
    assert (position.quantity, position.market_value) == (6, pytest.approx(720.0))
    assert position.avg_entry_price == pytest.approx(buy_price)  # a sale leaves the entry price
    # total costs are (cost_bps + spread_bps) per unit traded, as in the backtest
    traded = 10 * 110.0 + 4 * 120.0
    assert 10_000.0 - 10 * 110.0 + 4 * 120.0 - account.cash == pytest.approx(15e-4 * traded)
    assert_books_balance(sim, prices)


def test_orders_fill_at_the_first_session_after_submission_in_submission_order(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices, starting_cash=10_000.0, cost_bps=0.0)
    for client_order_id in ("first", "second", "third"):
        sim.submit_order("AAA", "buy", 1, client_order_id)
    sim.advance_to(day(prices, 3))  # three sessions at once: the orders still fill at the first
    assert [f.client_order_id for f in sim.fills()] == ["first", "second", "third"]
    assert {(f.session, f.price) for f in sim.fills()} == {(day(prices, 1).date(), 110.0)}
    assert sim.account().cash == 10_000.0 - 3 * 110.0
    assert sim.sim_date == day(prices, 3)


def test_an_order_without_a_price_at_its_fill_session_expires_with_a_reason(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices, start=day(prices, 2))
    sim.submit_order("OLD", "buy", 1, "old")
    with pytest.raises(OrderRejected, match="NEW has no close on 2020-01-02: it is not tradable then"):
        SimBroker(tmp_path / "other.sqlite", prices).submit_order("NEW", "buy", 1, "new")
    sim.step()
    assert sim.order_by_client_id("old").status == "expired"
    assert sim.order_reason("old") == "OLD has no close on 2020-01-07, its fill session"
    assert sim.account().cash == 1_000_000.0
    assert_books_balance(sim, prices)


@st.composite
def trading_days(draw):
    """Up to four sessions of actions: (symbol, side, quantity) orders, or "cancel" the oldest open order."""
    order = st.tuples(st.sampled_from(["AAA", "NEW", "OLD", "XYZ"]), st.sampled_from(["buy", "sell"]),
                      st.one_of(st.integers(1, 120), st.floats(0.001, 80.0)))
    return draw(st.lists(st.lists(st.one_of(order, st.just("cancel")), max_size=5), min_size=1, max_size=4))


@settings(max_examples=25, deadline=None)
@given(days=trading_days(), allow_short=st.booleans(), spread_bps=st.sampled_from([0.0, 7.5]))
def test_cash_and_positions_always_reconcile_with_the_fills(prices, days, allow_short, spread_bps):
    with tempfile.TemporaryDirectory() as folder:
        sim = SimBroker(Path(folder) / "state.sqlite", prices, starting_cash=5_000.0, spread_bps=spread_bps,
                        allow_short=allow_short)
        n = 0
        for actions in days:
            for action in actions:
                if action == "cancel":
                    if sim.open_orders():
                        sim.cancel_order(sim.open_orders()[0].broker_id)
                    continue
                n += 1
                try:
                    sim.submit_order(*action, client_order_id=f"order-{n}")
                except (InsufficientBuyingPower, OrderRejected):
                    assert sim.order_by_client_id(f"order-{n}") is None  # a refusal stores nothing
            sim.step()
            if not allow_short:
                assert all(p.quantity > 0 for p in sim.positions().values())
        assert_books_balance(sim, prices)


def test_a_client_order_id_is_unique_over_the_accounts_whole_history(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices)
    sim.submit_order("AAA", "buy", 1, "filled-one")
    sim.submit_order("AAA", "buy", 1, "canceled-one")
    sim.cancel_order(sim.order_by_client_id("canceled-one").broker_id)
    sim.step()
    for used in ("filled-one", "canceled-one"):
        with pytest.raises(DuplicateClientOrderId, match=f"client_order_id '{used}' was already used"):
            sim.submit_order("AAA", "sell", 1, used)
    assert sim.order_by_client_id("filled-one").status == "filled"
    assert sim.order_by_client_id("never-sent") is None
    assert len(sim.orders()) == 2
    with pytest.raises(ValueError, match="it must have 1 to 48"):
        sim.submit_order("AAA", "buy", 1, "x" * 49)
    other = SimBroker(tmp_path / "state.sqlite", prices, account_id="other")  # ids are per account
    assert other.submit_order("AAA", "buy", 1, "filled-one").status == "new"


def test_buys_beyond_buying_power_are_refused_and_open_sells_fund_buys(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices, starting_cash=1_000.0, cost_bps=10.0)
    with pytest.raises(InsufficientBuyingPower, match=r"buy of 10 AAA costs 1,001.00 .* buying power is 1,000.00"):
        sim.submit_order("AAA", "buy", 10, "too-big")
    assert sim.order_by_client_id("too-big") is None
    sim.submit_order("AAA", "buy", 9, "fits")
    assert sim.account().buying_power == pytest.approx(1_000.0 - 900.0 * 1.001)
    with pytest.raises(InsufficientBuyingPower):
        sim.submit_order("OLD", "buy", 2, "open-buys-count")
    sim.step()
    sim.submit_order("AAA", "sell", 9, "sell-all")  # the sale's proceeds fund a buy in the same cycle
    assert sim.account().buying_power == pytest.approx(sim.account().cash + 9 * 110.0 * 0.999)
    sim.submit_order("OLD", "buy", 19, "rebalance")
    with pytest.raises(InsufficientBuyingPower):
        sim.submit_order("OLD", "buy", 2, "beyond")
    sim.step()
    assert set(sim.positions()) == {"OLD"}
    assert_books_balance(sim, prices)


def test_a_sell_beyond_the_position_is_refused_unless_shorting_is_allowed(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices)
    sim.submit_order("AAA", "buy", 5, "buy")
    sim.step()
    sim.submit_order("AAA", "sell", 3, "sell-3")
    with pytest.raises(OrderRejected, match="exceeds the 2 shares held less open sells.*allow_short=True"):
        sim.submit_order("AAA", "sell", 3, "sell-3-more")
    shorting = SimBroker(tmp_path / "state.sqlite", prices, account_id="short", allow_short=True)
    shorting.submit_order("AAA", "sell", 3, "short")
    shorting.step()
    short = shorting.positions()["AAA"]
    assert (short.quantity, short.avg_entry_price, short.market_value) == (-3, 110.0, pytest.approx(-330.0))
    assert shorting.account().equity == pytest.approx(1_000_000.0 - 10e-4 * 330.0)
    shorting.submit_order("AAA", "buy", 5, "turn-long")
    shorting.step()
    assert (shorting.positions()["AAA"].quantity, shorting.positions()["AAA"].avg_entry_price) == (2, 120.0)
    shorting.submit_order("AAA", "buy", 2, "add")
    shorting.step()
    assert shorting.positions()["AAA"].avg_entry_price == pytest.approx((2 * 120.0 + 2 * 90.0) / 4)


def test_state_survives_a_new_broker_on_the_same_file(tmp_path, prices):
    db = tmp_path / "state.sqlite"
    sim = SimBroker(db, prices, starting_cash=20_000.0, spread_bps=5.0)
    sim.submit_order("AAA", "buy", 50, "a")
    sim.step()
    sim.submit_order("AAA", "sell", 20, "b")
    sim.submit_order("OLD", "buy", 10, "c")
    snapshot = (sim.sim_date, sim.account(), sim.positions(), sim.orders(), sim.fills(), sim.clock())

    reopened = SimBroker(db, prices, starting_cash=20_000.0, spread_bps=5.0)
    assert (reopened.sim_date, reopened.account(), reopened.positions(), reopened.orders(), reopened.fills(),
            reopened.clock()) == snapshot
    assert [o.client_order_id for o in reopened.open_orders()] == ["b", "c"]
    reopened.step()
    assert_books_balance(reopened, prices)
    with pytest.raises(ValueError, match=r"created with spread_bps=5.0; got 0.0\. Pass the stored value"):
        SimBroker(db, prices, starting_cash=20_000.0)
    with pytest.raises(ValueError, match="created with start_session='2020-01-02'; got '2020-01-03'"):
        SimBroker(db, prices, starting_cash=20_000.0, spread_bps=5.0, start="2020-01-03")
    with pytest.raises(ValueError, match="stored sim date of account 'sim' 2020-01-06 is not a session"):
        SimBroker(db, prices.iloc[:2], starting_cash=20_000.0, spread_bps=5.0)
    with pytest.raises(ValueError, match=r"holds or has open orders in \['AAA'\], which the prices lack"):
        SimBroker(db, prices.drop(columns="AAA", level="symbol"), starting_cash=20_000.0, spread_bps=5.0)


def test_the_sim_never_goes_back_and_only_stands_on_sessions(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices, start="2020-01-04")  # a Saturday: starts on Monday
    assert sim.sim_date == pd.Timestamp("2020-01-06")
    with pytest.raises(ValueError, match="session_date 2020-01-03 is before the sim date 2020-01-06"):
        sim.advance_to("2020-01-03")
    with pytest.raises(ValueError, match=r"2020-01-11 is not a session .* 2020-01-08 and none"):
        sim.advance_to(dt.date(2020, 1, 11))
    assert sim.advance_to("2020-01-06") == pd.Timestamp("2020-01-06")  # standing still is allowed
    assert sim.advance_to("2020-01-08") == sim.sim_date == pd.Timestamp("2020-01-08")
    with pytest.raises(ValueError, match="start 2021-01-01 is after the last session"):
        SimBroker(tmp_path / "other.sqlite", prices, start="2021-01-01")


def test_the_clock_stands_at_the_close_and_is_open_while_a_session_follows(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices, start="2020-01-03")  # a Friday
    clock = sim.clock()
    assert clock.now.isoformat() == "2020-01-03T16:00:00-05:00"
    assert clock.is_open
    assert (clock.next_open.isoformat(), clock.next_close.isoformat()) == ("2020-01-06T09:30:00-05:00",
                                                                          "2020-01-06T16:00:00-05:00")
    assert sim.submit_order("AAA", "buy", 1, "x").submitted_at == clock.now
    sim.advance_to(day(prices, -1))
    assert not sim.clock().is_open
    with pytest.raises(OrderRejected, match="2020-01-08 is the last session of the price history"):
        sim.submit_order("AAA", "buy", 1, "too-late")
    with pytest.raises(ValueError, match="last session"):
        sim.step()


def test_cancel_stops_an_open_order_and_refuses_a_filled_one(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices)
    keep = sim.submit_order("AAA", "buy", 1, "keep")
    drop = sim.submit_order("AAA", "buy", 2, "drop")
    sim.cancel_order(drop.broker_id)
    assert [o.client_order_id for o in sim.open_orders()] == ["keep"]
    sim.step()
    assert sim.order_by_client_id("drop").status == "canceled" and sim.positions()["AAA"].quantity == 1
    with pytest.raises(OrderRejected, match=f"order {keep.broker_id} is filled"):
        sim.cancel_order(keep.broker_id)
    with pytest.raises(OrderRejected, match="no order with broker_id 'nope'"):
        sim.cancel_order("nope")


def test_injected_faults_fail_the_next_calls_then_clear(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices)
    sim.fail_next(RateLimited)
    with pytest.raises(RateLimited, match="simulated RateLimited on account"):
        sim.account()
    assert sim.account().cash == 1_000_000.0

    sim.fail_next(BrokerUnavailable, times=2, call="submit_order")
    assert sim.clock().is_open  # other calls are not affected
    for _ in range(2):
        with pytest.raises(BrokerUnavailable):
            sim.submit_order("AAA", "buy", 1, "retried")
        assert sim.order_by_client_id("retried") is None  # nothing was done
    assert sim.submit_order("AAA", "buy", 1, "retried").status == "new"

    with pytest.raises(ValueError, match=r"valid errors: \['RateLimited', 'BrokerUnavailable', 'UnknownOutcome'\]"):
        sim.fail_next(OrderRejected)
    with pytest.raises(ValueError, match="valid calls"):
        sim.fail_next(RateLimited, call="submit")


def test_an_unknown_outcome_on_submit_leaves_the_order_stored_for_lookup(tmp_path, prices):
    sim = SimBroker(tmp_path / "state.sqlite", prices)
    sim.fail_next(UnknownOutcome, call="submit_order")
    with pytest.raises(UnknownOutcome, match="look the order up with order_by_client_id"):
        sim.submit_order("AAA", "buy", 3, "lost-answer")
    stored = sim.order_by_client_id("lost-answer")
    assert (stored.status, stored.quantity) == ("new", 3)
    with pytest.raises(DuplicateClientOrderId):  # a blind resend is recognised, never a second order
        sim.submit_order("AAA", "buy", 3, "lost-answer")
    sim.fail_next(UnknownOutcome, call="submit_order")
    with pytest.raises(UnknownOutcome):  # the broker refused it, and the refusal was lost
        sim.submit_order("AAA", "buy", 1e9, "refused")
    assert sim.order_by_client_id("refused") is None
    sim.fail_next(UnknownOutcome, call="cancel_order")
    with pytest.raises(UnknownOutcome):
        sim.cancel_order(stored.broker_id)
    assert sim.order_by_client_id("lost-answer").status == "canceled"


_CHILD = """
import random, sys
import pandas as pd
from research_lib.broker import BrokerError, SimBroker
db, prices_path, seed = sys.argv[1:4]
prices = pd.read_pickle(prices_path)
sim = SimBroker(db, prices, starting_cash=50_000.0, spread_bps=5.0)
rng = random.Random(int(seed))
symbols = list(prices["close"].columns)
print("ready", flush=True)
n = 0
while sim.clock().is_open:
    for _ in range(rng.randint(2, 8)):
        n += 1
        try:
            sim.submit_order(rng.choice(symbols), rng.choice(["buy", "sell"]), rng.randint(1, 20), f"r{seed}-{n}")
        except BrokerError:
            pass
    pending = sim.open_orders()
    if pending and rng.random() < 0.2:
        sim.cancel_order(pending[0].broker_id)
    sim.step()
"""


def test_a_process_killed_mid_run_leaves_consistent_books(tmp_path):
    rng = np.random.default_rng(7)
    walks = {s: list(100 * np.exp(np.cumsum(rng.normal(0, 0.02, 3000)))) for s in ("AAA", "BBB", "CCC")}
    prices = make_prices(walks, start="2005-01-03")
    prices.to_pickle(tmp_path / "prices.pkl")
    db = tmp_path / "state.sqlite"
    pause = random.Random(3)
    for seed in range(4):  # four kills of the same account, each run resuming where the last died
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(db), str(tmp_path / "prices.pkl"), str(seed)],
                                 cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        started_at = SimBroker(db, prices, starting_cash=50_000.0, spread_bps=5.0).sim_date
        time.sleep(pause.uniform(0.2, 0.4))
        child.kill()  # SIGKILL: no cleanup, no rollback by the process
        child.wait()
        sim = SimBroker(db, prices, starting_cash=50_000.0, spread_bps=5.0)
        assert started_at < sim.sim_date < prices.index[-1], "the kill did not land mid-run"
        assert_books_balance(sim, prices)
    assert len(sim.fills()) > 10
