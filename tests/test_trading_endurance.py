"""Endurance of paper trading (issue 7 acceptance): 30 consecutive simulated sessions with the
sim broker, on real bundled market history (10 large caps, 2020-02-19 to 2020-04-01, the
COVID crash and rebound), no crash, and P&L that reconciles exactly with the fills.

The strategy is a deterministic 5-session momentum rank: the top five symbols get weights
0.30, 0.25, 0.20, 0.12 and 0.08 (0.95 in all), so names enter, grow, shrink and leave the
book. Two sessions are special by design: an all-cash session (every name exits entirely) and
a hold session (``min_trade_value`` so large that nothing is traded: ``nothing_to_do``).
The risk limits are loose, so nothing is rejected or clamped; the kill switch stays active.

"Exactly" means to floating-point rounding: money is compared within ``MONEY_TOL`` (1e-9 of
the starting capital, 0.001 on 1,000,000) and share counts within ``SHARE_TOL``; the sim's cash,
accumulated fill by fill, is also compared bit for bit with the same sum taken in fill order.
P&L attribution uses the average-cost method (the broker's ``avg_entry_price`` convention).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from research_lib.broker import SimBroker
from research_lib.data import bundled_prices, select
from research_lib.risk import RiskLimits
from research_lib.trading import FINAL_STATUSES, CycleInputs, CycleReport, Ledger, client_order_id, run_cycle

SYMBOLS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "XOM"]
FIRST_SESSION, N_SESSIONS, LOOKBACK = "2020-02-19", 30, 5
RANK_WEIGHTS = (0.30, 0.25, 0.20, 0.12, 0.08)
ALL_CASH_SESSION, HOLD_SESSION = 12, 20  # indices (0-based) of the sessions that are special by design
STRATEGY = "endurance"
STARTING_CASH, COST_BPS, SPREAD_BPS = 1_000_000.0, 5.0, 3.0
MONEY_TOL = 1e-9 * STARTING_CASH
SHARE_TOL = 1e-9
NY = ZoneInfo("America/New_York")
LIMITS = RiskLimits(max_weight=0.5, max_gross_exposure=1.5, max_net_exposure=1.5, max_order_notional=1e9,
                    max_adv_fraction=1.0, fat_finger_band=0.5, max_price_age_seconds=900, max_open_orders=1000,
                    max_daily_orders=1000, daily_loss_limit=0.5, drawdown_stop=0.9)
ADV = pd.Series(1e12, index=SYMBOLS)  # the bundled stocks have no volume: a huge ADV never binds


@dataclass
class Run:
    prices: pd.DataFrame  # the sim's canonical frame: LOOKBACK sessions, then N_SESSIONS + 1
    close: pd.DataFrame
    sessions: pd.DatetimeIndex  # the N_SESSIONS + 1 sessions the sim stands at, in order
    sim: SimBroker
    ledger: Ledger
    reports: list[CycleReport]
    targets: list[pd.Series]
    db: object


def targets_at(close: pd.DataFrame, session: pd.Timestamp, index: int) -> pd.Series:
    """Momentum weights decided at ``session``'s close from closes up to it (no look-ahead)."""
    if index == ALL_CASH_SESSION:
        return pd.Series(0.0, index=SYMBOLS)
    history = close.loc[:session]
    momentum = history.iloc[-1] / history.iloc[-1 - LOOKBACK] - 1.0
    ranked = momentum.sort_values(ascending=False, kind="stable").index  # ties: the frame's order
    return pd.Series(0.0, index=SYMBOLS).add(pd.Series(RANK_WEIGHTS, index=ranked[: len(RANK_WEIGHTS)]), fill_value=0.0)


def inputs_at(close: pd.DataFrame, session: pd.Timestamp, targets: pd.Series, index: int) -> CycleInputs:
    return CycleInputs(STRATEGY, session.date(), targets, close.loc[session],
                       dt.datetime.combine(session.date(), dt.time(16), tzinfo=NY), LIMITS, adv=ADV,
                       min_trade_value=1e18 if index == HOLD_SESSION else 1.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """The 30 sessions, run once for every test of the module: a cycle at the sim date's close,
    then one step (the orders fill at the next close)."""
    full = bundled_prices()
    first = full.index.get_loc(full.loc[FIRST_SESSION:].index[0])
    start, end = full.index[first - LOOKBACK], full.index[first + N_SESSIONS]
    prices = select(full, SYMBOLS, start, end)
    close = prices["close"]
    assert close.notna().all().all() and len(close) == LOOKBACK + N_SESSIONS + 1
    sessions = close.index[LOOKBACK:]
    db = tmp_path_factory.mktemp("endurance") / "state.sqlite"
    sim = SimBroker(db, prices, starting_cash=STARTING_CASH, cost_bps=COST_BPS, spread_bps=SPREAD_BPS,
                    start=sessions[0])
    ledger = Ledger(db)
    reports, targets = [], []
    for i, session in enumerate(sessions[:N_SESSIONS]):
        assert sim.sim_date == session
        targets.append(targets_at(close, session, i))
        reports.append(run_cycle(sim, ledger, inputs_at(close, session, targets[-1], i)))  # must not raise
        assert sim.step() == sessions[i + 1]
    return Run(prices, close, sessions, sim, ledger, reports, targets, db)


def book_through(fills, session: dt.date) -> tuple[float, dict[str, float]]:
    """Cash and positions from the fills of sessions up to ``session``, summed in fill order."""
    cash, held = STARTING_CASH, defaultdict(float)
    for f in fills:
        if f.session <= session:
            sign = 1.0 if f.side == "buy" else -1.0
            cash += -sign * f.quantity * f.price - f.commission
            held[f.symbol] += sign * f.quantity
    return cash, {s: q for s, q in held.items() if abs(q) > SHARE_TOL}


def value(cash: float, held: dict[str, float], closes: pd.Series) -> float:
    return cash + sum(q * closes[s] for s, q in held.items())


def test_thirty_sessions_run_without_failure_rejection_or_duplicate_order(run):
    statuses = [r.status for r in run.reports]
    assert len(statuses) == N_SESSIONS and set(statuses) <= {"traded", "nothing_to_do"}, statuses
    assert statuses[HOLD_SESSION] == "nothing_to_do" and statuses.count("traded") == N_SESSIONS - 1
    assert all(r.rejected == [] and r.clamped == [] and r.cancelled == [] and r.adopted == [] and r.resolved == []
               for r in run.reports)
    assert {r.kill_switch for r in run.reports} == {"active"}
    with sqlite3.connect(run.db) as conn:  # every cycle finished, none left 'running' or 'failed: ...'
        cycles = conn.execute("SELECT session, status FROM ledger_cycles WHERE strategy = ? ORDER BY id",
                              (STRATEGY,)).fetchall()
    assert cycles == [(str(s.date()), r.status) for s, r in zip(run.sessions, run.reports)]

    orders, intents = run.sim.orders(), run.ledger.intents(STRATEGY)
    sent = [o["client_order_id"] for r in run.reports for o in r.sent]
    for ids in ([o.client_order_id for o in orders], [i.client_order_id for i in intents], sent):
        assert len(ids) == len(set(ids)), [cid for cid, n in Counter(ids).items() if n > 1]
    assert set(sent) == {o.client_order_id for o in orders} == {i.client_order_id for i in intents}
    assert len(orders) > 100  # about 8 orders per trading session
    for order in orders:
        session = pd.Timestamp(order.submitted_at.date())
        assert order.client_order_id == client_order_id(STRATEGY, session.date(), order.symbol, order.side)
        assert order.status == "filled"  # every order filled, at the close after its session


def test_every_fill_is_at_the_next_close_with_the_spread_and_commission(run):
    fills, orders = run.sim.fills(), {o.broker_id: o for o in run.sim.orders()}
    assert Counter(f.broker_id for f in fills) == Counter({b: 1 for b in orders})  # one fill per order
    sessions = list(run.sessions)
    for f in fills:
        order = orders[f.broker_id]
        submitted = sessions.index(pd.Timestamp(order.submitted_at.date()))
        assert pd.Timestamp(f.session) == sessions[submitted + 1]
        assert (f.client_order_id, f.symbol, f.side, f.quantity) == (order.client_order_id, order.symbol, order.side,
                                                                     order.quantity)
        close = run.close.at[pd.Timestamp(f.session), f.symbol]
        sign = 1.0 if f.side == "buy" else -1.0
        assert f.price == pytest.approx(close * (1.0 + sign * SPREAD_BPS / 1e4), rel=1e-14, abs=0)
        assert f.commission == pytest.approx(COST_BPS / 1e4 * f.quantity * close, rel=1e-14, abs=0)
        assert (order.filled_quantity, order.filled_avg_price) == (f.quantity, f.price)


def test_the_strategy_buys_adds_reduces_and_exits(run):
    held, kinds = defaultdict(float), Counter()
    for f in run.sim.fills():
        before = held[f.symbol]
        if f.side == "buy":
            kinds["open" if before == 0 else "add"] += 1
            held[f.symbol] += f.quantity
        else:
            assert f.quantity <= before + SHARE_TOL, f  # never short
            kinds["exit" if f.quantity == before else "reduce"] += 1
            held[f.symbol] = 0.0 if f.quantity == before else before - f.quantity
    assert min(kinds[k] for k in ("open", "add", "reduce", "exit")) >= 5, kinds
    # the all-cash session exits every name entirely; the book is then rebuilt
    all_cash_fill = run.sessions[ALL_CASH_SESSION + 1]
    cash, positions = book_through(run.sim.fills(), all_cash_fill.date())
    assert positions == {} and run.reports[ALL_CASH_SESSION + 1].positions == {}
    assert run.reports[ALL_CASH_SESSION + 1].equity == pytest.approx(cash, abs=MONEY_TOL)
    assert len(run.reports[ALL_CASH_SESSION + 2].positions) == len(RANK_WEIGHTS)


def test_cash_and_positions_are_the_sum_of_the_fills(run):
    fills, account, positions = run.sim.fills(), run.sim.account(), run.sim.positions()
    buys = sum(f.quantity * f.price for f in fills if f.side == "buy")
    sells = sum(f.quantity * f.price for f in fills if f.side == "sell")
    commissions = sum(f.commission for f in fills)
    assert account.cash == pytest.approx(STARTING_CASH + sells - buys - commissions, abs=MONEY_TOL)
    running = STARTING_CASH
    for f in fills:  # the sim moves cash fill by fill: the same sum in the same order is bit for bit equal
        running += f.cash_flow
    assert account.cash == running
    assert commissions > 0 and buys > 3 * STARTING_CASH  # the costs are real and the book turned over
    signed = defaultdict(float)
    for f in fills:
        signed[f.symbol] += f.quantity if f.side == "buy" else -f.quantity
    held = {s: q for s, q in signed.items() if abs(q) > SHARE_TOL}
    assert held.keys() == positions.keys()
    for symbol, quantity in held.items():
        assert positions[symbol].quantity == pytest.approx(quantity, rel=0, abs=SHARE_TOL), symbol


def test_each_sessions_equity_and_book_are_the_fills_valued_at_that_close(run):
    fills, history = run.sim.fills(), dict(run.ledger.equity_history(STRATEGY))
    assert list(history) == [str(s.date()) for s in run.sessions[:N_SESSIONS]]
    for session, report in zip(run.sessions, run.reports):
        cash, held = book_through(fills, session.date())
        equity = value(cash, held, run.close.loc[session])
        assert history[str(session.date())] == pytest.approx(equity, abs=MONEY_TOL), session
        assert report.equity == history[str(session.date())] and report.cash == pytest.approx(cash, abs=MONEY_TOL)
        assert report.positions.keys() == held.keys(), session
        for symbol, quantity in held.items():
            assert report.positions[symbol] == pytest.approx(quantity, rel=0, abs=SHARE_TOL), (session, symbol)
    end = run.sessions[-1]
    assert run.sim.sim_date == end
    cash, held = book_through(fills, end.date())
    assert run.sim.account().equity == pytest.approx(value(cash, held, run.close.loc[end]), abs=MONEY_TOL)


def test_orders_reach_the_targets_at_the_decision_prices(run):
    """After its fills, each trading session's book is target x equity / close of the decision session."""
    fills, history = run.sim.fills(), dict(run.ledger.equity_history(STRATEGY))
    for i, session in enumerate(run.sessions[:N_SESSIONS]):
        _, held = book_through(fills, run.sessions[i + 1].date())
        if i == HOLD_SESSION:
            assert held == book_through(fills, session.date())[1]  # nothing traded
            continue
        equity, closes = history[str(session.date())], run.close.loc[session]
        wanted = {s: w * equity / closes[s] for s, w in run.targets[i].items() if w != 0}
        assert held.keys() == wanted.keys(), session
        for symbol, quantity in wanted.items():
            assert held[symbol] == pytest.approx(quantity, rel=1e-12), (session, symbol)


def test_total_pnl_equals_the_daily_pnl_and_realized_plus_unrealized(run):
    fills, history = run.sim.fills(), run.ledger.equity_history(STRATEGY)
    assert [s for s, _ in history] == [str(s.date()) for s in run.sessions[:N_SESSIONS]]
    assert history[0][1] == STARTING_CASH  # nothing traded before the first cycle
    by_session = defaultdict(list)
    for f in fills:
        by_session[f.session].append(f)
    # each session's P&L attributed from the fills alone: the previous book marked from the
    # previous close to this close, plus each fill's gain against this close (minus the
    # half-spread), less its commission
    attributed, held, previous_close = [], {}, None
    for session in run.sessions:
        closes = run.close.loc[session]
        daily = sum(q * (closes[s] - previous_close[s]) for s, q in held.items())
        for f in by_session[session.date()]:
            sign = 1.0 if f.side == "buy" else -1.0
            daily += sign * f.quantity * (closes[f.symbol] - f.price) - f.commission
        attributed.append(daily)
        held, previous_close = book_through(fills, session.date())[1], closes
    # the ledger's daily P&L (its equity history, the first session against the starting cash)
    ledger_daily = np.diff([STARTING_CASH] + [e for _, e in history])
    for t, session in enumerate(run.sessions[:N_SESSIONS]):
        assert ledger_daily[t] == pytest.approx(attributed[t], abs=MONEY_TOL), session
        previous = history[t - 1][1] if t else history[0][1]
        assert run.reports[t].daily_pnl == pytest.approx(history[t][1] / previous - 1.0, rel=1e-12, abs=1e-15)
    # the end: the sim stands at the 31st session, where the last cycle's orders filled
    total = run.sim.account().equity - STARTING_CASH
    assert history[-1][1] - STARTING_CASH == pytest.approx(ledger_daily.sum(), abs=MONEY_TOL)
    assert total == pytest.approx(ledger_daily.sum() + attributed[-1], abs=MONEY_TOL)
    assert total == pytest.approx(sum(attributed), abs=MONEY_TOL)
    last_day = run.close.iloc[-1]

    # average cost: a buy moves the average entry price, a sale realizes (price - average) x quantity
    held, average, realized = defaultdict(float), defaultdict(float), 0.0
    for f in fills:
        if f.side == "buy":
            cost = held[f.symbol] * average[f.symbol] + f.quantity * f.price
            held[f.symbol] += f.quantity
            average[f.symbol] = cost / held[f.symbol]
        else:
            realized += f.quantity * (f.price - average[f.symbol])
            held[f.symbol] -= f.quantity
            if abs(held[f.symbol]) <= SHARE_TOL:
                held[f.symbol], average[f.symbol] = 0.0, 0.0
    commissions = sum(f.commission for f in fills)
    unrealized = sum(q * (last_day[s] - average[s]) for s, q in held.items() if q)
    assert total == pytest.approx(realized + unrealized - commissions, abs=MONEY_TOL)
    positions = run.sim.positions()
    assert {s for s, q in held.items() if q} == positions.keys()
    for symbol, position in positions.items():  # the broker's own cost basis agrees
        assert position.avg_entry_price == pytest.approx(average[symbol], rel=1e-12), symbol
        assert position.market_value == pytest.approx(position.quantity * last_day[symbol], rel=1e-12)
    assert realized != 0 and unrealized != 0 and abs(total) > 1_000  # a real P&L, not a trivial zero


def test_every_intent_is_final_except_the_last_sessions(run):
    orders = {o.client_order_id: o for o in run.sim.orders()}
    fills = {f.client_order_id: f for f in run.sim.fills()}
    last = str(run.sessions[N_SESSIONS - 1].date())
    intents = run.ledger.intents(STRATEGY)
    assert {i.session for i in intents} == {str(s.date()) for j, s in enumerate(run.sessions[:N_SESSIONS])
                                            if j != HOLD_SESSION}
    for intent in intents:
        order = orders[intent.client_order_id]
        assert (intent.symbol, intent.side, intent.quantity, intent.broker_id) == (order.symbol, order.side,
                                                                                    order.quantity, order.broker_id)
        assert intent.decision_price == run.close.at[pd.Timestamp(intent.session), intent.symbol]
        if intent.session == last:  # filled at the broker by the last step; the next cycle would resolve them
            assert intent.status == "sent" and intent.status not in FINAL_STATUSES and order.status == "filled"
        else:
            fill = fills[intent.client_order_id]
            assert intent.status == "filled", intent
            assert (intent.filled_quantity, intent.filled_avg_price) == (fill.quantity, fill.price)
