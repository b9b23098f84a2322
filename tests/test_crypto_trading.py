"""Paper trading crypto pairs (issue 19): through alpaca-py against the local trading server speaking
Alpaca's crypto order rules (good-till-cancelled, fractional at market and at a limit, no shorting,
any hour, positions listed without the slash), through the trading cycle on a Sunday, and on the
simulated broker over a 24/7 market."""

from __future__ import annotations

import datetime as dt
import logging
import math
from decimal import Decimal
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.backtest import CostModel
from research_lib.broker import OrderRejected, SimBroker
from research_lib.broker._alpaca import _pair
from research_lib.broker._pairs import PairRules, pair_limit, pair_quantity
from research_lib.data import calendar_sessions, canonical_frame
from research_lib.stages.paper import trade_session
from research_lib.trading import CycleInputs, Ledger, TradingRefused, run_cycle
from research_lib.trading._market import trading_zone
from research_lib.validation.promotion import load_promoted
from tests.servers.alpaca_data import AlpacaDataServer, crypto_bar
from tests.servers.alpaca_trading import NEW_YORK, AlpacaTradingServer
from tests.test_alpaca_broker import KEY, SECRET, broker_for, keys  # noqa: F401 (keys is a fixture)
from tests.test_paper_alpaca import KEY as CANARY_KEY
from tests.test_paper_alpaca import SECRET as CANARY_SECRET
from tests.test_paper_alpaca import STRATEGY, assert_no_canary, write_promotion
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
    sent = {b["symbol"]: b["qty"] for b in bodies(server)}  # on the pair's 0.0001 step, less than asked
    assert {i.symbol: i.quantity for i in ledger.intents("coins")} == sent  # the ledger holds what Alpaca took
    assert {o["symbol"]: o["quantity"] for o in report.sent} == sent
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


# -- `spartan trade` end to end: a crypto book at Alpaca (both local servers, nothing of ours mocked)

def test_a_crypto_book_trades_todays_utc_day_at_alpaca_while_the_stock_market_is_closed(workspace, monkeypatch):
    now = dt.datetime.now(dt.timezone.utc)
    day = now.date()  # a crypto session is a UTC day, whatever New York's date
    days = pd.date_range(end=day, periods=61, freq="D")  # sixty closed days, then today's so far
    pairs = {"BTC/USD": 60_000.0, "ETH/USD": 3_000.0}
    closes = pd.DataFrame({s: [p * (1 + 0.001 * i) for i in range(len(days))] for s, p in pairs.items()}, index=days)
    research = canonical_frame({"close": closes.iloc[:-1], "volume": closes.iloc[:-1] * 0 + 5_000.0})
    write_promotion(workspace, "20240101-000000-coins", research,
                    pd.DataFrame([[0.25, 0.25]], index=days[[-2]], columns=list(pairs)))
    bars = {s: [crypto_bar(f"{d:%Y-%m-%d}", c, c * 1.01, c * 0.99, c, 5_000.0) for d, c in closes[s].items()]
            for s in pairs}
    with AlpacaTradingServer(CANARY_KEY, CANARY_SECRET, cash=100_000, prices=closes.iloc[-1].to_dict(), now=now) as trading, \
            AlpacaDataServer({}, key=CANARY_KEY, secret=CANARY_SECRET, crypto=bars) as data:
        trading.set_market_open(False)  # the stock market's clock: crypto does not wait for it
        for name, value in {"NO_PROXY": "127.0.0.1,localhost", "APCA_API_KEY_ID": CANARY_KEY,
                            "APCA_API_SECRET_KEY": CANARY_SECRET, "APCA_API_BASE_URL": trading.url,
                            "APCA_API_DATA_URL": data.url}.items():
            monkeypatch.setenv(name, value)
        result = trade_session(STRATEGY, broker="alpaca")
        assert result["session"] == f"{day:%Y-%m-%d}" and result["status"] == "traded", result
        posts = bodies(trading)
        assert sorted(p["symbol"] for p in posts) == sorted(pairs)
        assert all(p["time_in_force"] == "gtc" and p["side"] == "buy" for p in posts)
        for post in posts:  # a quarter of the equity in each pair, in fractions of a coin on the pair's step
            target = 0.25 * 100_000 / closes[post["symbol"]].iloc[-1]
            assert post["qty"] == pytest.approx(math.floor(target / 1e-4) * 1e-4, abs=1e-12)
        assert any(r.path.endswith("/crypto/us/bars") for r in data.requests)
    assert_no_canary(workspace)


def test_spartan_trade_on_the_sim_trades_a_crypto_book_on_a_weekend(workspace):
    days = calendar_sessions("24/7", dt.date(2024, 1, 1), dt.date(2024, 3, 31))  # every day, weekends included
    closes = pd.DataFrame({"BTC/USD": [40_000.0 * (1 + 0.002 * i) for i in range(len(days))],
                           "ETH/USD": [2_000.0 * (1 + 0.001 * i) for i in range(len(days))]}, index=days)
    prices = canonical_frame({"close": closes, "volume": closes * 0 + 5_000.0})
    write_promotion(workspace, "20240101-000000-coins", prices,
                    pd.DataFrame([[0.25, 0.25]], index=days[[60]], columns=list(closes)))
    saturday, sunday = dt.date(2024, 3, 9), dt.date(2024, 3, 10)
    traded = trade_session(STRATEGY, broker="sim", asof=saturday)
    assert traded["session"] == "2024-03-09" and traded["status"] == "traded", traded
    after = trade_session(STRATEGY, broker="sim", asof=sunday)  # Saturday's orders fill at Sunday's close
    held = after["cycle"]["positions"]
    for pair in closes:
        assert held[pair] != round(held[pair])  # fractions of a coin
        assert held[pair] * closes.loc["2024-03-10", pair] == pytest.approx(0.25 * after["cycle"]["equity"], rel=0.02)


def test_no_broker_trades_forex_not_even_the_sim(workspace):
    days = calendar_sessions("24/5", dt.date(2024, 1, 1), dt.date(2024, 3, 29))
    closes = pd.DataFrame({"EURUSD=X": 1.08, "GBPUSD=X": 1.27}, index=days)
    write_promotion(workspace, "20240101-000000-fx", canonical_frame({"close": closes}),
                    pd.DataFrame([[0.25, 0.25]], index=days[[40]], columns=list(closes)))
    with pytest.raises(TradingRefused, match=r"holds currency pairs \['EURUSD=X', 'GBPUSD=X'\]: no broker here "
                                             r"trades forex"):
        trade_session(STRATEGY, broker="sim", asof=days[50].date())


def test_a_crypto_book_named_only_by_data_markets_is_refused_at_alpaca(workspace, monkeypatch):
    days = calendar_sessions("24/7", dt.date(2024, 1, 1), dt.date(2024, 3, 31))
    closes = pd.DataFrame({"XBTUSD": 60_000.0, "BTC/USD": 60_000.0}, index=days)
    write_promotion(workspace, "20240101-000000-xbt", canonical_frame({"close": closes}),
                    pd.DataFrame([[0.25, 0.25]], index=days[[40]], columns=list(closes)))
    path = workspace / "params" / "promoted" / f"{STRATEGY}.yaml"
    path.write_text(path.read_text().replace("markets: {}", "markets:\n      XBTUSD: crypto"))
    with pytest.raises(TradingRefused, match=r"trades \['XBTUSD'\], named crypto or stock by data.markets only"):
        trading_zone(load_promoted(STRATEGY))


def test_the_sims_cash_rate_accrues_over_the_calendars_year():
    days = calendar_sessions("24/7", dt.date(2023, 1, 1), dt.date(2024, 1, 1))  # 366 sessions: 365 accruals
    prices = canonical_frame({"close": pd.DataFrame({"BTC/USD": 30_000.0}, index=days)})
    for year, expected in ((365, (1 + 0.05 / 365) ** 365), (252, (1 + 0.05 / 252) ** 365)):
        with tempfile.TemporaryDirectory() as folder:
            sim = SimBroker(Path(folder) / "sim.sqlite", prices, starting_cash=1_000.0,
                            costs=CostModel(cash_rate_per_year=0.05), sessions_per_year=year)
            sim.advance_to(days[-1].date())
            assert sim.account().cash == pytest.approx(1_000.0 * expected, rel=1e-9)


def test_a_crypto_book_with_an_execution_algorithm_is_refused_before_anything_is_sent(workspace):
    days = calendar_sessions("24/7", dt.date(2024, 1, 1), dt.date(2024, 3, 31))
    closes = pd.DataFrame({"BTC/USD": 60_000.0, "ETH/USD": 3_000.0}, index=days)
    write_promotion(workspace, "20240101-000000-algo", canonical_frame({"close": closes}),
                    pd.DataFrame([[0.25, 0.25]], index=days[[40]], columns=list(closes)))
    path = workspace / "params" / "promoted" / f"{STRATEGY}.yaml"  # a file universe no setting named: promoted
    path.write_text(path.read_text().replace("algorithm: market", "algorithm: twap"))
    with pytest.raises(TradingRefused, match=r"trades crypto \['BTC/USD', 'ETH/USD'\] with execution.algorithm "
                                             r"'twap'"):
        trade_session(STRATEGY, broker="sim", asof=dt.date(2024, 3, 9))
    assert not (workspace / "data" / "spartan.sqlite").exists() or not Ledger(
        workspace / "data" / "spartan.sqlite").intents(STRATEGY)


def test_crypto_orders_keep_to_the_pairs_increments_read_once_from_its_asset_record(server):
    server.pair_rules["BTC/USD"] = ("0.0001", "0.0001", "1")  # Alpaca's example: whole dollars, 0.0001 BTC
    broker = broker_for(server)
    broker.submit_order("BTC/USD", "buy", 0.012345678, "pair-1", limit_price=65_100.7)
    broker.submit_order("BTC/USD", "sell", 0.0123456, "pair-2", limit_price=64_000.2)
    first, second = bodies(server)
    assert (first["qty"], first["limit_price"]) == (0.0123, 65_100.0)  # less, and inside the limit
    assert (second["qty"], second["limit_price"]) == (0.0123, 64_001.0)
    with pytest.raises(OrderRejected, match=r"quantity 5e-05 of BTC/USD is below Alpaca's minimum order "
                                            r"\(min_order_size 0.0001, in steps of 0.0001\); nothing was sent"):
        broker.submit_order("BTC/USD", "buy", 0.00005, "pair-3")
    with pytest.raises(OrderRejected, match=r"Alpaca lists no crypto pair DOGE/USD; nothing was sent"):
        broker.submit_order("DOGE/USD", "buy", 10.0, "pair-4")
    assert len(bodies(server)) == 2
    assert [r.path for r in server.requests if r.path.startswith("/v2/assets/")] == [
        "/v2/assets/BTCUSD", "/v2/assets/DOGEUSD"]  # once per pair



@settings(max_examples=300, deadline=None)
@given(quantity=st.floats(1e-9, 1e6), price=st.floats(1e-6, 1e6), side=st.sampled_from(["buy", "sell"]),
       step=st.sampled_from([1e-9, 1e-8, 1e-4, 0.001, 0.1, 1.0]), tick=st.sampled_from([1e-6, 1e-4, 0.01, 1.0]))
def test_a_pairs_quantity_is_never_more_than_asked_and_its_limit_never_outside(quantity, price, side, step, tick):
    rules = PairRules(min_order_size=step, quantity_step=step, price_step=tick)
    try:
        sent = pair_quantity("X/USD", quantity, rules)
    except OrderRejected:
        assert quantity < step * (1 + 1e-9)  # refused only when less than one step was asked for
    else:
        assert sent <= quantity * (1 + 1e-12) and quantity - sent < step * (1 + 1e-9)
        assert Decimal(repr(sent)) % Decimal(repr(step)) == 0  # a whole number of steps
    try:
        limit = pair_limit("X/USD", price, side, rules)
    except OrderRejected:
        assert side == "buy" and price < tick * (1 + 1e-9)
    else:
        assert (limit <= price * (1 + 1e-12)) if side == "buy" else (limit >= price * (1 - 1e-12))
        assert abs(limit - price) < tick * (1 + 1e-9) and Decimal(repr(limit)) % Decimal(repr(tick)) == 0


@pytest.mark.parametrize("year", [0, -5, True, 365.5, None])
def test_a_simulated_account_refuses_a_year_that_is_not_a_positive_whole_number(tmp_path, year):
    prices = canonical_frame({"close": pd.DataFrame({"BTC/USD": 30_000.0},
                                                    index=calendar_sessions("24/7", dt.date(2024, 1, 1),
                                                                            dt.date(2024, 1, 10)))})
    with pytest.raises(ValueError, match=r"sessions_per_year must be a positive whole number"):
        SimBroker(tmp_path / "sim.sqlite", prices, sessions_per_year=year)
