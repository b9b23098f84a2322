"""Paper trading of a promoted strategy, one session at a time (`research_lib.stages.paper`),
and how it tracks the backtest (`research_lib.trading._tracking`).

Fast: the promoted strategy is built by hand (a run folder with prices, weights and a manifest,
and ``params/promoted/<name>.yaml`` shaped as `research_lib.validation.promotion.promote` writes it); no
research pipeline, no notebook. The `spartan trade` command end to end is tested elsewhere.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from research_lib.broker import BrokerUnavailable, SimBroker
from research_lib.config import load_config
from research_lib.data._snapshot import sha256_of
from research_lib.errors import ConfigError
from research_lib.llm import OFFLINE_LABEL
from research_lib.risk import KillSwitch
from research_lib.risk._research import UNKNOWN_VOLUME
from research_lib.paths import state_db
from research_lib.stages.paper import trade_session
from research_lib.trading import (ALL_STRATEGIES, Intent, InvalidSession, Ledger, TradingRefused, describe_session,
                                  describe_status, halt, resolve_session, resume, status)
from research_lib.trading._market import legacy_cost_note, open_sim, reference_prices
from research_lib.trading._run import decision_at, with_cash_buffer
from research_lib.validation.promotion import NotPromoted, load_promoted
from research_lib.trading._tracking import (MIN_DRIFT_SESSIONS, daily_pnl, drift, expected_backtest,
                                            mean_slippage_bps, slippage)
from tests.conftest import REPO, make_prices

SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
N_SESSIONS = 80
DECISION_ROWS = (0, 20, 40, 60)  # a decision every 20 sessions
BOOKS = [[0.28, 0.28, 0.22, 0.22],  # each sums to 1, within smoke.yaml's risk.max_weight (0.3)
         [0.25, 0.25, 0.25, 0.25],
         [0.10, 0.30, 0.30, 0.30],
         [0.30, 0.10, 0.30, 0.30]]
SIM_START_ROW = 20
ANALYST = OFFLINE_LABEL  # what a run with the offline analyst records in manifest.json["llm"]["analyst"]


# ---------------------------------------------------------------- a promoted strategy, by hand


def market(volume: bool = False, seed: int = 7) -> pd.DataFrame:
    """A canonical frame: ~80 business days of 4 symbols (random walks), with volume if asked."""
    rng = np.random.default_rng(seed)
    closes = 50.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.01, size=(N_SESSIONS, len(SYMBOLS))), axis=0))
    fields = {}
    if volume:
        fields["volume"] = {s: rng.uniform(1e6, 2e6, N_SESSIONS) for s in SYMBOLS}
    return make_prices({s: closes[:, i] for i, s in enumerate(SYMBOLS)}, **fields)


def decisions(prices: pd.DataFrame) -> pd.DataFrame:
    """The run's weights: one row every 20 sessions, columns the symbols."""
    return pd.DataFrame(BOOKS, index=prices.index[list(DECISION_ROWS)], columns=SYMBOLS)


def promote_by_hand(workspace, name: str = "trend", *, prices: pd.DataFrame | None = None,
                    weights: pd.DataFrame | None = None, run_id: str | None = None, **paper) -> dict:
    """Write reports/runs/<run_id>/ and params/promoted/<name>.yaml as `spartan promote` would.

    ``paper`` overrides keys of the ``paper`` section (default: the sim starts at the second
    decision). Returns the paths, the prices and the weights.
    """
    prices = market() if prices is None else prices
    weights = decisions(prices) if weights is None else weights
    run_id = run_id or f"20240101-000000-{name}"
    run_dir = workspace / "reports" / "runs" / run_id
    run_dir.mkdir(parents=True)
    prices.to_parquet(run_dir / "prices.parquet")
    weights.to_parquet(run_dir / "weights.parquet")
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_id, "llm": {"analyst": ANALYST}}))
    params = load_config(REPO / "params" / "smoke.yaml").model_dump(mode="json")
    params["scenario"] = name
    params["risk"]["max_order_notional"] = 500_000.0
    params["paper"].update({"sim_start": f"{prices.index[SIM_START_ROW]:%Y-%m-%d}", **paper})
    record = {"strategy": name, "run_id": run_id, "run_dir": str(run_dir.resolve()), "params": params,
              "artifacts": {f: sha256_of(run_dir / f) for f in ("weights.parquet", "prices.parquet")},
              "gate": {"passed": False}, "override_reason": "test"}
    promoted = workspace / "params" / "promoted" / f"{name}.yaml"
    promoted.write_text(yaml.safe_dump(record, sort_keys=False))
    return {"file": promoted, "run_dir": run_dir, "prices": prices, "weights": weights, "sessions": prices.index}


def day(sessions: pd.DatetimeIndex, row: int) -> dt.date:
    return sessions[row].date()


def sim_of(name: str = "trend") -> SimBroker:
    return open_sim(load_promoted(name), state_db())


# ---------------------------------------------------------------- 1. load_promoted


def test_a_strategy_that_is_not_promoted_is_refused_with_what_is_and_how_to_promote(workspace):
    folder = str((workspace / "params" / "promoted").resolve())
    with pytest.raises(NotPromoted) as nothing:
        load_promoted(None)
    assert folder in str(nothing.value) and "none" in str(nothing.value) and "spartan promote" in str(nothing.value)
    promote_by_hand(workspace, "alpha")
    with pytest.raises(NotPromoted) as absent:
        load_promoted("beta")
    message = str(absent.value)
    assert isinstance(absent.value, ConfigError)
    assert "'beta' is not promoted" in message and folder in message and "holds: alpha" in message
    assert "spartan promote" in message


def test_the_only_promoted_strategy_is_picked_and_several_need_a_name(workspace):
    made = promote_by_hand(workspace, "alpha")
    only = load_promoted(None)
    assert only.name == "alpha" and only.run_dir == made["run_dir"].resolve()
    pd.testing.assert_frame_equal(only.weights, made["weights"], check_freq=False)
    pd.testing.assert_frame_equal(only.prices, made["prices"], check_freq=False)
    assert only.starting_cash == 1_000_000.0 and only.config.risk.max_weight == 0.3
    promote_by_hand(workspace, "beta")
    with pytest.raises(NotPromoted, match=r"Several strategies are promoted .*\(alpha, beta\).*--strategy NAME"):
        load_promoted(None)
    assert load_promoted("beta").name == "beta"


def test_weights_changed_after_promotion_are_refused(workspace):
    made = promote_by_hand(workspace)
    changed = made["weights"].copy()
    changed.iloc[-1] = [0.25, 0.25, 0.25, 0.25]
    changed.to_parquet(made["run_dir"] / "weights.parquet")
    with pytest.raises(ConfigError, match=r"weights.parquet changed since 'trend' was promoted \(sha256 differs"):
        load_promoted("trend")


def test_a_run_folder_whose_files_are_missing_is_refused(workspace):
    made = promote_by_hand(workspace)
    (made["run_dir"] / "prices.parquet").unlink()
    with pytest.raises(ConfigError, match=r"points at run 20240101-000000-trend, but .*prices.parquet is missing"):
        load_promoted("trend")
    for path in made["run_dir"].iterdir():
        path.unlink()
    made["run_dir"].rmdir()
    with pytest.raises(ConfigError, match=r"weights.parquet is missing"):
        load_promoted("trend")


# ---------------------------------------------------------------- 2. decision_at


def test_the_decision_is_the_latest_row_at_or_before_the_session():
    prices = market()
    sessions, weights = prices.index, decisions(prices)
    decided, targets = decision_at(weights, day(sessions, 20), sessions, 31)
    assert decided == sessions[20] and targets.to_dict() == dict(zip(SYMBOLS, BOOKS[1]))
    decided, targets = decision_at(weights, day(sessions, 39), sessions, 31)
    assert decided == sessions[20] and targets.to_dict() == dict(zip(SYMBOLS, BOOKS[1]))
    zeros = weights.copy()
    zeros.loc[sessions[40], "AAA"] = 0.0
    zeros.loc[sessions[40], "BBB"] = np.nan
    decided, targets = decision_at(zeros, day(sessions, 45), sessions, 31)
    assert decided == sessions[40] and list(targets.index) == ["CCC", "DDD"], "zero and NaN weights are not targets"


def test_no_look_ahead_changing_or_adding_later_rows_does_not_move_the_past():
    prices = market()
    sessions, weights = prices.index, decisions(prices)
    session = day(sessions, 30)
    before = decision_at(weights, session, sessions, 31)
    future = weights.copy()
    future.loc[sessions[40]] = [0.9, 0.05, 0.05, 0.0]  # a later decision changed
    future.loc[sessions[31]] = [0.0, 0.0, 0.5, 0.5]  # and one added the session after
    future = future.sort_index()
    after = decision_at(future, session, sessions, 31)
    assert after[0] == before[0] == sessions[20]
    pd.testing.assert_series_equal(after[1], before[1])
    assert decision_at(future, day(sessions, 31), sessions, 31)[0] == sessions[31], "the added row counts from its date"


def test_a_session_before_the_first_decision_is_refused():
    prices = market()
    sessions = prices.index
    weights = decisions(prices).iloc[1:]  # the first decision is session 20
    with pytest.raises(TradingRefused, match=rf"no decision at or before {sessions[19]:%Y-%m-%d} \(its first is "
                                             rf"{sessions[20]:%Y-%m-%d}\)"):
        decision_at(weights, day(sessions, 19), sessions, 31)


def test_a_decision_older_than_max_target_age_sessions_is_refused():
    prices = market()
    sessions, weights = prices.index, decisions(prices)
    assert decision_at(weights, day(sessions, 25), sessions, 5)[0] == sessions[20], "5 sessions old: allowed"
    with pytest.raises(TradingRefused) as stale:
        decision_at(weights, day(sessions, 26), sessions, 5)
    message = str(stale.value)
    assert f"({sessions[20]:%Y-%m-%d}) is 6 sessions old" in message
    assert "paper.max_target_age_sessions: 5" in message and "promote the new run" in message
    # Past the end of the prices the age is counted in weekdays.
    last = sessions[-1]
    with pytest.raises(TradingRefused, match=r"is 25 sessions old .*max_target_age_sessions: 24"):
        decision_at(weights, (last + pd.offsets.BDay(6)).date(), sessions, 24)


# ---------------------------------------------------------------- 3. with_cash_buffer


def test_the_cash_buffer_scales_long_targets_and_leaves_shorts_and_small_books_alone():
    book = pd.Series({"AAA": 0.6, "BBB": 0.5, "CCC": -0.3})
    scaled = with_cash_buffer(book, 0.05)
    assert scaled["AAA"] == pytest.approx(0.6 * 0.95 / 1.1) and scaled["BBB"] == pytest.approx(0.5 * 0.95 / 1.1)
    assert scaled[scaled > 0].sum() == pytest.approx(0.95) and scaled["CCC"] == -0.3
    small = pd.Series({"AAA": 0.5, "BBB": 0.4})
    pd.testing.assert_series_equal(with_cash_buffer(small, 0.05), small)
    full = pd.Series({"AAA": 0.5, "BBB": 0.5})
    assert with_cash_buffer(full, 0.005).sum() == pytest.approx(0.995)
    shorts = pd.Series({"AAA": -0.5, "BBB": -0.5})
    pd.testing.assert_series_equal(with_cash_buffer(shorts, 0.1), shorts)


# ---------------------------------------------------------------- 4. reference_prices


def test_reference_prices_are_the_session_closes_and_the_adv_of_the_sessions_up_to_it():
    prices = market(volume=True)
    sessions = prices.index
    close, adv, checked = reference_prices(prices, day(sessions, 30), 5, unknown_volume_passes=False)
    pd.testing.assert_series_equal(close, prices["close"].loc[sessions[30]])
    expected = prices["volume"].to_numpy()[26:31].mean(axis=0)  # sessions 26..30, the session included
    np.testing.assert_allclose(adv.to_numpy(), expected)
    assert checked is True
    early = reference_prices(prices, day(sessions, 2), 5, unknown_volume_passes=False)[1]
    np.testing.assert_allclose(early.to_numpy(), prices["volume"].to_numpy()[:3].mean(axis=0))
    later = prices.copy()
    later.loc[sessions[31]:, "volume"] = 1.0  # what happens after the session is not known at it
    later.loc[sessions[31]:, "close"] = 1.0
    close_again, adv_again, _ = reference_prices(later, day(sessions, 30), 5, unknown_volume_passes=False)
    pd.testing.assert_series_equal(adv_again, adv)
    pd.testing.assert_series_equal(close_again, close)
    with pytest.raises(TradingRefused, match="is not a session of the prices"):
        reference_prices(prices, dt.date(2020, 1, 4), 5, unknown_volume_passes=False)  # a Saturday


def test_without_volume_the_adv_passes_for_the_sim_and_fails_closed_otherwise():
    prices = market(volume=False)
    session = day(prices.index, 30)
    close, adv, checked = reference_prices(prices, session, 20, unknown_volume_passes=True)
    assert checked is False and (adv == UNKNOWN_VOLUME).all() and adv.min() > 1e300
    assert list(adv.index) == SYMBOLS and close.notna().all()
    _, closed, checked = reference_prices(prices, session, 20, unknown_volume_passes=False)
    assert checked is False and closed.isna().all() and list(closed.index) == SYMBOLS


def test_the_session_report_says_whether_the_adv_was_checked(workspace):
    promote_by_hand(workspace, "withvolume", prices=market(volume=True))
    promote_by_hand(workspace, "novolume", prices=market(volume=False))
    checked = trade_session("withvolume")
    unchecked = trade_session("novolume")
    assert checked["adv_checked"] is True and unchecked["adv_checked"] is False
    assert checked["status"] == unchecked["status"] == "traded"
    html = (workspace / "reports" / "paper" / "novolume" / unchecked["session"] / "summary.html").read_text()
    assert "share-of-ADV limit could not be checked" in html
    html = (workspace / "reports" / "paper" / "withvolume" / checked["session"] / "summary.html").read_text()
    assert "could not be checked" not in html


# ---------------------------------------------------------------- 5. trade_session on the sim


def test_the_first_session_sends_the_decision_in_force_and_a_rerun_sends_nothing_new(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    first = trade_session("trend")
    assert first["session"] == f"{sessions[20]:%Y-%m-%d}" and first["decision"] == f"{sessions[20]:%Y-%m-%d}"
    assert first["status"] == "traded" and first["rebalance"] is True and first["broker"] == "sim"
    sent = {o["symbol"]: o for o in first["cycle"]["sent"]}
    assert set(sent) == set(SYMBOLS) and {o["side"] for o in sent.values()} == {"buy"}
    close = made["prices"]["close"].loc[sessions[20]]
    for symbol, weight in zip(SYMBOLS, BOOKS[1]):  # targets after the 0.5 % cash buffer, at the session's close
        assert sent[symbol]["quantity"] == pytest.approx(weight * 0.995 * 1_000_000 / close[symbol])
    orders = sim_of().orders()
    assert len(orders) == 4 and all(o.status == "new" for o in orders)
    assert len(first["open_orders"]) == 4 and len(first["session_orders"]) == 4

    cycles = Ledger(state_db()).cycles("trend")
    again = trade_session("trend", asof=sessions[20].date())
    assert again == json.loads(json.dumps(first, default=str)), "the session was traded: its report stands"
    assert again["status"] == "traded" and len(again["cycle"]["sent"]) == 4
    assert sim_of().orders() == orders, "a re-run of the session sends nothing new"
    assert Ledger(state_db()).cycles("trend") == cycles, "and runs no cycle"


def test_a_session_without_a_new_decision_holds_and_a_new_decision_rebalances(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    trade_session("trend")  # session 20
    hold = trade_session("trend")  # asof omitted: session 21, the orders of 20 filled at its close
    assert hold["session"] == f"{sessions[21]:%Y-%m-%d}" and hold["decision"] == f"{sessions[20]:%Y-%m-%d}"
    assert hold["status"] == "nothing_to_do" and hold["rebalance"] is False and hold["cycle"]["sent"] == []
    assert {p["symbol"] for p in hold["positions"]} == set(SYMBOLS) and hold["open_orders"] == []
    assert all(p["target"] is None for p in hold["positions"]), "holding: no targets"
    assert len(sim_of().orders()) == 4
    drifted = trade_session("trend", asof=sessions[35].date())
    assert drifted["status"] == "nothing_to_do" and drifted["rebalance"] is False and len(sim_of().orders()) == 4
    new = trade_session("trend", asof=sessions[40].date())
    assert new["decision"] == f"{sessions[40]:%Y-%m-%d}" and new["rebalance"] is True and new["status"] == "traded"
    sides = {o["symbol"]: o["side"] for o in new["cycle"]["sent"]}
    assert sides["AAA"] == "sell" and {sides.get(s) for s in ("BBB", "CCC", "DDD")} == {"buy"}  # 0.25 -> 0.10 / 0.30
    assert len(sim_of().orders()) == 4 + len(sides)


def test_asof_omitted_moves_one_session_after_a_finished_cycle_and_stays_after_an_unfinished_one(workspace,
                                                                                                 monkeypatch):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    assert resolve_session("trend")[2] == day(sessions, 20), "a new account stands at paper.sim_start"
    trade_session("trend")
    assert resolve_session("trend")[2] == day(sessions, 21)

    def broker_down(self):
        raise BrokerUnavailable("simulated outage")

    with monkeypatch.context() as patched, pytest.raises(BrokerUnavailable):
        patched.setattr(SimBroker, "clock", broker_down)
        trade_session("trend")  # session 21: the sim moved there, the cycle failed
    assert Ledger(state_db()).cycles("trend")[-1]["status"].startswith("failed")
    assert sim_of().sim_date == sessions[21]
    assert resolve_session("trend")[2] == day(sessions, 21), "a session whose cycle failed is traded again"
    retried = trade_session("trend")
    assert retried["session"] == f"{sessions[21]:%Y-%m-%d}" and retried["status"] == "nothing_to_do"
    assert resolve_session("trend")[2] == day(sessions, 22)


def test_asof_before_the_sim_date_is_refused_and_sends_nothing(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    trade_session("trend", asof=sessions[25].date())
    orders = sim_of().orders()
    cycles = Ledger(state_db()).cycles("trend")
    with pytest.raises(InvalidSession, match=rf"--asof {sessions[22]:%Y-%m-%d} is before {sessions[25]:%Y-%m-%d}, "
                                             r"the last session traded\..* never going back"):
        trade_session("trend", asof=sessions[22].date())
    assert sim_of().orders() == orders and sim_of().sim_date == sessions[25]
    assert Ledger(state_db()).cycles("trend") == cycles, "no cycle was started"


def test_a_dry_run_sends_nothing_and_writes_its_own_folder(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    dry = trade_session("trend", dry_run=True)
    assert dry["status"] == "dry_run" and dry["session"] == f"{sessions[20]:%Y-%m-%d}"
    assert len(dry["cycle"]["sent"]) == 4 and all(o["dry_run"] for o in dry["cycle"]["sent"])
    assert sim_of().orders() == [] and Ledger(state_db()).intents("trend") == []
    paper = workspace / "reports" / "paper" / "trend"
    assert (paper / f"{sessions[20]:%Y-%m-%d}-dry-run" / "cycle.json").is_file()
    assert not (paper / f"{sessions[20]:%Y-%m-%d}").exists()
    with pytest.raises(InvalidSession, match="a dry run does not move the simulated market"):
        trade_session("trend", asof=sessions[21].date(), dry_run=True)
    assert resolve_session("trend")[2] == day(sessions, 20), "a dry run does not count as the session's cycle"
    real = trade_session("trend")
    assert real["session"] == f"{sessions[20]:%Y-%m-%d}" and real["status"] == "traded"
    assert len(sim_of().orders()) == 4


def test_the_session_report_is_written_with_the_strategy_kill_switch_and_analyst(workspace):
    made = promote_by_hand(workspace)
    result = trade_session("trend")
    folder = workspace / "reports" / "paper" / "trend" / f"{made['sessions'][20]:%Y-%m-%d}"
    stored = json.loads((folder / "cycle.json").read_text())
    assert stored["strategy"] == "trend" and stored["status"] == "traded" and len(stored["cycle"]["sent"]) == 4
    assert stored["kill_switch"]["state"] == "active" and stored["analyst"] == ANALYST
    assert stored["promoted"] == {**stored["promoted"], "run_id": "20240101-000000-trend", "override_reason": "test",
                                  "gate_passed": False}
    assert stored["account"]["starting_cash"] == 1_000_000.0 and stored["account"]["equity"] == 1_000_000.0
    html = (folder / "summary.html").read_text()
    assert "<code>trend</code>" in html and "trading: ACTIVE (kill switch not engaged)" in html and ANALYST in html
    assert "gate overridden: test" in html
    assert result["session"] == stored["session"]


def test_paper_tracks_the_backtest_of_its_own_decisions(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    for _ in range(16):  # sessions 20..35
        result = trade_session("trend")
    assert result["session"] == f"{sessions[35]:%Y-%m-%d}"
    tracking = result["drift"]
    assert tracking["sessions"] == 15 >= MIN_DRIFT_SESSIONS
    # Same decisions, same execution (next close) and costs: only the 0.5 % cash buffer differs.
    assert tracking["tracking_error"] < 0.01 and tracking["flagged"] is False
    assert tracking["signal_agreement"] > 0.98
    assert tracking["paper_return"] == pytest.approx(tracking["expected_return"], abs=0.002)
    pnl = pd.DataFrame(result["pnl"]).set_index("session")
    assert len(pnl) == 16 and pnl["equity"].iloc[-1] == pytest.approx(result["account"]["equity"])
    assert pnl["pnl"].sum() == pytest.approx(result["account"]["pnl_total"])


def test_a_new_sim_account_charges_the_promoted_backtests_whole_cost_model(workspace):
    """Paper and backtest differ only by what the market does: the account charges the promoted
    run's commission, spread, impact, borrow and cash rate (before issue 14 only the first two)."""
    made = promote_by_hand(workspace, prices=market(volume=True))
    record = yaml.safe_load(made["file"].read_text())
    costs = {"cost_bps": 7.0, "spread_bps": 3.0, "impact_coefficient": 0.1, "borrow_bps_per_year": 80.0,
             "cash_rate_per_year": 0.03}
    record["params"]["backtest"].update(costs)
    made["file"].write_text(yaml.safe_dump(record, sort_keys=False))
    assert trade_session("trend")["status"] == "traded"
    stored = SimBroker.stored_account(state_db(), "paper-trend")
    assert {key: stored[key] for key in costs} == costs


def test_an_account_stored_before_the_whole_cost_model_keeps_trading_on_its_costs_and_says_so(workspace, caplog):
    """Upgrading never strands a paper account: one created when the sim charged only commission and
    spread (impact, borrow and cash rate stored as 0) is not refused for the promoted borrow fee."""
    made = promote_by_hand(workspace)
    promoted = load_promoted("trend")
    b = promoted.config.backtest
    assert b.borrow_bps_per_year > 0, "the shipped parameters charge borrow: the case this test is about"
    SimBroker(state_db(), made["prices"], "paper-trend", starting_cash=promoted.starting_cash, cost_bps=b.cost_bps,
              spread_bps=b.spread_bps, allow_short=promoted.config.risk.allow_short,
              start=day(made["sessions"], SIM_START_ROW))  # as the previous version stored it
    with caplog.at_level("WARNING", logger="research_lib.trading._market"):
        assert trade_session("trend")["status"] == "traded"
        trade_session("trend")
    assert caplog.text.count("created before the sim charged impact, borrow and cash rate") == 1, "said once, not per step"
    note = legacy_cost_note(promoted)
    assert f"borrow_bps_per_year={b.borrow_bps_per_year:g}" in note and "new strategy name" in note
    assert SimBroker.stored_account(state_db(), "paper-trend")["borrow_bps_per_year"] == 0.0


# ---------------------------------------------------------------- 6. kill switch


def test_halt_cancels_open_orders_and_a_halted_session_sends_nothing_until_resumed(workspace):
    promote_by_hand(workspace)
    first = trade_session("trend")
    cids = sorted(o["client_order_id"] for o in first["cycle"]["sent"])
    cancelled = halt()
    assert sorted(cancelled) == cids
    assert {o.status for o in sim_of().orders()} == {"canceled"}
    ledger = Ledger(state_db())
    assert {i.status for i in ledger.intents("trend")} == {"canceled"}
    assert ledger.own_kill_switch(ALL_STRATEGIES)[0] is KillSwitch.HALTED
    orders = sim_of().orders()
    halted = trade_session("trend")
    assert halted["status"] == "halted" and halted["cycle"]["sent"] == [] and sim_of().orders() == orders
    assert halted["kill_switch"] == {"state": "halted", "reason": "all strategies: halted by the user"}
    assert "trading: HALTED (kill switch engaged: no new orders, cancels only)" in describe_session(halted)
    state, reason = resume()["trend"]
    assert state is KillSwitch.ACTIVE and ledger.kill_switch("trend")[0] is KillSwitch.ACTIVE
    assert trade_session("trend")["status"] != "halted"


def test_after_a_halt_and_a_resume_the_kill_switch_reason_is_the_resume_not_never_set(workspace):
    promote_by_hand(workspace)
    halt(reason="operator check")
    assert Ledger(state_db()).kill_switch("trend") == (KillSwitch.HALTED, "all strategies: operator check")
    assert resume(reason="checked, all clear") == {"trend": (KillSwitch.ACTIVE, "all strategies: checked, all clear")}
    assert Ledger(state_db()).kill_switch("trend")[1] == "all strategies: checked, all clear", \
        "status and the session report must not say 'never set' for a switch that was set"


def test_after_a_halt_cancelled_its_orders_resume_trades_the_decision_in_force(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    trade_session("trend")  # session 20: the orders of the decision in force
    assert len(halt()) == 4 and trade_session("trend")["status"] == "halted"  # session 21
    assert resume()["trend"][0] is KillSwitch.ACTIVE  # "trading resumes at the next cycle"
    after = trade_session("trend")  # session 21 again (halted: not done), the decision of 20 in force (until 40)
    assert after["session"] == f"{sessions[21]:%Y-%m-%d}" and after["decision"] == f"{sessions[20]:%Y-%m-%d}"
    assert after["rebalance"] is True and after["status"] == "traded", \
        "the halted orders never filled: the book must not sit in cash until the next decision"
    assert {o["symbol"] for o in after["cycle"]["sent"]} == set(SYMBOLS)
    held = trade_session("trend")  # session 22: now the decision is applied, the book holds
    assert held["rebalance"] is False and {p["symbol"] for p in held["positions"]} == set(SYMBOLS)


def test_halting_one_strategy_leaves_the_others_trading(workspace):
    promote_by_hand(workspace, "alpha")
    promote_by_hand(workspace, "beta")
    assert halt("alpha", reason="operator check") == []
    assert trade_session("alpha")["status"] == "halted"
    assert trade_session("beta")["status"] == "traded"
    assert Ledger(state_db()).kill_switch("alpha") == (KillSwitch.HALTED, "operator check")
    assert resume("alpha") == {"alpha": (KillSwitch.ACTIVE, "resumed by the user")}
    halt("alpha")
    assert resume() == {"alpha": (KillSwitch.ACTIVE, "resumed by the user"),
                        "beta": (KillSwitch.ACTIVE, "all strategies: resumed by the user")}, \
        "resuming every strategy lifts each one's own halt too"


def test_the_halt_file_halts_every_strategy_and_resume_says_it_still_holds(workspace):
    promote_by_hand(workspace)
    halt_file = workspace / "data" / "HALT"
    halt_file.parent.mkdir(parents=True, exist_ok=True)
    halt_file.write_text("broker maintenance\n")
    result = trade_session("trend")
    assert result["status"] == "halted" and result["cycle"]["sent"] == [] and sim_of().orders() == []
    assert "halt file" in result["kill_switch"]["reason"]
    state, reason = resume()["trend"]
    assert state is KillSwitch.HALTED
    assert str(halt_file) in reason and "broker maintenance" in reason and "delete it" in reason
    halt_file.unlink()
    assert Ledger(state_db()).kill_switch("trend")[0] is KillSwitch.ACTIVE
    assert trade_session("trend")["status"] == "traded"


def test_halting_an_unknown_strategy_is_refused(workspace):
    promote_by_hand(workspace)
    with pytest.raises(NotPromoted, match="'unknown' is not promoted"):
        halt("unknown")
    with pytest.raises(NotPromoted):
        resume("unknown")
    assert Ledger(state_db()).kill_switch("trend") == (KillSwitch.ACTIVE, "never set")


# ---------------------------------------------------------------- 7. status


def money(value: float) -> str:
    return f"{value:,.2f}"


def test_status_lists_the_sim_account_and_the_text_shows_the_numbers(workspace):
    made = promote_by_hand(workspace)
    sessions, close = made["sessions"], made["prices"]["close"]
    [never] = status()
    assert never["account"] is None and never["positions"] == [] and never["last_cycle"] is None
    assert "never traded: spartan trade --strategy trend" in describe_status([never])

    trade_session("trend")
    held = trade_session("trend")  # session 21: filled
    [entry] = status()
    sim = sim_of()
    account = sim.account()
    assert entry["strategy"] == "trend" and entry["broker"] == "sim"
    assert entry["kill_switch"] == {"state": "active", "reason": "never set"}
    assert entry["account"] == {"sim_date": f"{sessions[21]:%Y-%m-%d}", "equity": account.equity,
                                "cash": account.cash, "pnl_total": account.equity - 1_000_000.0}
    values = {p["symbol"]: p["value"] for p in entry["positions"]}
    quantities = {s: p.quantity for s, p in sim.positions().items()}
    assert set(values) == set(SYMBOLS)
    for symbol in SYMBOLS:
        assert values[symbol] == pytest.approx(quantities[symbol] * close.loc[sessions[21], symbol])
    assert account.cash + sum(values.values()) == pytest.approx(account.equity)
    assert entry["open_orders"] == [] and entry["last_cycle"]["status"] == "nothing_to_do"

    text = describe_status([entry])
    assert "trend  trading: ACTIVE (kill switch not engaged)" in text and f"sim account at {sessions[21]:%Y-%m-%d}" in text
    table = text.split("  positions:\n")[1].splitlines()
    assert table[0].split() == ["symbol", "quantity", "value"] and len(table) == 1 + len(SYMBOLS), "a header, a row each"
    assert money(account.equity) in text and money(account.cash) in text
    assert money(account.equity - 1_000_000.0) in text
    assert all(symbol in text and money(values[symbol]) in text for symbol in SYMBOLS)

    session_text = describe_session(held)
    assert f"trend {sessions[21]:%Y-%m-%d} on sim: nothing_to_do" in session_text and "holding" in session_text
    assert money(held["account"]["equity"]) in session_text and money(held["account"]["cash"]) in session_text
    assert money(held["account"]["daily_pnl"]) in session_text
    assert held["account"]["daily_pnl"] == pytest.approx(held["account"]["equity"] - 1_000_000.0)

    rebalanced = trade_session("trend", asof=sessions[40].date())
    [entry] = status("trend")
    assert len(entry["open_orders"]) == len(rebalanced["cycle"]["sent"]) > 0
    sent_ids = {o["client_order_id"] for o in rebalanced["cycle"]["sent"]}
    assert {o["client_order_id"] for o in entry["open_orders"]} == sent_ids
    text = describe_status([entry])
    orders = text.split("  open orders:\n")[1].splitlines()
    assert orders[0].split() == ["side", "symbol", "quantity", "client", "order", "id"]
    assert sorted(line.split()[-1] for line in orders[1:]) == sorted(sent_ids) and "traded" in text
    assert f"{len(rebalanced['cycle']['sent'])} sent" in describe_session(rebalanced)
    assert describe_status([]).startswith("No promoted strategy")


# ---------------------------------------------------------------- 8. tracking


def test_daily_pnl_starts_from_the_starting_cash():
    index = pd.bdate_range("2021-03-01", periods=3)
    pnl = daily_pnl(pd.Series([1010.0, 1005.0, 1020.0], index=index), 1000.0)
    assert list(pnl["pnl"]) == pytest.approx([10.0, -5.0, 15.0])
    assert list(pnl["return"]) == pytest.approx([0.01, 1005 / 1010 - 1, 1020 / 1005 - 1])
    assert list(pnl["equity"]) == [1010.0, 1005.0, 1020.0]
    assert daily_pnl(pd.Series([], dtype=float), 1000.0).empty


def test_slippage_is_a_positive_cost_for_buys_above_and_sells_below_the_decision_price():
    intents = [
        Intent("s-1-AAA-b", "s", "2021-03-01", "AAA", "buy", 10.0, 100.0, "filled", "b1", 10.0, 101.0),  # +100 bps
        Intent("s-1-BBB-s", "s", "2021-03-01", "BBB", "sell", 40.0, 50.0, "filled", "b2", 40.0, 49.0),  # +200 bps
        Intent("s-1-CCC-s", "s", "2021-03-01", "CCC", "sell", 5.0, 20.0, "filled", "b3", 5.0, 20.2),  # -100 bps
        Intent("s-1-DDD-b", "s", "2021-03-01", "DDD", "buy", 5.0, 20.0, "canceled", "b4", 0.0, None),  # no fill
    ]
    fills = slippage(intents)
    assert list(fills["symbol"]) == ["AAA", "BBB", "CCC"]
    assert list(fills["slippage_bps"]) == pytest.approx([100.0, 200.0, -100.0])
    assert list(fills["notional"]) == pytest.approx([1000.0, 2000.0, 100.0])
    expected = (100.0 * 1000 + 200.0 * 2000 - 100.0 * 100) / 3100
    assert mean_slippage_bps(fills) == pytest.approx(expected)
    assert mean_slippage_bps(slippage(intents[3:])) is None


def paper_frame(returns: np.ndarray, index: pd.DatetimeIndex) -> pd.DataFrame:
    equity = pd.Series(1_000_000.0 * np.cumprod(1.0 + returns), index=index)
    return daily_pnl(equity, 1_000_000.0)


def test_drift_is_zero_when_paper_follows_the_backtest_and_the_textbook_tracking_error_otherwise():
    rng = np.random.default_rng(3)
    index = pd.bdate_range("2021-03-01", periods=15)
    returns = np.r_[0.0, rng.normal(0.0005, 0.01, 14)]
    holdings = pd.DataFrame({"AAA": 0.5, "BBB": 0.5}, index=index)
    weights = {f"{s:%Y-%m-%d}": {"AAA": 0.5, "BBB": 0.5} for s in index}
    paper = paper_frame(returns, index)
    expected = pd.Series(paper["return"].to_numpy(), index=index)
    same = drift(paper, weights, expected, holdings, 0.05)
    assert same["sessions"] == 14 and same["tracking_error"] == pytest.approx(0.0, abs=1e-12)
    assert same["signal_agreement"] == pytest.approx(1.0) and same["mean_signal_agreement"] == pytest.approx(1.0)
    assert same["flagged"] is False and same["paper_return"] == pytest.approx(same["expected_return"])

    other = pd.Series(returns + rng.normal(0.0, 0.01, 15), index=index)
    half = {k: {"AAA": 0.5, "CCC": 0.5} for k in weights}  # half the book in common
    apart = drift(paper, half, other, holdings, 0.05)
    differences = paper["return"].to_numpy()[1:] - other.to_numpy()[1:]  # the first session only places orders
    textbook = np.std(differences, ddof=1) * np.sqrt(252)
    assert apart["tracking_error"] == pytest.approx(textbook) and textbook > 0.05
    assert apart["flagged"] is True and apart["signal_agreement"] == pytest.approx(0.5)
    assert apart["expected_return"] == pytest.approx(np.prod(1.0 + other.to_numpy()[1:]) - 1.0)
    assert drift(paper, half, other, holdings, float(textbook) * 1.01)["flagged"] is False, "within the tolerance"

    short = drift(paper.iloc[:MIN_DRIFT_SESSIONS], half, other, holdings, 0.05)  # 9 sessions compared
    assert short["sessions"] == MIN_DRIFT_SESSIONS - 1 and short["tracking_error"] > 0.05
    assert short["flagged"] is False, "too few sessions to flag"
    assert drift(paper.iloc[:MIN_DRIFT_SESSIONS + 1], half, other, holdings, 0.05)["flagged"] is True
    assert drift(paper.iloc[:2], half, other, holdings, 0.05)["tracking_error"] is None, "one session: no std"
    assert drift(paper, half, None, None, 0.05)["sessions"] == 0


def test_the_expected_backtest_starts_in_cash_with_the_decision_in_force():
    prices = market()
    sessions, weights = prices.index, decisions(prices)
    close = prices["close"]
    model = {"cost_bps": 10.0, "execution_lag_sessions": 1}
    returns, holdings = expected_backtest(weights, prices, sessions[25], model)
    assert returns.index[0] == sessions[25] and returns.index[-1] == sessions[-1]
    assert returns.loc[sessions[25]] == 0.0 and (holdings.loc[sessions[25]] == 0).all(), "in cash at the start"
    # The decision of session 20 (in force at 25) trades at the next close: only its cost that day.
    assert returns.loc[sessions[26]] == pytest.approx(-10e-4 * sum(BOOKS[1]))
    np.testing.assert_allclose(holdings.loc[sessions[26]].to_numpy(), BOOKS[1])
    gross = (np.array(BOOKS[1]) * (close.loc[sessions[27]] / close.loc[sessions[26]] - 1.0).to_numpy()).sum()
    assert returns.loc[sessions[27]] == pytest.approx(gross) and returns.loc[sessions[27]] != 0.0
    # The next decision (40) trades at 41.
    np.testing.assert_allclose(holdings.loc[sessions[41]].to_numpy(), BOOKS[2])

    later = weights.iloc[1:]  # the first decision is session 20
    assert expected_backtest(later, prices, sessions[10], model) == (None, None)


# ---------------------------------------------------------------- review findings, each pinned


def test_a_rerun_of_a_holding_session_sends_nothing(workspace):
    promote_by_hand(workspace)
    trade_session("trend")  # session 20: rebalance to the decision in force
    trade_session("trend")  # session 21: holds
    placed = sim_of().orders()
    again = trade_session("trend", asof=sim_of().sim_date.date())  # session 21 once more
    assert again["rebalance"] is False and again["cycle"]["sent"] == [] and sim_of().orders() == placed


def test_a_refused_decision_leaves_the_simulated_market_where_it_stands(workspace):
    made = promote_by_hand(workspace, max_target_age_sessions=5)
    trade_session("trend")  # session 20
    with pytest.raises(TradingRefused, match="max_target_age_sessions"):
        trade_session("trend", asof=day(made["sessions"], 30))
    assert sim_of().sim_date == made["sessions"][20], "no fill happened for a refused session"


def test_a_strategy_cannot_switch_brokers_on_the_same_ledger(workspace):
    promote_by_hand(workspace)
    trade_session("trend")
    with pytest.raises(ConfigError, match="has traded on sim.*cannot switch to alpaca"):
        resolve_session("trend", "alpaca")


def test_a_run_validated_with_another_execution_lag_is_refused(workspace):
    made = promote_by_hand(workspace)
    record = yaml.safe_load(made["file"].read_text())
    record["params"]["backtest"]["execution_lag_sessions"] = 2
    made["file"].write_text(yaml.safe_dump(record))
    with pytest.raises(ConfigError, match="execution_lag_sessions is 2.*one session after each decision"):
        load_promoted("trend")


def test_a_promoted_file_without_artifact_hashes_is_refused(workspace):
    made = promote_by_hand(workspace)
    record = yaml.safe_load(made["file"].read_text())
    del record["artifacts"]
    made["file"].write_text(yaml.safe_dump(record))
    with pytest.raises(ConfigError, match="records no sha256 of weights.parquet.*spartan promote"):
        load_promoted("trend")


def test_reduce_only_rejections_leave_the_decision_to_trade_after_resume(workspace):
    promote_by_hand(workspace)
    Ledger(state_db()).set_kill_switch("trend", KillSwitch.REDUCING, "test: daily loss")
    reducing = trade_session("trend")  # session 20: every buy is refused by the kill switch
    assert reducing["cycle"]["sent"] == [] and all(r["reason"].startswith("kill_switch") for r in
                                                   reducing["cycle"]["rejected"])
    resume("trend")
    after = trade_session("trend")  # session 21: the same decision, now traded
    assert after["rebalance"] is True and {o["symbol"] for o in after["cycle"]["sent"]} == set(SYMBOLS)


def test_drift_compounds_the_backtest_over_sessions_the_paper_skipped():
    sessions = pd.bdate_range("2024-01-01", periods=12)
    expected = pd.Series(np.linspace(-0.01, 0.02, 12), index=sessions)
    visited = sessions[::3]  # a cycle every third session
    growth = (1 + expected).cumprod().reindex(visited)
    equity = pd.Series(1e6 * growth.to_numpy() / growth.iloc[0], index=visited)
    result = drift(daily_pnl(equity, 1e6), {}, expected, None, 0.05)
    assert result["sessions"] == len(visited) - 1
    assert result["tracking_error"] == pytest.approx(0.0, abs=1e-12), "paper that follows the backtest does not drift"
    assert result["paper_return"] == pytest.approx(result["expected_return"])


# ---------------------------------------------------------------- alerts from the session


def test_a_foreign_position_halts_and_alerts_a_reconciliation_mismatch(workspace):
    from research_lib.alerts import read_alerts

    promote_by_hand(workspace)
    trade_session("trend")  # session 20
    sim = sim_of()
    sim.submit_order("AAA", "buy", 10.0, "by-hand-AAA")  # a trade outside Spartan, same account
    result = trade_session("trend")  # session 21: it filled at this close
    assert result["status"] == "halted" and result["kill_switch"]["state"] == "halted"
    assert result["cycle"]["mismatches"][0]["symbol"] == "AAA"
    (alert,) = [a for a in read_alerts() if a["kind"] == "reconciliation_mismatch"]
    assert alert["fields"]["strategy"] == "trend" and "HALTED" in alert["message"]


def test_a_kill_switch_tightened_by_the_cycle_and_flagged_drift_alert(workspace):
    from research_lib.alerts import read_alerts

    promote_by_hand(workspace, max_tracking_error=1e-9)  # any tracking error at all is drift here
    for _ in range(MIN_DRIFT_SESSIONS + 2):
        trade_session("trend")
    drifts = [a for a in read_alerts() if a["kind"] == "drift"]
    assert drifts and "tracking error" in drifts[-1]["message"] and drifts[-1]["fields"]["tolerance"] == 1e-9
    Ledger(state_db()).record_equity("trend", "1999-12-31", 1e9, 1e9)  # a peak the account is far below
    trade_session("trend")
    (tripped,) = [a for a in read_alerts() if a["kind"] == "kill_switch"]
    assert "ACTIVE -> HALTED" in tripped["message"] and "drawdown_stop" in tripped["message"]


def test_the_session_summary_escapes_what_users_typed(workspace):
    promote_by_hand(workspace)
    halt(reason="<script>alert(1)</script>")
    result = trade_session("trend")
    page = (workspace / "reports" / "paper" / "trend" / result["session"] / "summary.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


# ---------------------------------------------------------------- a command killed between the ledger and the report
# (In-process stand-ins for a SIGKILL at each step after the ledger recorded the cycle; the
# real kills, of a process, are in tests/test_trade_kill.py.)


class Killed(BaseException):
    """Stands in for a SIGKILL: nothing after it runs in the process."""


KILL_POINTS = {  # where the command dies, after the ledger recorded the cycle: the function it was about to call
    "before cycle.json": ("research_lib.stages.paper", "write_session_report"),
    "between cycle.json and summary.html": ("research_lib.reports.paper", "render_to"),
    "before the alerts": ("research_lib.stages.paper", "raise_session_alerts"),
    "before the ledger records the report": ("research_lib.trading._ledger.Ledger", "finish_cycle"),
}


def killed_at(monkeypatch, point: str, strategy: str = "trend", **kwargs) -> None:
    """Trade a session and die at ``point`` (`KILL_POINTS`), after the ledger finished its cycle."""
    import importlib

    module, name = KILL_POINTS[point]
    owner = (getattr(importlib.import_module(module.rsplit(".", 1)[0]), module.rsplit(".", 1)[1])
             if module.endswith("Ledger") else importlib.import_module(module))
    real = getattr(owner, name)

    def die(*args, **kw):
        if name == "finish_cycle" and "report_written_at" not in args[-1]:
            return real(*args, **kw)  # the cycle's own finish: not yet
        raise Killed(point)

    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(owner, name, die)
        trade_session(strategy, **kwargs)


def report_files(folder) -> dict:
    return {name: (folder / name).exists() for name in ("cycle.json", "summary.html")}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_report_lost_to_a_kill_is_written_from_the_ledger_with_its_alerts_and_the_sim_moves_on(
        workspace, monkeypatch, point):
    from research_lib.alerts import read_alerts

    made = promote_by_hand(workspace)
    sessions, paper = made["sessions"], workspace / "reports" / "paper" / "trend"
    killed_at(monkeypatch, point)  # session 20: the rebalance, 4 orders sent
    [cycle] = Ledger(state_db()).cycles("trend")
    assert cycle["status"] == "traded" and cycle["summary"]["sent"] == 4, "the ledger recorded the cycle"
    placed = sim_of().orders()
    assert resolve_session("trend")[2] == day(sessions, 21), "the cycle finished: the sim moves on"
    again = trade_session("trend", asof=sessions[20].date())  # `spartan trade --asof` the killed session
    stored = json.loads((paper / f"{sessions[20]:%Y-%m-%d}" / "cycle.json").read_text())
    assert again == stored and report_files(paper / f"{sessions[20]:%Y-%m-%d}") == {"cycle.json": True,
                                                                                     "summary.html": True}
    assert stored["status"] == cycle["status"] and len(stored["cycle"]["sent"]) == cycle["summary"]["sent"], \
        "the report states what the ledger recorded, not a re-run's nothing_to_do"
    assert {o["client_order_id"] for o in stored["session_orders"]} == {o.client_order_id for o in placed}
    assert len(stored["open_orders"]) == 4 and sim_of().orders() == placed, "nothing sent twice"
    assert Ledger(state_db()).cycles("trend")[-1]["id"] == cycle["id"], "no cycle was run again"

    sim_of().submit_order("AAA", "buy", 10.0, "by-hand-AAA")  # fills at 21: a mismatch, HALTED, an alert
    killed_at(monkeypatch, point)  # session 21
    later = trade_session("trend", asof=sessions[25].date())  # a later session writes 21's report first
    assert later["session"] == f"{sessions[25]:%Y-%m-%d}"
    recovered = json.loads((paper / f"{sessions[21]:%Y-%m-%d}" / "cycle.json").read_text())
    assert recovered["status"] == "halted" and recovered["cycle"]["mismatches"][0]["symbol"] == "AAA"
    assert (paper / f"{sessions[21]:%Y-%m-%d}" / "summary.html").is_file()
    alerted = [a["fields"]["session"] for a in read_alerts() if a["kind"] == "reconciliation_mismatch"]
    assert alerted[0] == f"{sessions[21]:%Y-%m-%d}", "session 21's alert, raised before session 25 was traded"
    assert [c["session"] for c in Ledger(state_db()).cycles("trend")] == [
        f"{sessions[s]:%Y-%m-%d}" for s in (20, 21, 25)], "no session was run twice"


def test_a_custom_report_dir_is_remembered_and_the_sim_moves_on(workspace, tmp_path):
    made = promote_by_hand(workspace)
    sessions, elsewhere = made["sessions"], tmp_path / "my-reports" / "first"
    first = trade_session("trend", report_dir=elsewhere)
    assert json.loads((elsewhere / "cycle.json").read_text()) == json.loads(json.dumps(first, default=str))
    assert not (workspace / "reports" / "paper" / "trend" / f"{sessions[20]:%Y-%m-%d}").exists()
    assert trade_session("trend", asof=sessions[20].date()) == json.loads(json.dumps(first, default=str)), \
        "traded already: the report where it was written"
    assert not (workspace / "reports" / "paper" / "trend" / f"{sessions[20]:%Y-%m-%d}").exists()
    assert resolve_session("trend")[2] == day(sessions, 21), "not stuck on the session reported elsewhere"
    assert trade_session("trend")["session"] == f"{sessions[21]:%Y-%m-%d}"


def test_a_first_dry_run_never_creates_or_moves_the_sim_account(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    dry = trade_session("trend", asof=sessions[30].date(), dry_run=True)
    assert dry["status"] == "dry_run" and dry["session"] == f"{sessions[30]:%Y-%m-%d}"
    assert len(dry["cycle"]["sent"]) == 4
    assert SimBroker.stored_account(state_db(), "paper-trend") is None, "no account was created"
    assert [(c["session"], c["status"]) for c in Ledger(state_db()).cycles("trend")] == [
        (f"{sessions[30]:%Y-%m-%d}", "dry_run")], "the ledger holds the dry cycle and nothing else"
    assert Ledger(state_db()).intents("trend") == [] and Ledger(state_db()).equity_history("trend") == []
    assert resolve_session("trend", dry_run=True)[2] == day(sessions, 20), "a dry run stands where the sim would"
    assert trade_session("trend", dry_run=True)["session"] == f"{sessions[20]:%Y-%m-%d}"
    assert resolve_session("trend")[2] == day(sessions, 20), "paper.sim_start still comes first"
    assert trade_session("trend", asof=sessions[25].date())["status"] == "traded", "earlier sessions are tradeable"
    assert sim_of().sim_date == sessions[25]


def test_a_cycle_killed_midway_is_marked_interrupted_and_its_session_traded_again(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    trade_session("trend")  # session 20
    sim_of().advance_to(sessions[21])
    Ledger(state_db()).start_cycle("trend", f"{sessions[21]:%Y-%m-%d}", "sim")  # then a SIGKILL
    assert resolve_session("trend")[2] == day(sessions, 21), "an unfinished cycle is not done"
    [entry] = status()
    assert entry["last_cycle"]["status"] == "running"
    result = trade_session("trend")
    assert result["session"] == f"{sessions[21]:%Y-%m-%d}"
    statuses = [(c["status"], c["finished_at"] is None) for c in Ledger(state_db()).cycles("trend")]
    assert statuses == [("traded", False), ("interrupted", True), ("nothing_to_do", False)]


def test_a_dry_run_running_or_killed_never_makes_a_finished_session_trade_again(workspace):
    made = promote_by_hand(workspace)
    sessions = made["sessions"]
    first = trade_session("trend")  # session 20, traded
    report = workspace / "reports" / "paper" / "trend" / f"{sessions[20]:%Y-%m-%d}" / "cycle.json"
    written = report.read_text()
    ledger = Ledger(state_db())
    ledger.start_cycle("trend", f"{sessions[20]:%Y-%m-%d}", "sim", dry_run=True)  # a dry run, then a SIGKILL
    assert resolve_session("trend")[2] == day(sessions, 21), "the dry cycle does not stand for session 20"
    sim_of().advance_to(sessions[21])
    assert trade_session("trend")["session"] == f"{sessions[21]:%Y-%m-%d}"
    assert report.read_text() == written and first["status"] == "traded", "session 20's report stands"
    dry = [c for c in Ledger(state_db()).cycles("trend") if c["summary"].get("dry_run")]
    assert [(c["status"], "interrupted" in c["summary"]) for c in dry] == [("interrupted", True)]


# ---------------------------------------------------------------- 10. a session is done only when a re-run sends nothing


def lose(symbols):
    """A `SimBroker.submit_order` whose request for ``symbols`` is lost before the broker sees it."""
    from research_lib.broker import UnknownOutcome

    real = SimBroker.submit_order

    def submit_order(self, symbol, side, quantity, client_order_id):
        if symbol in symbols:
            raise UnknownOutcome("request lost before reaching the broker")
        return real(self, symbol, side, quantity, client_order_id)
    return submit_order


def halt_after_first_send():
    """A `SimBroker.submit_order` after whose first order `spartan halt` lands (mid-sending)."""
    real = SimBroker.submit_order

    def submit_order(self, *args):
        placed = real(self, *args)
        if len(self.orders()) == 1:
            Ledger(state_db()).set_kill_switch(ALL_STRATEGIES, KillSwitch.HALTED, "halted mid-sending")
        return placed
    return submit_order


def closed_clock():
    real = SimBroker.clock
    return lambda self: dataclasses.replace(real(self), is_open=False)


def blocked_account():
    real = SimBroker.account
    return lambda self: dataclasses.replace(real(self), trading_blocked=True)

# (name, what to patch on SimBroker, its replacement, whether `spartan halt` precedes and `resume` follows)
DISRUPTIONS = [
    ("one request lost", "submit_order", lambda: lose({"CCC"}), False),
    ("every request lost", "submit_order", lambda: lose(set(SYMBOLS)), False),
    ("halted before the cycle", None, None, True),
    ("halted mid-sending", "submit_order", halt_after_first_send, False),
    ("market closed", "clock", closed_clock, False),
    ("trading blocked", "account", blocked_account, False),
]


@pytest.mark.parametrize("name, attribute, replacement, halted", DISRUPTIONS, ids=[d[0] for d in DISRUPTIONS])
def test_a_session_left_with_orders_unsent_is_traded_again_and_converges_to_each_order_once(
        workspace, monkeypatch, name, attribute, replacement, halted):
    made = promote_by_hand(workspace)
    session = f"{made['sessions'][20]:%Y-%m-%d}"
    if halted:
        halt()
    with monkeypatch.context() as patched:
        if attribute:
            patched.setattr(SimBroker, attribute, replacement())
        first = trade_session("trend")
    assert first["session"] == session
    reached = {o.symbol for o in sim_of().orders()}
    assert reached != set(SYMBOLS), f"{name}: the disruption left orders unsent"
    if halted or name == "halted mid-sending":
        cycles = Ledger(state_db()).cycles("trend")
        assert trade_session("trend", asof=session) == json.loads(json.dumps(first, default=str)), \
            f"{name}: while the switch holds, a re-run would be halted too: the report stands"
        assert Ledger(state_db()).cycles("trend") == cycles
        resume()
    assert resolve_session("trend")[2] == day(made["sessions"], 20), f"{name}: the session is not done"
    again = trade_session("trend", asof=session)  # `spartan trade --asof S`: not "already traded"
    assert again["session"] == session and again["status"] == "traded"
    orders = sim_of().orders()
    assert sorted(o.symbol for o in orders) == SYMBOLS, f"{name}: each order of the session once, none twice"
    assert len({o.client_order_id for o in orders}) == len(orders)
    assert json.loads((workspace / "reports" / "paper" / "trend" / session / "cycle.json").read_text()) == \
        json.loads(json.dumps(again, default=str)), "the re-run's report replaces the stored one"
    cycles = Ledger(state_db()).cycles("trend")
    assert trade_session("trend", asof=session) == json.loads(json.dumps(again, default=str)), "now done"
    assert Ledger(state_db()).cycles("trend") == cycles and sim_of().orders() == orders
    assert resolve_session("trend")[2] == day(made["sessions"], 21), "and the sim moves on"


def test_a_cycle_of_an_older_version_without_its_report_is_traded_again_and_with_it_returned(workspace):
    import sqlite3

    made = promote_by_hand(workspace)
    session = made["sessions"][20]
    folder = workspace / "reports" / "paper" / "trend" / f"{session:%Y-%m-%d}"
    first = trade_session("trend")
    old_keys = ("sent", "adopted", "rejected", "cancelled", "kill_switch", "equity", "decision", "dry_run",
                "rebalance", "weights")  # what the version before the ledger kept reports recorded
    [cycle] = Ledger(state_db()).cycles("trend")
    with sqlite3.connect(state_db()) as conn:
        conn.execute("UPDATE ledger_cycles SET summary = ? WHERE id = ?",
                     (json.dumps({k: cycle["summary"][k] for k in old_keys}), cycle["id"]))
    assert trade_session("trend", asof=session.date()) == json.loads(json.dumps(first, default=str)), \
        "its cycle.json, in the session's folder, stands"
    assert len(Ledger(state_db()).cycles("trend")) == 1
    for path in folder.iterdir():
        path.unlink()
    assert resolve_session("trend")[2] == session.date(), "report lost: the session is not done"
    again = trade_session("trend")
    assert again["session"] == f"{session:%Y-%m-%d}" and (folder / "cycle.json").is_file()
    assert len(sim_of().orders()) == 4, "the re-run converges: nothing sent twice"
    assert resolve_session("trend")[2] == day(made["sessions"], 21)


def test_a_report_dir_inside_the_workspace_is_recorded_relative_and_found_after_the_workspace_moves(
        workspace, monkeypatch):
    import shutil

    made = promote_by_hand(workspace)
    first = trade_session("trend", report_dir=workspace / "mine" / "first")
    recorded = Ledger(state_db()).cycles("trend")[-1]["summary"]["report_dir"]
    assert recorded == "mine/first"
    moved = workspace.parent / f"{workspace.name}-moved"
    shutil.move(str(workspace), moved)
    monkeypatch.setenv("SPARTAN_HOME", str(moved))
    assert trade_session("trend", asof=made["sessions"][20].date()) == json.loads(json.dumps(first, default=str))
    assert len(Ledger(state_db()).cycles("trend")) == 1, "found where it was written, nothing run"


def unusable_dirs(workspace) -> list[tuple[str, object]]:
    (workspace / "a-file").write_text("x")
    return [("a file", workspace / "a-file"), ("under a file", workspace / "a-file" / "sub"),
            ("a NUL byte", str(workspace / "bad\0dir"))]


def test_an_unusable_report_dir_is_refused_by_name_before_anything_runs(workspace):
    from research_lib.trading import ReportUnwritable

    promote_by_hand(workspace)
    for what, folder in unusable_dirs(workspace):
        with pytest.raises(ReportUnwritable, match=r"report_dir '.*' cannot hold the session's report \(.*\); pass "
                                                   r"a folder this user can write"):
            trade_session("trend", report_dir=folder)
        assert Ledger(state_db()).cycles("trend") == [] and Ledger(state_db()).intents("trend") == [], what
    assert SimBroker.stored_account(state_db(), "paper-trend") is None or sim_of().orders() == []


def test_an_unusable_recorded_report_dir_is_a_refusal_naming_it_not_a_traceback(workspace, monkeypatch):
    from research_lib.trading import ReportUnwritable

    made = promote_by_hand(workspace)
    killed_at(monkeypatch, "before cycle.json", report_dir=workspace / "gone")  # session 20: report not written
    (workspace / "gone").rmdir()  # made empty before the cycle ran; then a file takes its place
    (workspace / "gone").write_text("now a file")
    with pytest.raises(ReportUnwritable, match=r"the report of trend .* cannot be written to .*gone"):
        trade_session("trend", asof=made["sessions"][21].date())
