"""`spartan trade` checks its session before anything runs (issue 13, section 5).

An ``--asof`` that is not a session of the broker's calendar, or is before the last session the
strategy traded, or is not a date at all (an empty one included), exits 2 with the reason and a
hint that names only options the command has: no notebook starts, no report folder is made, no
alert is raised and no earlier session's file changes. A session traded already is not run
again: its report stands, exit 0. A command whose notebook fails keeps the earlier run's
notebook. While another trade of the strategy runs, a trade exits 1 and changes nothing.

Fast: the promoted strategy is built by hand (`tests.test_paper.promote_by_hand`) and traded
in-process; only refusals go through `spartan trade`, and they start no notebook.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import nbformat
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research_lib.alerts import read_alerts
from research_lib.cli import _parser, main
from research_lib.paths import state_db
from research_lib.stages.paper import trade_session
from research_lib.trading import InvalidSession, Ledger, resolve_session, session_refusal
from tests.conftest import link_params, REPO
from tests.test_paper import SYMBOLS as SYMBOLS_OF_FIRST_BOOK, market, promote_by_hand, sim_of

HOLIDAY = pd.Timestamp("2020-02-17")  # Presidents' Day: a weekday missing from the promoted prices
TRADED_ROWS = (20, 25)  # the sessions traded before the refusals: 25 is the last one
ALPACA_TODAY = dt.date(2024, 7, 10)  # a Wednesday, by the stand-in for Alpaca's clock


# ---------------------------------------------------------------- the workspace: a strategy traded up to session 25


@pytest.fixture(scope="module")
def traded(tmp_path_factory):
    """A strategy ``trend`` on the sim, traded at sessions 20 and 25 (in-process), with a notebook
    in session 25's folder as `spartan trade` leaves it; ``live`` promoted for Alpaca, never traded."""
    home = tmp_path_factory.mktemp("trade-args")
    link_params(home)
    (home / "notebooks").symlink_to(REPO / "notebooks")
    with pytest.MonkeyPatch.context() as patched:
        patched.setenv("SPARTAN_HOME", str(home))
        prices = market().drop(HOLIDAY)
        made = promote_by_hand(home, prices=prices)
        promote_by_hand(home, "live", prices=prices, broker="alpaca")
        sessions = made["sessions"]
        for row in TRADED_ROWS:
            trade_session("trend", asof=sessions[row].date())
        folder = home / "reports" / "paper" / "trend" / f"{sessions[25]:%Y-%m-%d}"
        nbformat.write(nbformat.v4.new_notebook(), folder / "07_paper_trade.ipynb")
        yield {"home": home, "sessions": sessions, "last": sessions[25].date()}


def snapshot(home: Path) -> dict:
    """Everything a refused command must leave as it was."""
    paper = home / "reports" / "paper"
    return {"files": {p.relative_to(paper): p.read_bytes() for p in paper.rglob("*") if p.is_file()},
            "folders": sorted(p.relative_to(paper) for p in paper.rglob("*") if p.is_dir()),
            "alerts": read_alerts(), "cycles": Ledger(state_db()).cycles("trend"),
            "orders": sim_of().orders(), "sim_date": sim_of().sim_date}


def neighbours(sessions: pd.DatetimeIndex, day: pd.Timestamp) -> tuple[str, str]:
    """The sessions just before and after a day that is not one (by a scan, not a search)."""
    before = [s for s in sessions if s < day][-1]
    after = [s for s in sessions if s > day][0]
    return f"{before:%Y-%m-%d}", f"{after:%Y-%m-%d}"


def refusals(sessions: pd.DatetimeIndex) -> list[tuple[str, list[str], str]]:
    """(what, arguments after `spartan trade`, the reason expected in the message)."""
    last_traded = f"{sessions[25]:%Y-%m-%d}"
    saturday = next(d for d in pd.date_range(sessions[25], periods=8) if d.day_of_week == 5)
    alpaca_today_only = rf"Alpaca trades today's session only \({ALPACA_TODAY} in New York, by Alpaca's clock\)"
    bad_date = r"is not a date( \([^)]+\))?; use YYYY-MM-DD, e\.g\. 2022-06-30"
    around = "is not a session \\(a {}\\); the sessions around it are {} and {}"
    before_last = rf"is before {last_traded}, the last session traded"
    rows = [
        ("a Saturday", [f"{saturday:%Y-%m-%d}"], around.format("Saturday", *neighbours(sessions, saturday))),
        ("a holiday", [f"{HOLIDAY:%Y-%m-%d}"], around.format("Monday", *neighbours(sessions, HOLIDAY))),
        ("before the last traded session", [f"{sessions[22]:%Y-%m-%d}"], before_last),
        ("before the history", ["2019-12-31"], before_last),
        ("the weekday after the history", [f"{sessions[-1] + pd.offsets.BDay(1):%Y-%m-%d}"],
         rf"is after the last session, {sessions[-1]:%Y-%m-%d}"),
        ("far future", ["2100-01-04"], rf"is after the last session, {sessions[-1]:%Y-%m-%d}"),
        ("a dry run elsewhere than the sim date", [f"{sessions[26]:%Y-%m-%d}", "--dry-run"],
         rf"a dry run does not move the simulated market; it stands at {last_traded}"),
        ("Alpaca, a Saturday", [f"{ALPACA_TODAY - dt.timedelta(days=4)}", "--strategy", "live"], alpaca_today_only),
        ("Alpaca, the session before", [f"{ALPACA_TODAY - dt.timedelta(days=1)}", "--strategy", "live"],
         alpaca_today_only),
        ("Alpaca, the session after", [f"{ALPACA_TODAY + dt.timedelta(days=1)}", "--strategy", "live"],
         alpaca_today_only),
        ("Alpaca, the far future", ["2100-01-04", "--strategy", "live"], alpaca_today_only),
    ]
    malformed = ["2020-13-01", "2020-02-30", "20200205", "2020/02/05", "5 Feb 2020", "2020-2-5", "yesterday",
                 "2020-02-05T00:00", " 2020-02-05", "2020-02-05 ", "0000-01-01", "NaT", "nan", "-1", "1e9",
                 "２０２０-02-05", "", "   "]
    rows += [(f"malformed {text!r}", [text], re.escape(f"--asof {text!r} ") + bad_date) for text in malformed]
    return rows


def trade_options() -> set[str]:
    trade = _parser()._subparsers._group_actions[0].choices["trade"]
    return {option for action in trade._actions for option in action.option_strings}


@pytest.fixture()
def alpaca_clock(monkeypatch):
    """Alpaca's clock, read offline: noon in New York on `ALPACA_TODAY`."""
    from research_lib.broker import AlpacaBroker, Clock

    noon = dt.datetime.combine(ALPACA_TODAY, dt.time(12), ZoneInfo("America/New_York"))
    monkeypatch.setenv("APCA_API_KEY_ID", "test-key-id-not-real")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "test-secret-not-real")
    monkeypatch.setattr(AlpacaBroker, "clock", lambda self: Clock(noon, True, noon, noon + dt.timedelta(hours=4)))


def test_every_refused_session_exits_2_before_anything_runs_and_names_only_real_options(traded, alpaca_clock, capsys):
    sessions, home = traded["sessions"], traded["home"]
    rows = refusals(sessions)
    assert len(rows) >= 25
    before = snapshot(home)
    options, failures = trade_options(), []
    for what, args, reason in rows:
        strategy = [] if "--strategy" in args else ["--strategy", "trend"]
        code = main(["trade", *strategy, "--asof", *args])
        err = capsys.readouterr().err
        try:
            assert code == 2, f"exit {code}: {err}"
            assert err.startswith("spartan: --asof ") and err.count("\n") == 1, err
            assert re.search(reason, err), f"{reason!r} not in {err!r}"
            hinted = set(re.findall(r"--[a-z][a-z-]*", err))
            assert hinted <= options, f"names options `spartan trade` does not have: {hinted - options}"
            assert "account_id" not in err and "db_path" not in err
            assert snapshot(home) == before, "a refusal changed a report, an alert, the ledger or the sim"
        except AssertionError as error:
            failures.append(f"{what} ({args}): {str(error).splitlines()[0]}")
    assert not failures, f"{len(failures)} of {len(rows)} refusals are wrong:\n" + "\n".join(failures)


def test_the_sessions_a_strategy_can_trade_are_accepted_without_running_anything(traded):
    sessions, last = traded["sessions"], traded["last"]
    before = snapshot(traded["home"])
    assert resolve_session("trend", asof=f"{last:%Y-%m-%d}")[2] == last, "the last session traded again (a re-run)"
    assert resolve_session("trend", asof=sessions[26].date())[2] == sessions[26].date()
    assert resolve_session("trend", asof=sessions[-1].date())[2] == sessions[-1].date()
    assert resolve_session("trend", asof=last, dry_run=True)[2] == last
    assert resolve_session("trend")[2] == sessions[26].date(), "without --asof: the next session"
    assert snapshot(traded["home"]) == before
    with pytest.raises(InvalidSession, match=r"--asof 2020-02-08 is not a session \(a Saturday\)"):
        resolve_session("trend", asof="2020-02-08")


# ---------------------------------------------------------------- the rule, over generated calendars


@st.composite
def calendars(draw):
    start = draw(st.dates(dt.date(1990, 1, 1), dt.date(2090, 1, 1)))
    gaps = draw(st.lists(st.integers(1, 5), min_size=1, max_size=30))
    days = [start]
    for gap in gaps:
        days.append(days[-1] + dt.timedelta(days=gap))
    day = draw(st.dates(start - dt.timedelta(days=10), days[-1] + dt.timedelta(days=10)))
    floor = draw(st.none() | st.sampled_from(days))
    return pd.DatetimeIndex(days), day, floor


@settings(max_examples=400, deadline=None, derandomize=True)
@given(calendars())
def test_a_day_is_refused_exactly_when_it_is_no_session_or_before_the_last_traded(case):
    sessions, day, floor = case
    refusal = session_refusal(day, sessions, floor)
    is_session = any(s.date() == day for s in sessions)
    assert (refusal is None) == (is_session and (floor is None or day >= floor)), refusal
    if refusal is None:
        return
    if floor is not None and day < floor:
        assert refusal == f"is before {floor}, the last session traded"
    elif day > sessions[-1].date():
        assert refusal.endswith(f"{sessions[-1]:%Y-%m-%d}") and "after the last session" in refusal
    elif day < sessions[0].date():
        assert refusal.endswith(f"{sessions[0]:%Y-%m-%d}") and "before the first session" in refusal
    else:
        around = neighbours(sessions, pd.Timestamp(day))
        assert refusal.endswith(f"the sessions around it are {around[0]} and {around[1]}")
        assert f"(a {day:%A})" in refusal


# ---------------------------------------------------------------- a traded session's files are never replaced


def test_a_traded_session_is_not_run_again_and_a_failed_attempt_keeps_the_earlier_files(workspace, monkeypatch,
                                                                                         capsys):
    import research_lib.pipeline as pipeline

    made = promote_by_hand(workspace)
    folder = workspace / "reports" / "paper" / "trend" / f"{made['sessions'][20]:%Y-%m-%d}"
    attempts = iter([None, "cell 2 (`trade_session(...)`) raised BrokerUnavailable: outage", None])

    def kernel(notebook, output, parameters, cwd):
        """As the notebook would: trade the session (unless it fails), and leave the executed notebook."""
        error = next(attempts)
        if error is None:
            trade_session(parameters["strategy"], parameters["broker"], parameters["asof"],
                          report_dir=parameters["report_dir"])
        written = nbformat.v4.new_notebook(metadata={"attempt": "failed" if error else "succeeded"})
        nbformat.write(written, output)
        return error

    monkeypatch.setattr(pipeline, "execute_notebook", kernel)
    session = f"{made['sessions'][20]:%Y-%m-%d}"
    assert main(["trade", "--asof", session]) == 0
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    capsys.readouterr()
    assert main(["trade", "--asof", session]) == 0, "traded already: exit 0"
    out = capsys.readouterr().out
    assert f"spartan trade trend {session} on sim: already traded; nothing was run or sent" in out
    assert f"{session} on sim: traded (decision" in out and "trading: ACTIVE (kill switch not engaged)" in out
    assert "orders: 4 sent" in out, "the report's own summary"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files, "no file of the session changed"

    # A folder holding a report the ledger does not know (the state database was replaced):
    # an attempt that fails keeps that report and notebook; a later success replaces them.
    for state in workspace.glob("data/spartan.sqlite*"):
        state.unlink()
    assert main(["trade", "--asof", session]) == 1
    assert "executed notebook: " + str(folder / "07_paper_trade.failed.ipynb") in capsys.readouterr().err
    assert all((folder / name).read_bytes() == files[name] for name in ("07_paper_trade.ipynb", "cycle.json"))
    assert nbformat.read(folder / "07_paper_trade.failed.ipynb", 4).metadata["attempt"] == "failed"
    assert (folder / "07_paper_trade.failed.html").is_file() and not (folder / "07_paper_trade.running.ipynb").exists()
    assert main(["trade", "--asof", session]) == 0, "a later success replaces the earlier notebook"
    assert nbformat.read(folder / "07_paper_trade.ipynb", 4).metadata["attempt"] == "succeeded"


# ---------------------------------------------------------------- one trade of a strategy at a time


def test_while_another_trade_of_the_strategy_runs_a_trade_exits_1_and_changes_nothing(workspace, monkeypatch,
                                                                                       capsys):
    from research_lib._io import flock, lock_path
    from research_lib.scheduler import JobFailed, trade_job
    from research_lib.trading import TradeLocked

    sessions = promote_by_hand(workspace)["sessions"]
    trade_session("trend")  # session 20
    before = snapshot(workspace)
    held = f"another spartan trade of trend is running \\(pid 4242\\); wait for it or stop it"
    with flock(lock_path("trade-trend"), blocking=False, holder="pid 4242 since now") as fd:
        assert fd is not None
        for args in ([], ["--asof", f"{sessions[21]:%Y-%m-%d}"]):
            assert main(["trade", "--strategy", "trend", *args]) == 1
            assert re.fullmatch(rf"spartan: {held} \(its lock: .*trade-trend\.lock\)\.\n", capsys.readouterr().err)
        with pytest.raises(TradeLocked, match=held):
            trade_session("trend")
        with pytest.raises(JobFailed, match=held):
            trade_job(["trend"])  # the scheduler's trade job: the same lock
        assert snapshot(workspace) == before, "nothing was run: no folder, alert, cycle, order or move"
        assert main(["trade", "--strategy", "trend", "--asof", "2020-13-01"]) == 2, "a bad argument is still one"
        capsys.readouterr()
        # The kernel of the command that holds the lock runs notebook 07 without taking it.
        monkeypatch.setattr("research_lib.trading._lock.command_pid", lambda: 4242)
        assert trade_session("trend")["session"] == f"{sessions[21]:%Y-%m-%d}"
    assert lock_path("trade-trend").read_text() == "", "the holder's pid is erased with the lock"


def test_a_dry_run_neither_waits_for_nor_disturbs_a_trade_that_holds_the_lock(workspace, monkeypatch):
    from research_lib._io import flock, lock_path
    from tests.test_paper import lose

    sessions = promote_by_hand(workspace)["sessions"]
    with monkeypatch.context() as patched:
        patched.setattr("research_lib.broker.SimBroker.submit_order", lose({"DDD"}))
        trade_session("trend")  # session 20: DDD's request lost, its intent `unknown`
    ledger = Ledger(state_db())
    running = ledger.start_cycle("trend", f"{sessions[20]:%Y-%m-%d}", "sim")  # a real trade, mid-cycle
    before = {"intents": ledger.intents("trend"), "orders": sim_of().orders(), "sim_date": sim_of().sim_date,
              "running": ledger.cycle(running), "equity": ledger.equity_history("trend")}
    with flock(lock_path("trade-trend"), blocking=False, holder="pid 4242 since now") as fd:
        assert fd is not None
        dry = trade_session("trend", dry_run=True)
    assert dry["status"] == "dry_run" and [o["symbol"] for o in dry["cycle"]["sent"]] == ["DDD"]
    after = {"intents": ledger.intents("trend"), "orders": sim_of().orders(), "sim_date": sim_of().sim_date,
             "running": ledger.cycle(running), "equity": ledger.equity_history("trend")}
    assert after == before, "the real trade's cycle, intents, orders and market are as it left them"


def lock_breakers() -> list[tuple[str, object]]:
    """Ways the lock file cannot be opened: (what, a function that breaks it)."""
    from research_lib._io import lock_path

    path = lock_path("trade-trend")

    def folder_in_its_place():
        path.mkdir(parents=True)

    def locks_dir_a_file():
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.write_text("not a folder")
    return [("a folder in its place", folder_in_its_place, path), ("its folder a file", locks_dir_a_file, path)]


@pytest.mark.parametrize("case", [0, 1])
def test_a_lock_file_that_cannot_be_opened_is_a_refusal_naming_it_exit_1(workspace, capsys, case):
    import shutil

    from research_lib.trading import TradingRefused

    promote_by_hand(workspace)
    what, breaks, path = lock_breakers()[case]
    breaks()
    message = (rf"the trade lock of trend, {re.escape(str(path))}, cannot be opened \(\w+Error: .+\); it must be a "
               r"file this user can write: remove what is there")
    with pytest.raises(TradingRefused, match=message):
        trade_session("trend")
    assert main(["trade", "--strategy", "trend"]) == 1, what
    err = capsys.readouterr().err
    assert re.fullmatch(rf"spartan: {message}.*\n", err) and "Traceback" not in err, err
    assert Ledger(state_db()).cycles("trend") == []
    shutil.rmtree(path) if path.is_dir() else path.parent.unlink()
    assert trade_session("trend")["status"] == "traded", "the fix named works"


def test_asof_an_older_reported_session_shows_its_report_and_an_unfinished_one_stays_refused(workspace, monkeypatch,
                                                                                             capsys):
    from tests.test_paper import lose

    sessions = promote_by_hand(workspace)["sessions"]
    first = trade_session("trend")  # session 20, done
    with monkeypatch.context() as patched:
        patched.setattr("research_lib.broker.SimBroker.submit_order", lose(set(SYMBOLS_OF_FIRST_BOOK)))
        trade_session("trend", asof=sessions[40].date())  # a new decision, every request lost: not done
    trade_session("trend", asof=sessions[45].date())
    before = snapshot(workspace)
    assert main(["trade", "--asof", f"{sessions[20]:%Y-%m-%d}"]) == 0
    out = capsys.readouterr().out
    assert f"spartan trade trend {sessions[20]:%Y-%m-%d} on sim: already traded; nothing was run or sent" in out
    assert f"orders: {len(first['cycle']['sent'])} sent" in out
    assert snapshot(workspace) == before
    assert main(["trade", "--asof", f"{sessions[40]:%Y-%m-%d}"]) == 2, "not done, and the sim never goes back"
    assert f"is before {sessions[45]:%Y-%m-%d}, the last session traded" in capsys.readouterr().err
    assert snapshot(workspace) == before
