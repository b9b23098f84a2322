"""Paper trading through a delisting on the simulated broker: the position is closed at its last
close into cash (times 1 + the delisting return, as the backtest does), once, recorded in the
broker and the ledger; the ledger keeps matching the broker (no reconciliation halt), and no order
is ever sent for a stock without a price."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from research_lib.broker import SimBroker
from research_lib.risk import KillSwitch
from research_lib.trading import CycleInputs, Ledger, run_cycle
from tests.conftest import make_prices
from tests.test_trading_cycle import LIMITS

LAST = 12  # AAA's last close is on session 12


def _market(tmp_path, delisting_return=None):
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(30, 2)), axis=0))
    closes[LAST + 1:, 0] = np.nan
    prices = make_prices({"AAA": closes[:, 0], "BBB": closes[:, 1]})
    db = tmp_path / "state.sqlite"
    return prices, SimBroker(db, prices, cost_bps=0.0, delisting_return=delisting_return), Ledger(db)


def _inputs(prices, row, targets):
    day = prices.index[row]
    close = prices["close"].loc[day]
    return CycleInputs("trend", day.date(), targets, close, dt.datetime.combine(day.date(), dt.time(16)).astimezone(),
                       LIMITS, adv=pd.Series(1e9, index=close.index))


def _trade_through(prices, sim, ledger, targets, until):
    reports = []
    for row in range(until + 1):
        reports.append(run_cycle(sim, ledger, _inputs(prices, row, targets if row == 0 else None)))
        if row < until:
            sim.step()
    return reports


@pytest.mark.parametrize("delisting_return", [None, -0.4])
def test_a_position_whose_prices_end_is_closed_at_its_last_close_once_and_the_ledger_agrees(tmp_path, delisting_return):
    prices, sim, ledger = _market(tmp_path, delisting_return)
    targets = pd.Series({"AAA": 0.4, "BBB": 0.4})
    reports = _trade_through(prices, sim, ledger, targets, until=LAST + 3)
    held = sim.positions()
    assert "AAA" not in held and "BBB" in held

    (closed,) = sim.delistings()
    last_close = prices["close"]["AAA"].iloc[LAST]
    assert closed.session == prices.index[LAST + 1].date() and closed.price == pytest.approx(last_close)
    assert closed.cash_flow == pytest.approx(closed.quantity * last_close * (1 + (delisting_return or 0.0)))
    equity = sim.account().equity
    assert equity == pytest.approx(sim.account().cash + held["BBB"].quantity * prices["close"]["BBB"].iloc[LAST + 3])

    recorded = [r.delisted for r in reports if r.delisted]
    assert recorded == [[{"symbol": "AAA", "session": str(closed.session), "quantity": closed.quantity,
                          "price": closed.price, "cash_flow": closed.cash_flow}]], "recorded once, by the next cycle"
    (intent,) = [i for i in ledger.intents("trend") if i.status == "delisted"]
    assert intent.symbol == "AAA" and intent.filled_quantity == pytest.approx(closed.quantity)
    assert all(not r.mismatches for r in reports), "the ledger follows the broker through the delisting"
    state, reason = ledger.kill_switch("trend")
    assert state is not KillSwitch.HALTED and "reconciliation" not in reason
    if delisting_return:  # a 16 % loss of equity in a day: the daily loss limit allows only reducing orders
        assert state is KillSwitch.REDUCING
    assert not [o for o in sim.orders() if o.symbol == "AAA" and o.side == "sell"], "no order for a stock without a price"


def test_a_target_on_a_delisted_stock_is_refused_with_a_reason_and_sends_nothing(tmp_path):
    prices, sim, ledger = _market(tmp_path)
    for _ in range(LAST + 2):
        sim.step()
    report = run_cycle(sim, ledger, _inputs(prices, LAST + 2, pd.Series({"AAA": 0.3, "BBB": 0.3})))
    assert {o["symbol"] for o in report.sent} == {"BBB"}
    assert [r["symbol"] for r in report.rejected] == ["AAA"]
    assert all(o.symbol == "BBB" for o in sim.orders())


def test_a_bad_delisting_return_is_refused(tmp_path):
    prices, _, _ = _market(tmp_path)
    with pytest.raises(ValueError, match="delisting_return must be finite and >= -1"):
        SimBroker(tmp_path / "other.sqlite", prices, delisting_return=-2.0)
