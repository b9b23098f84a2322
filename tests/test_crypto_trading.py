"""Paper trading crypto pairs (issue 19): through alpaca-py against the local trading server speaking
Alpaca's crypto order rules (good-till-cancelled, fractional at market and at a limit, no shorting,
any hour, positions listed without the slash), through the trading cycle on a Sunday, and on the
simulated broker over a 24/7 market."""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd
import pytest

from research_lib.broker import OrderRejected, SimBroker
from research_lib.broker._alpaca import _pair
from research_lib.data import calendar_sessions, canonical_frame
from research_lib.trading import CycleInputs, Ledger, run_cycle
from tests.servers.alpaca_trading import NEW_YORK, AlpacaTradingServer
from tests.test_alpaca_broker import KEY, SECRET, broker_for, keys  # noqa: F401 (keys is a fixture)
from tests.test_trading_cycle import LIMITS

SUNDAY = dt.datetime(2024, 3, 17, 12, 0, tzinfo=NEW_YORK)  # the stock market is closed
PRICES = {"BTC/USD": 65_000.0, "ETH/USD": 3_500.0, "AAPL": 170.0}


@pytest.fixture
def server(keys):
    with AlpacaTradingServer(KEY, SECRET, cash=100_000, prices=PRICES, fill_on_submit=True) as server:
        server.set_time(SUNDAY)
        yield server


def bodies(server: AlpacaTradingServer) -> list[dict]:
    return [r.body for r in server.requests if (r.method, r.path) == ("POST", "/v2/orders")]


def test_crypto_orders_are_good_till_cancelled_fractional_and_fill_on_a_sunday(server, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    broker = broker_for(server)
    assert not broker.clock().is_open  # the stock market's clock
    bought = broker.submit_order("BTC/USD", "buy", 0.0123, "crypto-btc-1")
    assert bought.status == "filled" and bought.filled_quantity == pytest.approx(0.0123)
    limit = broker.submit_order("ETH/USD", "buy", 0.5, "crypto-eth-1", limit_price=3_600.0)  # fractional at a limit
    assert limit.status == "filled"
    sent = bodies(server)
    assert [b["time_in_force"] for b in sent] == ["gtc", "gtc"] and sent[0]["qty"] == pytest.approx(0.0123)
    assert sent[1]["type"] == "limit" and sent[1]["qty"] == pytest.approx(0.5)
    held = broker.positions()  # Alpaca lists BTCUSD; named as the orders name it
    assert set(held) == {"BTC/USD", "ETH/USD"} and held["BTC/USD"].quantity == pytest.approx(0.0123)
    with pytest.raises(OrderRejected, match=r"insufficient qty available for order"):
        broker.submit_order("BTC/USD", "sell", 0.02, "crypto-btc-2")  # more than held: no shorting
    with pytest.raises(OrderRejected, match=r"whole shares only"):
        broker.submit_order("AAPL", "buy", 0.5, "stock-aapl-1", limit_price=170.0)  # a stock's limit stays whole
    output = capsys.readouterr()
    assert SECRET not in caplog.text + output.out + output.err
    assert all(SECRET not in str(r.headers.values()) for r in server.requests)  # recorded redacted


@pytest.mark.parametrize("listed, pair", [("BTCUSD", "BTC/USD"), ("ETHUSDT", "ETH/USDT"), ("ETHBTC", "ETH/BTC"),
                                          ("BTC/USD", "BTC/USD"), ("USD", "USD")])
def test_a_crypto_position_is_named_as_its_orders(listed, pair):
    assert _pair(listed) == pair


def _inputs(targets: dict[str, float]) -> CycleInputs:
    prices = pd.Series({s: PRICES[s] for s in targets}, dtype=float)
    return CycleInputs("coins", SUNDAY.date(), pd.Series(targets), prices, SUNDAY, LIMITS,
                       adv=pd.Series(1e12, index=prices.index))


def test_the_cycle_trades_a_crypto_book_while_the_stock_market_is_closed(server, tmp_path):
    ledger = Ledger(tmp_path / "state.sqlite")
    report = run_cycle(broker_for(server), ledger, _inputs({"BTC/USD": 0.2, "ETH/USD": 0.1}))
    assert report.status != "market_closed"
    assert {b["symbol"]: b["time_in_force"] for b in bodies(server)} == {"BTC/USD": "gtc", "ETH/USD": "gtc"}
    positions = server.positions()
    assert float(positions["BTC/USD"]) * PRICES["BTC/USD"] == pytest.approx(20_000, rel=0.01)
    assert float(positions["BTC/USD"]) != round(float(positions["BTC/USD"]))  # a fraction of a coin
    again = run_cycle(broker_for(server), ledger, _inputs({"BTC/USD": 0.2, "ETH/USD": 0.1}))
    assert len(bodies(server)) == 2 and not again.mismatches  # reconciled: the ledger and Alpaca agree


def test_a_book_holding_a_stock_waits_for_the_stock_market(server, tmp_path):
    report = run_cycle(broker_for(server), Ledger(tmp_path / "state.sqlite"), _inputs({"BTC/USD": 0.2, "AAPL": 0.2}))
    assert report.status == "market_closed" and bodies(server) == []


def test_the_simulated_broker_trades_crypto_every_day_in_fractions(tmp_path):
    days = calendar_sessions("24/7", dt.date(2024, 3, 14), dt.date(2024, 3, 20))  # Thursday to Wednesday
    closes = pd.DataFrame({"BTC/USD": [65_000.0 + 500 * i for i in range(len(days))]}, index=days)
    sim = SimBroker(tmp_path / "sim.sqlite", canonical_frame({"close": closes}), starting_cash=10_000.0,
                    cost_bps=0.0, spread_bps=0.0)
    sim.advance_to(dt.date(2024, 3, 16))  # a Saturday is a session of this market
    assert sim.clock().is_open
    sim.submit_order("BTC/USD", "buy", 0.05, "sim-btc-1")
    sim.advance_to(dt.date(2024, 3, 17))  # filled at Sunday's close
    (fill,) = sim.fills()
    assert pd.Timestamp(fill.session) == pd.Timestamp("2024-03-17") and fill.quantity == pytest.approx(0.05)
    assert fill.price == pytest.approx(closes.loc["2024-03-17", "BTC/USD"])
    assert sim.positions()["BTC/USD"].quantity == pytest.approx(0.05)
