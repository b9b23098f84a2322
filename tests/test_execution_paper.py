"""Paper trading with an execution algorithm (issue 18): the simulated broker fills child orders on
the session's intraday bars, the cycle records each schedule whole before sending a child, every
child passes the pre-trade checks on its own, and a process killed at any moment of a schedule
leaves a state whose re-run completes it without sending any slice twice.

The rules are stated from what a trader relies on (a child fills inside its limit, at its bars'
prices plus its costs; the children of a parent add up to it; a crash changes nothing a re-run
cannot finish), not from how the code computes them.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from research_lib.broker import OrderRejected, SimBroker
from research_lib.config import ExecutionConfig
from research_lib.execution import BARS_PER_SESSION, session_bars
from research_lib.risk import KillSwitch
from research_lib.trading import CycleInputs, Ledger, client_order_id, run_cycle
from tests.conftest import make_prices
from tests.test_trading_cycle import LIMITS

SYMBOLS = ["AAA", "BBB", "CCC"]
TARGETS = pd.Series({"AAA": 0.3, "BBB": 0.3, "CCC": 0.3})
TWAP = ExecutionConfig(algorithm="twap")


def closes(n=40, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    paths = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(n, len(SYMBOLS))), axis=0))
    return make_prices({s: paths[:, i] for i, s in enumerate(SYMBOLS)})


def inputs_at(prices, session, execution=TWAP, targets=TARGETS, limits=LIMITS) -> CycleInputs:
    day = pd.Timestamp(session)
    close = prices["close"].loc[day]
    return CycleInputs("trend", day.date(), targets, close, dt.datetime.combine(day.date(), dt.time(16)).astimezone(),
                       limits, adv=pd.Series(1e9, index=close.index), execution=execution)


def typical(bars: pd.DataFrame, first: int, count: int) -> float:
    span = bars.iloc[first:first + count]
    return float(((span.open + span.high + span.low + span.close) / 4).mean())


# ------------------------------------------------------------------ the simulated broker's child orders

def test_a_child_order_fills_at_its_bars_price_with_its_costs_inside_its_limit(tmp_path):
    prices = closes()
    sim = SimBroker(tmp_path / "s.sqlite", prices, cost_bps=10.0, spread_bps=2.0, start=prices.index[25])
    fill_day = prices.index[26]
    bars = session_bars(prices["close"]["AAA"], fill_day)
    reference = typical(bars, 12, 6)
    sim.submit_order("AAA", "buy", 10.0, "p.000", limit_price=reference * 1.01, bar=12, bars=6)
    sim.submit_order("AAA", "buy", 10.0, "p.001", limit_price=reference * 0.99, bar=12, bars=6)  # below the market
    sim.submit_order("BBB", "buy", 5.0, "moc")  # a market order still fills at the close
    sim.step()
    [child, moc] = sim.fills()
    assert child.client_order_id == "p.000" and child.quantity == 10.0
    assert child.price == pytest.approx(reference * (1 + 2.0 / 1e4), rel=1e-12), "the span's TWAP plus the half-spread"
    assert child.commission == pytest.approx(10.0 * reference * 10 / 1e4, rel=1e-12)
    assert moc.client_order_id == "moc" and moc.price == pytest.approx(prices["close"]["BBB"].loc[fill_day] * 1.0002)
    missed = sim.order_by_client_id("p.001")
    assert missed.status == "expired" and missed.filled_quantity == 0
    assert "nothing filled inside the limit" in sim.order_reason("p.001") and "SIMULATED" in sim.order_reason("p.001")
    assert session_bars(prices["close"]["AAA"], fill_day).equals(bars), "the same bars on every run"


def test_a_child_with_impact_fills_what_its_limit_allows_and_expires_the_rest(tmp_path):
    prices = closes()
    volume = pd.DataFrame(2_000.0, index=prices.index, columns=SYMBOLS)  # thin: impact binds
    prices = pd.concat({**{f: prices[f] for f in prices.columns.get_level_values(0).unique()}, "volume": volume}, axis=1)
    from research_lib.backtest import CostModel
    sim = SimBroker(tmp_path / "s.sqlite", prices, costs=CostModel(commission_bps=0.0, impact_coefficient=1.0),
                    start=prices.index[30])
    bars = session_bars(prices["close"]["AAA"], prices.index[31], volume=2_000.0)
    reference = typical(bars, 0, 1)
    sim.submit_order("AAA", "buy", 1_000.0, "p.000", limit_price=reference * 1.002, bar=0, bars=1)
    sim.step()
    order = sim.order_by_client_id("p.000")
    assert 0 < order.filled_quantity < 1_000 and order.status == "expired"
    assert order.filled_avg_price <= reference * 1.002 * (1 + 1e-12), "never beyond the limit"
    assert "unfilled: the limit" in sim.order_reason("p.000")
    held = sim.positions()["AAA"].quantity
    assert held == pytest.approx(order.filled_quantity), "the position is what filled, not what was asked"


@pytest.mark.parametrize("kwargs, message", [
    ({"limit_price": 100.0}, "give both"), ({"bar": 3}, "give both"),
    ({"limit_price": math.nan, "bar": 3}, "finite price"), ({"limit_price": -1.0, "bar": 3}, "finite price"),
    ({"limit_price": 100.0, "bar": 75, "bars": 6}, "outside the session"),
    ({"limit_price": 100.0, "bar": -1}, "outside the session"), ({"limit_price": 100.0, "bar": 2.5}, "outside"),
])
def test_a_malformed_child_order_is_refused_and_nothing_is_stored(tmp_path, kwargs, message):
    prices = closes()
    sim = SimBroker(tmp_path / "s.sqlite", prices)
    with pytest.raises(OrderRejected, match=message):
        sim.submit_order("AAA", "buy", 1.0, "p.000", **kwargs)
    assert sim.orders() == []


# ------------------------------------------------------------------ the cycle

def test_a_twap_cycle_records_the_schedule_then_sends_children_that_add_up_to_each_parent(tmp_path):
    prices = closes()
    db = tmp_path / "s.sqlite"
    sim, ledger = SimBroker(db, prices, cost_bps=10.0, start=prices.index[30]), Ledger(db)
    day = prices.index[30]
    report = run_cycle(sim, ledger, inputs_at(prices, day))
    assert report.status == "traded" and {s["symbol"] for s in report.scheduled} == set(SYMBOLS)
    equity = report.equity
    for schedule in ledger.schedules("trend", str(day.date())):
        assert schedule.parent_id == client_order_id("trend", day.date(), schedule.symbol, "buy")
        wanted = 0.3 * equity / prices["close"][schedule.symbol].loc[day]
        children = [o for o in sim.orders() if o.client_order_id.startswith(schedule.parent_id + ".")]
        assert sum(o.quantity for o in children) == pytest.approx(wanted, abs=1e-6), "children add up to the parent"
        assert len(children) == len(schedule.slices) == 12, "a child every 30 minutes of the 09:45-15:30 window"
        for child in schedule.slices:
            assert abs(child["limit_price"] / schedule.arrival_price - 1) <= LIMITS.fat_finger_band
    again = run_cycle(sim, ledger, inputs_at(prices, day))
    assert again.sent == [] and again.scheduled == [], "a re-run of the session sends nothing more"
    sim.step()
    after = run_cycle(sim, ledger, inputs_at(prices, prices.index[31], targets=None))
    assert after.mismatches == [], "the ledger's fills explain the broker's positions"
    assert {i.status for i in ledger.intents("trend", str(day.date()))} <= {"filled", "expired"}
    weights = {s: q * prices["close"][s].loc[prices.index[31]] / after.equity for s, q in after.positions.items()}
    assert all(abs(w - 0.3) < 0.02 for w in weights.values()) and set(weights) == set(SYMBOLS)


def test_every_child_passes_the_pre_trade_checks_on_its_own(tmp_path):
    prices = closes()
    db = tmp_path / "s.sqlite"
    sim, ledger = SimBroker(db, prices, start=prices.index[30]), Ledger(db)
    limits = LIMITS.model_copy(update={"max_daily_orders": 20})  # 3 parents x 12 children would be 36 orders
    report = run_cycle(sim, ledger, inputs_at(prices, prices.index[30], limits=limits))
    assert len(sim.orders()) == 20, "no child beyond the session's order limit"
    refused = [r for r in report.rejected if "max_daily_orders" in r["reason"]]
    assert len(refused) == 16 and all("client_order_id" in r for r in refused)
    day = str(prices.index[30].date())
    assert sum(i.status == "rejected" for i in ledger.intents("trend", day)) == 16


def test_a_halt_cancels_the_children_not_yet_sent(tmp_path):
    prices = closes()
    db = tmp_path / "s.sqlite"
    sim, ledger = SimBroker(db, prices, start=prices.index[30]), Ledger(db)
    day = prices.index[30]
    from research_lib.trading._working import record_schedules
    from research_lib.trading import CycleReport
    from research_lib.risk import Order, Side
    record_schedules(ledger, inputs_at(prices, day), [Order("AAA", Side.BUY, quantity=100.0)], CycleReport("trend", ""))
    ledger.set_kill_switch("trend", KillSwitch.HALTED, "by hand")
    report = run_cycle(sim, ledger, inputs_at(prices, day))
    assert report.status == "halted" and sim.orders() == []
    assert {i.status for i in ledger.intents("trend", str(day.date()))} == {"withdrawn"}


def test_a_config_whose_band_passes_the_fat_finger_band_or_whose_window_passes_the_close_is_refused():
    from research_lib.config import RunConfig
    with pytest.raises(ValueError, match="execution.limit_band 0.06 is wider than risk.fat_finger_band"):
        RunConfig(scenario="x", execution={"algorithm": "twap", "limit_band": 0.06})
    with pytest.raises(ValueError, match="window_end_bar"):
        RunConfig(scenario="x", execution={"algorithm": "twap", "window_end_bar": 90})


def test_a_band_as_wide_as_the_fat_finger_band_passes_the_checks(tmp_path):
    prices = closes()
    sim, ledger = SimBroker(tmp_path / "s.sqlite", prices, start=prices.index[30]), Ledger(tmp_path / "s.sqlite")
    wide = ExecutionConfig(algorithm="twap", limit_band=LIMITS.fat_finger_band)
    report = run_cycle(sim, ledger, inputs_at(prices, prices.index[30], execution=wide))
    assert report.rejected == [] and len(sim.orders()) == 36


def test_a_rerun_after_a_crash_sends_the_rest_of_a_working_parent_under_the_open_order_limit(tmp_path):
    from research_lib.broker import BrokerUnavailable
    prices = closes()
    one, limits = pd.Series({"AAA": 0.5}), LIMITS.model_copy(update={"max_open_orders": 1})
    sim, ledger = SimBroker(tmp_path / "s.sqlite", prices, start=prices.index[30]), Ledger(tmp_path / "s.sqlite")
    submit, calls = sim.submit_order, []

    def down_at_the_fourth(*args, **kwargs):  # the broker is unreachable for the fourth child
        calls.append(args)
        if len(calls) == 4:
            raise BrokerUnavailable("down")
        return submit(*args, **kwargs)

    sim.submit_order = down_at_the_fourth
    with pytest.raises(BrokerUnavailable):
        run_cycle(sim, ledger, inputs_at(prices, prices.index[30], targets=one, limits=limits))
    sim.submit_order = submit
    again = run_cycle(sim, ledger, inputs_at(prices, prices.index[30], targets=one, limits=limits))
    assert again.rejected == [] and len(sim.orders()) == 12, "one working parent is one open order"


def test_after_a_halt_and_a_resume_the_decision_is_worked_again_and_withdrawn_children_are_not_orders(tmp_path):
    from research_lib.trading._working import record_schedules
    from research_lib.trading import CycleReport
    from research_lib.risk import Order, Side
    prices = closes()
    day, limits = prices.index[30], LIMITS.model_copy(update={"max_daily_orders": 24})
    sim, ledger = SimBroker(tmp_path / "s.sqlite", prices, start=day), Ledger(tmp_path / "s.sqlite")
    two = pd.Series({"AAA": 0.3, "BBB": 0.3})
    record_schedules(ledger, inputs_at(prices, day, targets=two), [Order("AAA", Side.BUY, quantity=100.0)],
                     CycleReport("trend", ""))  # a crash right after the schedule was recorded
    ledger.set_kill_switch("trend", KillSwitch.HALTED, "by hand")
    assert run_cycle(sim, ledger, inputs_at(prices, day, targets=two, limits=limits)).status == "halted"
    ledger.set_kill_switch("trend", KillSwitch.ACTIVE, "resumed")
    report = run_cycle(sim, ledger, inputs_at(prices, day, targets=two, limits=limits))
    assert report.rejected == [] and {s["symbol"] for s in report.scheduled} == {"AAA", "BBB"}
    parents = {s.parent_id for s in ledger.schedules("trend", str(day.date()))}
    assert parents == {"trend-20200212-AAA-b", "trend-20200212-AAA-b.r2", "trend-20200212-BBB-b"}
    assert len(sim.orders()) == 24, "the 12 withdrawn children do not count against the 24 orders a day"


def test_an_exit_worked_by_children_sells_the_whole_position_in_one_session(tmp_path):
    prices = closes()
    sim, ledger = SimBroker(tmp_path / "s.sqlite", prices, start=prices.index[30]), Ledger(tmp_path / "s.sqlite")
    run_cycle(sim, ledger, inputs_at(prices, prices.index[30], targets=pd.Series({"AAA": 0.3})))
    sim.step()
    exit_ = run_cycle(sim, ledger, inputs_at(prices, prices.index[31], targets=pd.Series({"AAA": 0.0})))
    assert exit_.rejected == [] and exit_.scheduled and exit_.scheduled[0]["side"] == "sell"
    sim.step()
    assert "AAA" not in sim.positions(), "no dust left after an exit"


def test_a_parent_of_more_shares_than_fine_lots_can_count_is_worked_in_larger_lots(tmp_path):
    cheap = closes() * 0.0005  # about 5 cents a share: 10 million shares for half the book
    sim, ledger = SimBroker(tmp_path / "s.sqlite", cheap, start=cheap.index[30]), Ledger(tmp_path / "s.sqlite")
    limits = LIMITS.model_copy(update={"max_order_notional": 1e7})
    report = run_cycle(sim, ledger, inputs_at(cheap, cheap.index[30], targets=pd.Series({"AAA": 0.5}), limits=limits))
    assert report.rejected == [] and report.scheduled[0]["quantity"] > 9e6
    assert sum(o.quantity for o in sim.orders()) == pytest.approx(report.scheduled[0]["quantity"], rel=1e-9)


# ------------------------------------------------------------------ SIGKILL at random moments

ONE = pd.Series({"AAA": 0.5})  # one parent
HOURLY = ExecutionConfig(algorithm="twap", bars_per_slice=12)  # six children, one an hour


def _run_in_child(db, prices, day) -> int:
    """Fork a process that runs the session's cycle; return its pid."""
    pid = os.fork()
    if pid == 0:  # the child: run the cycle and leave at once, whatever happens
        try:
            run_cycle(SimBroker(db, prices, start=prices.index[30]), Ledger(db),
                      inputs_at(prices, day, HOURLY, targets=ONE))
        finally:
            os._exit(0)
    return pid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the cycle to kill it")
def test_a_sigkill_at_any_moment_of_a_schedule_never_sends_a_slice_twice_and_the_rerun_completes_it(tmp_path):
    prices = closes()
    day = prices.index[30]
    reference_db = tmp_path / "reference.sqlite"
    started = time.perf_counter()
    os.waitpid(_run_in_child(reference_db, prices, day), 0)
    duration = time.perf_counter() - started
    reference = {(o.client_order_id, round(o.quantity, 9), o.side) for o in SimBroker(reference_db, prices).orders()}
    assert len(reference) == 6
    rng = np.random.default_rng(18)
    states = []
    # Even trials kill at a moment uniform over the whole run; odd ones uniform between the latest
    # moment a kill found nothing sent and the earliest it found everything sent, so that enough
    # kills land while the children are being sent, however the machine's load stretches the
    # process start (a fixed range left as few as 9 of 50 there on a busy machine).
    nothing_sent_until, all_sent_from = 0.0, duration * 1.1
    for trial in range(50):
        db = tmp_path / f"trial{trial}.sqlite"
        pid = _run_in_child(db, prices, day)
        low, high = sorted((nothing_sent_until, all_sent_from)) if trial % 2 else (0.0, duration * 1.1)
        delay = rng.uniform(low, high)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sim = SimBroker(db, prices, start=prices.index[30]) if db.exists() else None
        states.append(0 if sim is None else len(sim.orders()))
        if states[-1] == 0:
            nothing_sent_until = max(nothing_sent_until, delay)
        elif states[-1] == 6:
            all_sent_from = min(all_sent_from, delay)
        ledger = Ledger(db)
        sim = sim or SimBroker(db, prices, start=prices.index[30])
        schedules_before = ledger.schedules("trend", str(day.date()))
        report = run_cycle(sim, ledger, inputs_at(prices, day, HOURLY, targets=ONE))  # the re-run
        assert report.status in ("traded", "nothing_to_do")
        orders = sim.orders()
        ids = [o.client_order_id for o in orders]
        assert len(ids) == len(set(ids)), f"trial {trial}: a slice sent twice"
        assert {(o.client_order_id, round(o.quantity, 9), o.side) for o in orders} == reference, \
            f"trial {trial}: the completed schedule differs from an uncrashed run's"
        assert all(s in ledger.schedules("trend", str(day.date())) for s in schedules_before), \
            "a recorded schedule is resumed, never planned again"
        if trial % 10 == 0:
            assert run_cycle(sim, ledger, inputs_at(prices, day, HOURLY, targets=ONE)).sent == [], \
                "and a third run sends nothing"
    mid = sum(0 < n < 6 for n in states)
    print("children at the broker when killed:", states)
    assert mid >= 10, f"only {mid} of 50 kills landed mid-schedule ({states}); the test would prove little"


# ------------------------------------------------------------------ the paper report

def test_a_twap_strategy_trades_in_children_and_its_report_measures_each_parent(workspace):
    import yaml

    from research_lib.stages.paper import trade_session
    from tests.test_paper import SYMBOLS as PAPER_SYMBOLS
    from tests.test_paper import promote_by_hand, sim_of

    made = promote_by_hand(workspace)
    record = yaml.safe_load(made["file"].read_text())
    record["params"]["execution"] = {"algorithm": "twap"}
    made["file"].write_text(yaml.safe_dump(record, sort_keys=False))
    first = trade_session("trend")
    assert {s["symbol"] for s in first["cycle"]["scheduled"]} == set(PAPER_SYMBOLS)
    assert first["execution"]["algorithm"] == "twap" and first["execution"]["orders"] == [], "nothing filled yet"
    second = trade_session("trend")  # the next session: the children worked in its bars
    rows = second["execution"]["orders"]
    assert {r["symbol"] for r in rows} == set(PAPER_SYMBOLS) and {r["algorithm"] for r in rows} == {"twap"}
    fills = sim_of().fills()
    for row in rows:  # Perold's shortfall from the broker's own fills and the fill session's close
        mine = [f for f in fills if f.symbol == row["symbol"] and f.session.isoformat() == row["fill_session"]]
        filled = sum(f.quantity for f in mine)
        close = made["prices"]["close"][row["symbol"]].loc[row["fill_session"]]
        paid = sum(f.quantity * f.price for f in mine) + (row["quantity"] - filled) * close
        sign = 1 if row["side"] == "buy" else -1
        perold = 1e4 * sign * (paid - row["quantity"] * row["arrival"]) / (row["quantity"] * row["arrival"])
        assert row["shortfall_bps"]["total"] == pytest.approx(perold, abs=1e-6)
        parts = sum(v for k, v in row["shortfall_bps"].items() if k != "total")
        assert parts == pytest.approx(row["shortfall_bps"]["total"], abs=1e-9)
        assert row["filled"] == pytest.approx(filled) and row["orders"] == 12
        better_bps = 1e4 * sign * (row["twap"] - row["average_fill"]) / row["twap"]
        assert row["beat_twap"] == ("beat" if better_bps > 0.1 else "missed" if better_bps < -0.1 else "even")
        assert row["participation"] is None and row["vwap"] is None, "the prices have no volume: not measured"
    from research_lib.paths import state_db
    from research_lib.trading import Ledger as WorkspaceLedger, execution_quality
    everything = execution_quality(WorkspaceLedger(state_db()), "trend", made["prices"], 0.0)
    assert execution_quality(WorkspaceLedger(state_db()), "trend", made["prices"], 0.0, latest=2) == everything[-2:]
    pages = sorted(workspace.rglob("summary.html"), key=lambda p: p.stat().st_mtime)
    html = pages[-1].read_text()
    assert "Execution quality" in html and "SIMULATED" in html and "TWAP" in html
    assert all(f"{r['twap']:.2f} {r['beat_twap']}" in html for r in rows), "each parent against its window's TWAP"


# ------------------------------------------------------------------ the research side

@pytest.mark.parametrize("execution", [
    {"algorithm": "market"}, {"algorithm": "twap"}, {"algorithm": "twap", "bars_per_slice": 1},
    {"algorithm": "vwap"}, {"algorithm": "vwap", "window_start_bar": 0, "window_end_bar": 78, "bars_per_slice": 5},
    {"algorithm": "iceberg", "display_fraction": 0.25}, {"algorithm": "iceberg", "display_fraction": 0.3},
    {"algorithm": "iceberg", "display_fraction": 0.001}, {"algorithm": "iceberg", "display_fraction": 0.01},
    {"algorithm": "iceberg", "display_fraction": 0.001, "end_policy": "leave"}])
def test_the_backtest_charges_the_impact_an_algorithm_pays_in_the_simulator(execution):
    from research_lib.config import RunConfig
    from research_lib.execution import MarketModel, plan_schedule, simulate_execution
    flat = RunConfig(scenario="x", backtest={"impact_coefficient": 0.5})
    worked = RunConfig(scenario="x", backtest={"impact_coefficient": 0.5, "impact_from_execution": True},
                       execution=execution)
    assert flat.backtest_model()["impact_coefficient"] == 0.5, "off by default: the whole order at the close"
    coefficient = worked.backtest_model()["impact_coefficient"]
    if execution["algorithm"] in ("market", "twap"):
        window = 1 if execution["algorithm"] == "market" else 69
        assert coefficient == pytest.approx(0.5 / math.sqrt(window)), "the square-root law on 1/window a bar"
    # the oracle: the simulator's own impact on a parent worked by the algorithm, on flat bars (no drift,
    # even volume, no cap), against the backtest's law with the coefficient the config gives
    from research_lib.execution.intraday import u_shape
    flat_bars = pd.DataFrame({"open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0,
                              "volume": 1e9 * u_shape()}, index=range(BARS_PER_SESSION))
    config = worked.execution.model_copy(update={"participation_cap": 1.0, "limit_band": 0.05})
    quantity = 0.02 * flat_bars["volume"].sum()
    slices, left = plan_schedule("p", "buy", quantity, 100.0, flat_bars["volume"].to_numpy(), config)
    result = simulate_execution(slices, flat_bars, side="buy", quantity=quantity, arrival_price=100.0,
                                daily_volatility=0.02, model=MarketModel(spread_bps=0.0, impact_coefficient=0.5))
    from research_lib.backtest import impact_rate
    backtest_bps = 1e4 * impact_rate(coefficient, 0.02, quantity, flat_bars["volume"].sum())
    filled = result.filled / quantity  # what the backtest trades is all of it: compare per unit filled
    assert result.shortfall_bps["impact"] == pytest.approx(backtest_bps, rel=1e-6), \
        "the backtest charges the impact the simulator measures for the algorithm"
    assert left == 0 and filled == pytest.approx(1.0) or execution.get("end_policy") == "leave"


def test_a_child_never_sent_in_its_session_is_withdrawn_when_a_later_session_trades(tmp_path):
    from research_lib.trading._working import record_schedules
    from research_lib.trading import CycleReport
    from research_lib.risk import Order, Side
    prices = closes()
    sim, ledger = SimBroker(tmp_path / "s.sqlite", prices, start=prices.index[30]), Ledger(tmp_path / "s.sqlite")
    record_schedules(ledger, inputs_at(prices, prices.index[30]), [Order("AAA", Side.BUY, quantity=100.0)],
                     CycleReport("trend", ""))  # recorded, then the process died before sending
    sim.step()
    run_cycle(sim, ledger, inputs_at(prices, prices.index[31], targets=None))
    old = ledger.intents("trend", str(prices.index[30].date()))
    assert {i.status for i in old} == {"withdrawn"} and sim.orders() == []
