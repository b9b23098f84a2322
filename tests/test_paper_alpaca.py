"""`trade_session(strategy, broker="alpaca")` end to end: a promoted strategy trades today's
session through the real alpaca-py clients against BOTH local servers on 127.0.0.1: the trading
API (``tests/servers/alpaca_trading.py``, ``APCA_API_BASE_URL``) and the market-data bars API
(``tests/servers/alpaca_data.py``, ``APCA_API_DATA_URL``). Nothing of ours is mocked.

"Today" is the real date in New York (what `resolve_session` picks without ``--asof``); the
trading server's clock is set to 15:45 New York that day and the data server serves daily bars
(with volume) up to that day, today's closes being the trading server's prices. The market is
forced open (``set_market_open(True)``) so that the file also passes on a weekend. The next day
is traded with ``asof=<next day>`` with the server clock moved there: Alpaca trades the session
of its own clock only.

The keys are canaries built at run time; no file written under the workspace (reports, the
SQLite state with its WAL, params/promoted) may contain them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from research_lib.config import load_config
from research_lib.data import canonical_frame
from research_lib.data._snapshot import sha256_of
from research_lib.paths import state_db
from research_lib.stages.paper import trade_session
from research_lib.trading import Ledger, TradingRefused, client_order_id
from tests.conftest import REPO
from tests.servers.alpaca_data import AlpacaDataServer, daily_bar
from tests.servers.alpaca_trading import NEW_YORK, AlpacaTradingServer

STRATEGY = "alpacatrend"
RUN_ID = "20240101-000000-alpacatrend"
# Canary keys, assembled at run time so that the literal never sits in a file either.
KEY = "PK" + "CANARYKEY" + "7" * 9
SECRET = "SK" + "CANARYSECRET" * 3
BASE = {"AAPL": 100.0, "KO": 50.0, "MSFT": 400.0}  # today's closes
SYMBOLS = sorted(BASE)
HISTORY = 45  # business days of bars before today (fetch_alpaca asks for 3 x adv_sessions calendar days)
BOOK = {"AAPL": 0.25, "KO": 0.25, "MSFT": 0.25}  # within smoke.yaml's risk.max_weight (0.3); no cash-buffer scaling
CASH = 100_000.0
VOLUME = 2_000_000.0
ORDERS_POST = ("POST", "/v2/orders")


# ---------------------------------------------------------------- the market, the run, the servers


def today() -> dt.date:
    return dt.datetime.now(NEW_YORK).date()


def at(day: dt.date, hour: int = 15, minute: int = 45) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=NEW_YORK)


def sessions_until(day: dt.date, history: int = HISTORY) -> list[dt.date]:
    """``history`` business days before ``day``, then ``day`` itself (even on a weekend)."""
    before = pd.bdate_range(end=day - dt.timedelta(days=1), periods=history)
    return [d.date() for d in before] + [day]


def close_of(symbol: str, index: int, last: int) -> float:
    """A gentle rise that ends exactly at BASE on the session ``last``."""
    return round(BASE[symbol] * (1.0 + 0.002 * (index - last)), 6)


def bars_until(day: dt.date, volume: dict[str, float] | None = None, history: int = HISTORY) -> dict[str, list[dict]]:
    """Daily bars of every symbol up to ``day``; ``volume`` overrides a symbol's volume on every bar."""
    days = sessions_until(day, history)
    last = len(days) - 1
    out = {}
    for symbol in SYMBOLS:
        v = (volume or {}).get(symbol, VOLUME)
        out[symbol] = [daily_bar(f"{d:%Y-%m-%d}", open=close_of(symbol, i, last), high=close_of(symbol, i, last) * 1.01,
                                 low=close_of(symbol, i, last) * 0.99, close=close_of(symbol, i, last), volume=v)
                       for i, d in enumerate(days)]
    return out


def closes_at(bars: dict[str, list[dict]], day: dt.date) -> dict[str, float]:
    stamp = daily_bar(f"{day:%Y-%m-%d}", 1, 1, 1, 1, 1)["t"]
    return {s: next(b["c"] for b in served if b["t"] == stamp) for s, served in bars.items()}


def run_prices(days: pd.DatetimeIndex) -> pd.DataFrame:
    """The research run's prices (a canonical frame with volume) on ``days``."""
    last = len(days)
    closes = pd.DataFrame({s: [close_of(s, i, last) for i in range(len(days))] for s in SYMBOLS}, index=days)
    return canonical_frame({"close": closes, "volume": pd.DataFrame(VOLUME, index=days, columns=SYMBOLS)})


def write_promotion(workspace: Path, run_id: str, prices: pd.DataFrame, weights: pd.DataFrame) -> None:
    """reports/runs/<run_id>/ (prices, weights, a manifest) and params/promoted/<STRATEGY>.yaml,
    shaped as `spartan promote` writes them, with paper.broker alpaca."""
    run_dir = workspace / "reports" / "runs" / run_id
    run_dir.mkdir(parents=True)
    prices.to_parquet(run_dir / "prices.parquet")
    weights.to_parquet(run_dir / "weights.parquet")
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_id}))
    params = load_config(REPO / "params" / "smoke.yaml").model_dump(mode="json")
    params["paper"]["broker"] = "alpaca"
    record = {"strategy": STRATEGY, "run_id": run_id, "run_dir": str(run_dir.resolve()), "params": params,
              "artifacts": {f: sha256_of(run_dir / f) for f in ("weights.parquet", "prices.parquet")},
              "gate": {"passed": True}, "override_reason": None}
    (workspace / "params" / "promoted" / f"{STRATEGY}.yaml").write_text(yaml.safe_dump(record, sort_keys=False))


def promote_by_hand(workspace: Path, day: dt.date) -> dict:
    """The promoted run: prices up to the session before ``day``, two decisions, the latest (BOOK)
    dated the session before ``day``."""
    days = pd.DatetimeIndex(sessions_until(day)[:-1])  # the research data ends before today
    weights = pd.DataFrame([[0.2, 0.2, 0.2], [BOOK[s] for s in SYMBOLS]], index=days[[-20, -1]], columns=SYMBOLS)
    write_promotion(workspace, RUN_ID, run_prices(days), weights)
    return {"weights": weights, "decision": days[-1].date()}


class Market:
    """Both servers, running, with the environment pointing at them."""

    def __init__(self, workspace: Path, trading: AlpacaTradingServer, data: AlpacaDataServer, day: dt.date,
                 decision: dt.date) -> None:
        self.workspace, self.trading, self.data, self.day, self.decision = workspace, trading, data, day, decision

    def posts(self) -> list:
        return self.trading.calls(*ORDERS_POST)

    def report_dir(self, day: dt.date) -> Path:
        return self.workspace / "reports" / "paper" / STRATEGY / f"{day:%Y-%m-%d}"

    def move_to(self, day: dt.date, history: int = HISTORY) -> None:
        """A later session: bars up to ``day`` (``day``'s closes 1 % above BASE) added to those
        served (the bars of the sessions already traded stay), the clock at 15:45 that day, the
        trading server's prices at ``day``'s closes."""
        bars = bars_until(day, history=history)
        for symbol, served in bars.items():
            served[-1] = dict(served[-1], c=served[-1]["c"] * 1.01, h=served[-1]["h"] * 1.01)
            merged = {bar["t"]: bar for bar in self.data.bars.get(symbol, [])} | {bar["t"]: bar for bar in served}
            bars[symbol] = [merged[t] for t in sorted(merged)]
        self.data.bars = bars
        self.trading.set_time(at(day))
        self.trading.set_prices(closes_at(bars, day))


def start_market(workspace: Path, monkeypatch, volume: dict[str, float] | None = None):
    day = today()
    promoted = promote_by_hand(workspace, day)
    bars = bars_until(day, volume)
    trading = AlpacaTradingServer(KEY, SECRET, cash=CASH, prices=closes_at(bars, day), now=at(day)).start()
    trading.set_market_open(True)  # 15:45 on a weekday is open anyway; this keeps weekends tradable too
    data = AlpacaDataServer(bars, key=KEY, secret=SECRET).start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never send local requests to a proxy
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("APCA_API_BASE_URL", trading.url)
    monkeypatch.setenv("APCA_API_DATA_URL", data.url)
    return Market(workspace, trading, data, day, promoted["decision"])


@pytest.fixture
def market(workspace, monkeypatch):
    m = start_market(workspace, monkeypatch)
    try:
        yield m
    finally:
        m.trading.stop()
        m.data.stop()


def cid(day: dt.date, symbol: str, side: str = "buy") -> str:
    return client_order_id(STRATEGY, day, symbol, side)


def assert_no_canary(workspace: Path) -> list[Path]:
    """No file written under the workspace holds either key; returns the files scanned."""
    scanned = []
    for top in ("reports", "data", "params/promoted"):
        for folder, _, files in os.walk(workspace / top):  # symlinks to the repository are not followed
            for name in files:
                path = Path(folder) / name
                if path.is_symlink():
                    continue
                content = path.read_bytes()
                for canary in (KEY, SECRET):
                    assert canary.encode() not in content, f"{path} contains a key"
                scanned.append(path)
    # The scan saw the SQLite state and the session reports, so it is not vacuous.
    names = {p.name for p in scanned}
    assert "spartan.sqlite" in names and "cycle.json" in names and f"{STRATEGY}.yaml" in names
    return scanned


# ---------------------------------------------------------------- the tests


def test_today_sends_one_order_per_symbol_writes_the_report_and_a_rerun_sends_nothing(market):
    result = trade_session(STRATEGY, broker="alpaca")
    day, stamp = market.day, f"{market.day:%Y-%m-%d}"

    assert result["broker"] == "alpaca" and result["session"] == stamp and result["status"] == "traded"
    assert result["decision"] == f"{market.decision:%Y-%m-%d}" and result["rebalance"] is True
    assert result["adv_checked"] is True and result["cycle"]["rejected"] == []

    # Each order reached the trading server once, with its deterministic client_order_id,
    # sized to the target weight of the account's equity at today's close.
    posts = market.posts()
    assert sorted(p.body["client_order_id"] for p in posts) == [cid(day, s) for s in SYMBOLS]
    assert all(p.status == 200 for p in posts)
    orders = {o["symbol"]: o for o in market.trading.orders()}
    assert sorted(orders) == SYMBOLS
    for symbol in SYMBOLS:
        order = orders[symbol]
        assert order["client_order_id"] == f"{STRATEGY}-{day:%Y%m%d}-{symbol}-b"
        assert (order["side"], order["type"], order["time_in_force"], order["status"]) == ("buy", "market", "day", "new")
        assert float(order["qty"]) == pytest.approx(BOOK[symbol] * CASH / BASE[symbol], rel=1e-9)

    # The bars came from the data server with the keys as headers, up to today.
    bars_request = market.data.requests[-1]
    assert bars_request.status == 200 and bars_request.query["symbols"] == ",".join(SYMBOLS)
    assert bars_request.headers["APCA-API-KEY-ID"] == KEY

    # The ledger: one intent per symbol, sent, with the broker's id.
    intents = Ledger(state_db()).intents(STRATEGY, stamp)
    assert sorted(i.client_order_id for i in intents) == [cid(day, s) for s in SYMBOLS]
    assert {i.status for i in intents} == {"sent"}
    assert {i.broker_id for i in intents} == {o["id"] for o in orders.values()}
    assert {i.symbol: i.decision_price for i in intents} == BASE

    # The report: cycle.json and summary.html under reports/paper/<strategy>/<today>/.
    folder = market.report_dir(day)
    written = json.loads((folder / "cycle.json").read_text())
    assert written["status"] == "traded" and written["session"] == stamp and written["broker"] == "alpaca"
    assert sorted(o["client_order_id"] for o in written["session_orders"]) == [cid(day, s) for s in SYMBOLS]
    assert sorted(o["client_order_id"] for o in written["open_orders"]) == [cid(day, s) for s in SYMBOLS]
    assert (folder / "summary.html").stat().st_size > 0

    # A second run of the same day finds the session traded and reported: it runs nothing, sends
    # nothing and returns the stored report (a killed run's re-run is the crash tests' business).
    again = trade_session(STRATEGY, broker="alpaca")
    assert len(market.posts()) == len(SYMBOLS)
    assert again == written
    assert len(market.trading.orders()) == len(SYMBOLS)
    assert {i.status for i in Ledger(state_db()).intents(STRATEGY, stamp)} == {"sent"}
    assert_no_canary(market.workspace)


def test_the_next_day_holds_the_decision_and_records_the_fills(market):
    trade_session(STRATEGY, broker="alpaca")
    filled = market.trading.fill_open_orders()
    assert sorted(o["client_order_id"] for o in filled) == [cid(market.day, s) for s in SYMBOLS]
    next_day = market.day + dt.timedelta(days=1)
    market.move_to(next_day)

    result = trade_session(STRATEGY, broker="alpaca", asof=next_day)

    assert result["session"] == f"{next_day:%Y-%m-%d}" and result["decision"] == f"{market.decision:%Y-%m-%d}"
    assert result["rebalance"] is False and result["status"] == "nothing_to_do"  # holding: no new decision
    assert result["cycle"]["sent"] == [] and result["cycle"]["rejected"] == []
    assert len(market.posts()) == len(SYMBOLS)  # only yesterday's
    ledger = Ledger(state_db())
    previous = ledger.intents(STRATEGY, f"{market.day:%Y-%m-%d}")
    assert {i.status for i in previous} == {"filled"}
    for intent in previous:
        assert intent.filled_quantity == pytest.approx(BOOK[intent.symbol] * CASH / BASE[intent.symbol], rel=1e-9)
        assert intent.filled_avg_price == pytest.approx(BASE[intent.symbol])
    assert ledger.intents(STRATEGY, f"{next_day:%Y-%m-%d}") == []
    held = {p["symbol"]: p["quantity"] for p in result["positions"]}
    assert held == pytest.approx({s: BOOK[s] * CASH / BASE[s] for s in SYMBOLS})
    assert (market.report_dir(next_day) / "cycle.json").is_file()
    assert (market.report_dir(next_day) / "summary.html").is_file()
    rows = result["execution"]["orders"]  # yesterday's orders, measured without intraday bars
    assert {r["symbol"] for r in rows} == set(SYMBOLS) and {r["algorithm"] for r in rows} == {"market"}
    for row in rows:  # all bought and filled: the shortfall is the fill against the arrival price
        assert row["shortfall_bps"]["total"] == pytest.approx(1e4 * (row["average_fill"] / row["arrival"] - 1))
        assert row["shortfall_bps"]["timing"] is None and row["twap"] is None and row["filled"] == row["quantity"]
    assert "no intraday bars are fetched" in (market.report_dir(next_day) / "summary.html").read_text()
    assert_no_canary(market.workspace)


def test_a_past_session_is_refused_and_nothing_is_sent(market):
    past = market.day - dt.timedelta(days=1)
    with pytest.raises(TradingRefused, match="today's session only"):
        trade_session(STRATEGY, broker="alpaca", asof=past)
    assert market.posts() == [] and market.trading.orders() == []
    assert market.data.requests == []  # refused before any bar was asked for
    assert Ledger(state_db()).intents(STRATEGY) == []
    assert not (market.workspace / "reports" / "paper").exists()


@pytest.mark.parametrize("volume", [math.nan, 0.0], ids=["missing", "zero"])
def test_a_symbol_without_volume_is_rejected_by_the_adv_check_and_the_others_are_sent(workspace, monkeypatch, volume):
    """No volume for KO (the JSON carries NaN: the ADV is unknown; or 0: no trading): its buy
    fails closed on the share-of-ADV check; AAPL and MSFT are sent."""
    market = start_market(workspace, monkeypatch, volume={"KO": volume})
    try:
        result = trade_session(STRATEGY, broker="alpaca")
        day = market.day
        assert result["status"] == "traded"
        assert result["adv_checked"] is (not math.isnan(volume))
        rejected = result["cycle"]["rejected"]
        assert [(r["symbol"], r["side"]) for r in rejected] == [("KO", "buy")]
        assert rejected[0]["reason"].startswith("max_adv_fraction: KO has no finite positive average daily volume")
        assert "fail closed" in rejected[0]["reason"]
        assert sorted(p.body["client_order_id"] for p in market.posts()) == [cid(day, "AAPL"), cid(day, "MSFT")]
        intents = Ledger(state_db()).intents(STRATEGY, f"{day:%Y-%m-%d}")
        assert {i.symbol: i.status for i in intents} == {"AAPL": "sent", "MSFT": "sent"}
        assert_no_canary(workspace)
    finally:
        market.trading.stop()
        market.data.stop()


def test_a_closed_market_sends_nothing(market):
    market.trading.set_market_open(False)
    result = trade_session(STRATEGY, broker="alpaca")
    assert result["status"] == "market_closed" and result["cycle"]["sent"] == []
    assert market.posts() == [] and market.trading.orders() == []
    assert Ledger(state_db()).intents(STRATEGY) == []
    written = json.loads((market.report_dir(market.day) / "cycle.json").read_text())
    assert written["status"] == "market_closed"
    assert_no_canary(market.workspace)


def test_a_session_months_after_the_first_under_a_new_promotion_trades_and_writes_its_report(market):
    """Paper trading goes on for months: the research is re-run and promoted again (its weights
    cover the whole history, the first paper session included) and a session 10 weeks after the
    first paper session trades the new decision and writes its report."""
    trade_session(STRATEGY, broker="alpaca")
    market.trading.fill_open_orders()
    later = market.day + dt.timedelta(days=70)
    history = 60  # business days of bars before ``later``: the data server has the first paper session too
    decided = pd.bdate_range(end=later - dt.timedelta(days=1), periods=1)[0]
    days = pd.bdate_range(end=decided, periods=80)
    weights = pd.DataFrame([[0.25, 0.25, 0.25], [0.2, 0.2, 0.2]], index=[days[0], decided], columns=SYMBOLS)
    assert days[0].date() < market.day  # the new run's decisions cover the first paper session
    write_promotion(market.workspace, "20240301-000000-alpacatrend", run_prices(days), weights)
    market.move_to(later, history=history)
    assert sessions_until(later, history)[0] <= market.day

    result = trade_session(STRATEGY, broker="alpaca", asof=later)

    assert result["session"] == f"{later:%Y-%m-%d}" and result["decision"] == f"{decided:%Y-%m-%d}"
    assert result["rebalance"] is True and result["status"] == "traded"
    sent = result["cycle"]["sent"]
    assert sorted((o["symbol"], o["side"]) for o in sent) == [(s, "sell") for s in SYMBOLS]
    assert sorted(p.body["client_order_id"] for p in market.posts()[len(SYMBOLS):]) == [cid(later, s, "sell") for s in SYMBOLS]
    assert (market.report_dir(later) / "cycle.json").is_file()
    assert (market.report_dir(later) / "summary.html").is_file()
    assert_no_canary(market.workspace)
