"""The CLI reads like the tools people know: ``--version``; no command creates workspace folders
where there is no workspace; `status` shows the last real cycle beside a later dry run; a
drawdown is one format (a loss in percent) on every page and message; a statistic from too few
sessions says so."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from research_lib import cli
from research_lib.risk import KillSwitch, next_state, trading_state
from research_lib.stages.paper import trade_session
from research_lib.trading import describe_session, describe_status, status
from research_lib.units import FEW_SESSIONS, few_sessions_caveat, format_drawdown
from research_lib.validation.promotion import GateThresholds, criterion_text, describe_failures, evaluate_gate
from tests.test_paper import promote_by_hand
from tests.test_risk import limits

COMMANDS = [["status"], ["index"], ["halt"], ["resume"], ["trade"], ["serve", "--port", "1"],
            ["schedule", "--print-crontab"], ["run", "params/daily.yaml"], ["promote", "reports/runs/x"]]


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"spartan {version('spartan-research')}"


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
def test_no_command_creates_folders_where_there_is_no_workspace(argv, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "not-a-workspace"
    empty.mkdir()
    monkeypatch.delenv("SPARTAN_HOME")
    monkeypatch.chdir(empty)
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "no Spartan workspace here" in err and str(empty) in err and "SPARTAN_HOME" in err
    assert list(empty.iterdir()) == [], "nothing was created"
    monkeypatch.setenv("SPARTAN_HOME", str(tmp_path / "typo"))
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "is not a folder" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    monkeypatch.setenv("SPARTAN_HOME", str(empty))
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "holds no params/base.yaml" in capsys.readouterr().err and list(empty.iterdir()) == []


def test_status_shows_the_last_real_cycle_beside_a_later_dry_run(workspace):
    sessions = promote_by_hand(workspace)["sessions"]
    real = trade_session("trend")
    dry = trade_session("trend", dry_run=True)
    [entry] = status()
    assert entry["last_cycle"]["session"] == real["session"] and not entry["last_cycle"]["summary"].get("dry_run")
    assert entry["last_dry_run"]["session"] == dry["session"] and entry["last_dry_run"]["summary"]["dry_run"]
    text = describe_status([entry])
    assert f"last cycle:   {real['session']} on sim, {real['status']}" in text
    assert f"last dry run: {dry['session']} on sim" in text and "(sent nothing)" in text
    trade_session("trend", asof=sessions[22].date())
    [entry] = status()
    assert entry["last_cycle"]["session"] == f"{sessions[22]:%Y-%m-%d}" and entry["last_dry_run"] is None, \
        "a dry run older than the last real cycle is not shown"


@pytest.mark.parametrize("state, words", [("active", "trading: ACTIVE (kill switch not engaged)"),
                                          ("reducing", "trading: REDUCING (kill switch engaged"),
                                          ("halted", "trading: HALTED (kill switch engaged"),
                                          ("HALTED", "trading: HALTED (kill switch engaged"),
                                          ("bogus", "trading: state unknown ('bogus' is not a kill switch state)"),
                                          (None, "trading: state unknown (None is not")])
def test_the_trading_state_never_reads_as_a_tripped_switch_when_active(state, words):
    assert trading_state(state).startswith(words)
    if state != "active":
        assert "not engaged" not in trading_state(state)


def test_status_tables_keep_numbers_right_aligned_with_missing_or_odd_values():
    entry = {"strategy": "s", "kill_switch": {"state": "active", "reason": "never set"}, "last_cycle": None,
             "account": None, "open_orders": [],
             "positions": [{"symbol": "X", "quantity": float("nan"), "value": None},
                           {"symbol": "LONGNAME", "quantity": 1234.5, "value": float("inf")},
                           {"symbol": "Y", "quantity": None, "value": 100.0}]}
    table = describe_status([entry]).split("  positions:\n")[1].splitlines()
    assert [line.split()[1:] for line in table[1:]] == [["n/a", "n/a"], ["1,234.5000", "n/a"], ["n/a", "100.00"]]
    ends = {len(line) for line in table}
    assert len(ends) == 1, "every row ends in the same column: numbers right-aligned"


@pytest.mark.parametrize("stored", [-0.4806, 0.4806, -0.48059999])
def test_a_drawdown_is_one_format_on_every_page_and_message(stored):
    assert format_drawdown(stored) == "-48.1%"
    [criterion] = [c for c in evaluate_gate({"max_drawdown": stored}, GateThresholds()) if c.name == "max_drawdown"]
    assert criterion_text(criterion) == ("-48.1%", "no deeper than -15.0%")
    assert "- max_drawdown: -48.1% (needs no deeper than -15.0%" in describe_failures([criterion])
    _, why = next_state(KillSwitch.ACTIVE, 0.0, abs(stored), limits(drawdown_stop=0.2))
    assert "drawdown -48.1% reached the stop at -20.0%" in why


@pytest.mark.parametrize("value", [None, float("nan"), float("inf"), True])
def test_a_missing_drawdown_is_shown_as_such(value):
    assert format_drawdown(value) == "n/a"


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-9, -0.0004])
def test_no_drawdown_is_no_negative_zero(value):
    assert format_drawdown(value) == "0.0%"


def test_statistics_from_few_sessions_carry_a_caveat():
    assert few_sessions_caveat(2) == f"from only 2 sessions, too few to judge; needs {FEW_SESSIONS}"
    assert few_sessions_caveat(1).startswith("from only 1 session,")
    assert few_sessions_caveat(FEW_SESSIONS) == "" and few_sessions_caveat(None) == ""
    assert [few_sessions_caveat(v) for v in (float("nan"), -5, True, float("inf"))] == ["", "", "", ""]
    result = {"strategy": "s", "session": "2024-01-02", "broker": "sim", "status": "traded", "decision": "2024-01-01",
              "rebalance": True, "kill_switch": {"state": "active", "reason": "never set"},
              "cycle": {"sent": [], "adopted": [], "rejected": [], "cancelled": []}, "open_orders": [],
              "account": {"equity": 1.0, "cash": 1.0, "daily_pnl": 0.0, "pnl_total": 0.0},
              "drift": {"tracking_error": 0.2065, "sessions": 2, "flagged": False, "signal_agreement": 1.0}}
    assert "tracking error 20.65%, book overlap 100% (from only 2 sessions, too few to judge" in describe_session(result)
    result["drift"]["sessions"] = FEW_SESSIONS
    assert "too few" not in describe_session(result)
