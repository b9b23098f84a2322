"""The dashboard, ``reports/index.html`` (`research_lib.reports.index`), its SVG charts
(`research_lib.reports._charts`) and `spartan serve` (`research_lib.reports.serve`).

One hand-built workspace for the module (`build_workspace`): three runs with manifests (one
succeeded with an offline analyst, one on Claude, one failed), a corrupt manifest and a run
whose names are hostile HTML; a strategy promoted by hand and paper traded on the sim for a
few sessions then halted; a promoted file that cannot be used; ``schedule.json`` and
``alerts.jsonl``. The numbers on the page are checked against values computed here from the
files and the ledger, not from the dashboard's code.
"""

from __future__ import annotations

import _thread
import datetime as dt
import json
import re
import signal
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from research_lib.reports import _charts as charts
from research_lib.reports.dashboard_paper import expected_equity, limit_usage
from research_lib.reports.index import build_index, dashboard, read_alerts
from research_lib.reports.serve import make_server, serve
from research_lib.paths import state_db
from research_lib.stages.paper import trade_session
from research_lib.trading import Ledger, halt
from tests.conftest import REPO
from tests.test_paper import ANALYST, promote_by_hand

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)
HOSTILE = "<script>alert('x')</script>"
HOSTILE_FOLDER = 'odd"><b>name#1?'  # a run folder whose name must be quoted in links
CLAUDE = "Claude (claude-sonnet-4-5)"


# ---------------------------------------------------------------- the hand-built workspace


def _run(workspace: Path, folder: str, manifest: dict | str, files: tuple[str, ...] = ()) -> Path:
    run = workspace / "reports" / "runs" / folder
    run.mkdir(parents=True, exist_ok=True)
    (run / "manifest.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    for name in files:
        (run / name).write_text(f"<!doctype html><title>{name}</title><p>{name}</p>")
    return run


def _manifest(run_id: str, created_at: str, **fields) -> dict:
    return {"run_id": run_id, "scenario": run_id.split("-")[-1], "description": "by hand", "status": "succeeded",
            "created_at": created_at, "error": None, "code": {"commit": "0123456789abcdef", "dirty": False},
            "stages": [{"name": "06_validate", "status": "succeeded", "html": "06_validate.html"}], **fields}


def build_workspace(workspace: Path) -> dict:
    """Fill ``workspace`` (SPARTAN_HOME, with params/ and params/promoted/) with the files the
    dashboard reads; return what the tests compare against."""
    made = promote_by_hand(workspace, "trend")
    sessions = made["sessions"]
    prices_end = f"{sessions[-1]:%Y-%m-%d}"
    # The promoted run, as a succeeded run with the offline analyst (its manifest is not hashed).
    _run(workspace, made["run_dir"].name, _manifest(
        made["run_dir"].name, "2026-11-20T09:00:00+00:00",
        metrics={"strategy": {"cagr": 0.1234, "sharpe": 1.61, "max_drawdown": -0.084, "win_rate": 0.56}},
        ml={"model": "hgbr", "horizon_days": 21, "rank_ic": 0.04567, "rank_ic_t": 2.31},
        llm={"analyst": ANALYST, "model": "offline-analyst-v1", "sources": {"offline": 12}, "views": 72,
             "abstentions": 0, "contaminated_views": 0, "cost_usd": 0.0, "usd_per_signal": 0.0},
        validation={"passed": True, "failed": [], "deflated_sharpe": 0.97, "pbo": 0.21, "n_trials": 14},
        data={"source": "bundled", "symbols": ["AAA", "BBB", "CCC", "DDD"], "first_date": f"{sessions[0]:%Y-%m-%d}",
              "last_date": prices_end, "sha256": "a" * 64, "retrieved_at": "2026-11-20T09:00:01+00:00"}),
        files=("tearsheet.html", "validation.html", "06_validate.html"))
    _run(workspace, "20261124T080000Z-claude-0001", _manifest(
        "20261124T080000Z-claude-0001", "2026-11-24T08:00:00+00:00",
        metrics={"strategy": {"cagr": 0.05, "sharpe": 0.7, "max_drawdown": -0.2, "win_rate": 0.51}},
        llm={"analyst": CLAUDE, "sources": {"anthropic": 10}, "views": 60, "abstentions": 3, "cost_usd": 1.25},
        validation={"passed": False, "failed": ["sharpe", "pbo"], "deflated_sharpe": 0.4, "pbo": 0.6, "n_trials": 20},
        data={"source": "yfinance", "symbols": ["SPY"], "first_date": "2020-01-02", "last_date": "2026-11-23",
              "sha256": "b" * 64, "retrieved_at": "2026-11-24T08:00:00+00:00"}),
        files=("tearsheet.html", "06_validate.html"))
    failed = _manifest("20261125T070000Z-smoke-0002", "2026-11-25T07:00:00+00:00", status="failed",
                       error="Stage 01_load_data failed: KO has NaN on 2016-03-01",
                       stages=[{"name": "01_load_data", "status": "failed", "html": "01_load_data.html"},
                               {"name": "02_build_features", "status": "failed", "html": "02_build_features.html"}])
    _run(workspace, "20261125T070000Z-smoke-0002", failed, files=("01_load_data.html",))  # 02's html is missing
    _run(workspace, "20261125T080000Z-broken-0003", "{not json")
    _run(workspace, HOSTILE_FOLDER, _manifest(HOSTILE, "2026-11-21T00:00:00+00:00", scenario="<img src=x onerror=alert(1)>",
                                              description=HOSTILE, stages=[]))
    # A promoted file the dashboard cannot use: a hostile name, no parameters.
    (workspace / "params" / "promoted" / "evil.yaml").write_text(yaml.safe_dump(
        {"strategy": HOSTILE, "run_id": HOSTILE, "gate": {"passed": False}, "override_reason": HOSTILE}))

    trades = [trade_session("trend") for _ in range(3)]  # sessions 20, 21, 22
    trades.append(trade_session("trend", asof=sessions[40].date()))  # a new decision: orders out, open at the close
    halt("trend", reason=f"risk review {HOSTILE}")

    reports = workspace / "reports"
    (reports / "schedule.json").write_text(json.dumps({
        "updated_at": "2026-11-25T11:00:00+00:00", "exchange": "XNYS", "timezone": "America/New_York",
        "jobs": [{"id": "research", "name": "Research run", "next_run": "2026-11-26T06:30:00-05:00",
                  "last_run": "2026-11-25T06:30:00-05:00", "last_status": "failed", "last_error": HOSTILE},
                 {"id": "trade", "name": "Paper trade", "next_run": "2026-11-25T16:10:00-05:00",
                  "last_run": None, "last_status": None, "last_error": None},
                 {"id": "paused", "name": "Paused job", "next_run": None}],
        "history": [{"job": "research", "at": f"2026-11-{d:02d}T11:30:00+00:00", "status": "succeeded",
                     "detail": f"run {d}"} for d in range(10, 25)]}))
    lines = [json.dumps({"at": f"2026-11-25T10:{m:02d}:00+00:00", "kind": "drift", "message": f"alert {m}",
                         "fields": {"strategy": "trend", "te": 0.01 * m},
                         "delivered": {"webhook": "ok", "email": "ok" if m % 2 else "error: timed out"}})
             for m in range(11)]
    lines.insert(3, "{cut off")
    lines.append(json.dumps({"at": "2026-11-25T11:59:00+00:00", "kind": "kill_switch", "message": HOSTILE,
                             "fields": None, "delivered": ["email"]}))
    (reports / "alerts.jsonl").write_text("\n".join(lines) + "\n")
    index = build_index(reports, now=NOW)
    return {"made": made, "trades": trades, "index": index}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The hand-built workspace, once for the module (trading on the sim takes a few seconds)."""
    root = tmp_path_factory.mktemp("dashboard")
    (root / "params" / "promoted").mkdir(parents=True)
    for path in (REPO / "params").glob("*.yaml"):
        (root / "params" / path.name).symlink_to(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARTAN_HOME", str(root))
        info = build_workspace(root)
        info["model"] = dashboard(root / "reports", now=NOW)
        yield {**info, "root": root, "reports": root / "reports", "html": info["index"].read_text()}


class _Page(HTMLParser):
    """Every start tag with its attributes, the ids, and the text."""

    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.text = [], set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if dict(attrs).get("id"):
            self.ids.add(dict(attrs)["id"])

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


# ---------------------------------------------------------------- the page


def test_every_link_is_relative_and_points_at_an_existing_file_or_anchor(built):
    page = parse(built["html"])
    links = [(tag, a.get("href") or a.get("src")) for tag, a in page.tags if a.get("href") or a.get("src")]
    assert len(links) > 20
    for tag, link in links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, f"{tag} {link}: the page opens from disk, links are relative"
        if link.startswith("#"):
            assert link[1:] in page.ids, link
        else:
            assert (built["reports"] / unquote(parts.path)).is_file(), link
    hrefs = [link for _, link in links]
    name = built["made"]["run_dir"].name
    for expected in (f"runs/{name}/tearsheet.html", f"runs/{name}/validation.html", f"runs/{name}/06_validate.html",
                     "runs/20261125T070000Z-smoke-0002/01_load_data.html",
                     "runs/odd%22%3E%3Cb%3Ename%231%3F/manifest.json", "runs/20261125T080000Z-broken-0003/manifest.json"):
        assert expected in hrefs, expected
    assert not any("02_build_features" in h for h in hrefs), "a stage whose HTML is missing gets no link"
    sessions = [f"{t['session']}" for t in built["trades"]]
    for session in sessions:
        assert f"paper/trend/{session}/summary.html" in hrefs


def test_hostile_names_are_escaped_and_never_become_markup(built):
    html, page = built["html"], parse(built["html"])
    tags = {tag for tag, _ in page.tags}
    assert "script" not in tags and "img" not in tags and "b" not in tags
    assert not [(tag, a) for tag, a in page.tags if any(k.startswith("on") for k in a)], "no event handler attributes"
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    text = "".join(page.text)
    for shown in (HOSTILE, "<img src=x onerror=alert(1)>", f"risk review {HOSTILE}"):
        assert shown in text, f"{shown!r} is shown as text"


def test_the_runs_table_keeps_status_verdict_metrics_and_problems(built):
    model, html = built["model"], built["html"]
    runs = {r["run_id"]: r for r in model["runs"]}
    assert [r["created_at"] for r in model["runs"] if r["created_at"]] == sorted(
        [r["created_at"] for r in model["runs"] if r["created_at"]], reverse=True), "newest first"
    promoted_run = runs[built["made"]["run_dir"].name]
    assert promoted_run["status"] == "succeeded" and promoted_run["gate"]["passed"] is True
    assert promoted_run["metrics"]["sharpe"] == 1.61 and promoted_run["llm"]["offline"] is True
    assert runs["20261125T070000Z-smoke-0002"]["status"] == "failed"
    broken = runs["20261125T080000Z-broken-0003"]
    assert broken["status"] == "unreadable" and "unreadable: runs/20261125T080000Z-broken-0003/manifest.json" in broken["problem"]
    for shown in ("12.3%", "1.61", "-8.4%", "0.046 (2.3)", "DSR 0.97 (14 trials), PBO 0.21", "sharpe, pbo",
                  "offline analyst, not Claude", "KO has NaN on 2016-03-01", "unreadable: runs/20261125T080000Z-broken-0003"):
        assert shown in html, shown


def test_promoted_strategies_and_an_unusable_promoted_file_are_listed(built):
    html, paper = built["html"], {p["strategy"]: p for p in built["model"]["paper"]}
    assert set(paper) == {"evil", "trend"}
    assert any("unreadable: params/promoted/evil.yaml (KeyError" in p for p in paper["evil"]["problems"])
    assert paper["evil"]["limits"] == [] and "spartan trade --strategy evil" in html
    assert "overridden" in html and "test" in html  # promote_by_hand records the override reason "test"


def test_paper_trading_shows_the_kill_switch_positions_and_recent_orders(built):
    trend = next(p for p in built["model"]["paper"] if p["strategy"] == "trend")
    last = built["trades"][-1]
    assert trend["latest"] == last["session"] and trend["cycle"]["status"] == last["status"] == "traded"
    assert trend["cycle"]["account"]["equity"] == last["account"]["equity"]
    assert trend["kill_switch"] == {"state": "halted", "reason": f"risk review {HOSTILE}"}
    ledger = Ledger(state_db_of(built))
    intents = ledger.intents("trend")
    assert [o["client_order_id"] for o in trend["orders"]] == [i.client_order_id for i in reversed(intents[-15:])]
    assert {o["status"] for o in trend["orders"] if o["session"] == last["session"]} == {"canceled"}, "halted"
    html = built["html"]
    assert "trading: HALTED (kill switch engaged: no new orders, cancels only)" in html and "Recent orders" in html
    for position in last["positions"]:
        assert f"{position['value']:,.2f}" in html


def test_average_slippage_is_shown_against_the_roadmaps_line(built):
    last = built["trades"][-1]
    trend = next(p for p in built["model"]["paper"] if p["strategy"] == "trend")
    assert trend["cycle"]["slippage"] == {"mean_bps": last["slippage"]["mean_bps"], "fills": last["slippage"]["fills"]}
    assert last["slippage"]["fills"] > 0 and built["model"]["slippage_target_bps"] == 10.0
    row = re.search(r"<td>Average slippage</td>(.*?)</tr>", built["html"], re.S).group(1)
    assert f"{last['slippage']['mean_bps']:.1f} bps" in row and "10 bps" in row and f"{last['slippage']['fills']} fills" in row
    assert "too few to judge" in built["html"].split("<td>Average slippage</td>")[1].split("</p>")[0]


def state_db_of(built) -> Path:
    return built["root"] / "data" / "spartan.sqlite"


def test_the_equity_curve_is_the_ledger_against_the_backtest_over_the_same_sessions(built):
    trend = next(p for p in built["model"]["paper"] if p["strategy"] == "trend")
    history = Ledger(state_db_of(built)).equity_history("trend")
    assert trend["equity"]["sessions"] == [s for s, _ in history]
    assert trend["equity"]["paper"] == [e for _, e in history]
    expected, drift = trend["equity"]["expected"], built["trades"][-1]["drift"]
    assert expected[0] == history[0][1], "the backtest starts at the paper equity of the first compared session"
    assert expected[-1] == pytest.approx(history[0][1] * (1 + drift["expected_return"]), rel=1e-12)
    assert history[-1][1] == pytest.approx(history[0][1] * (1 + drift["paper_return"]), rel=1e-12)
    svg = built["html"]
    for session, equity in history:
        assert f"<title>paper equity, {session}: " in svg
    assert "backtest, same sessions" in svg and 'stroke-dasharray="5 3"' in svg


def test_limit_usage_is_each_current_value_over_its_promoted_limit(built):
    trend = next(p for p in built["model"]["paper"] if p["strategy"] == "trend")
    risk = yaml.safe_load(built["made"]["file"].read_text())["params"]["risk"]
    cycle = json.loads((built["reports"] / "paper" / "trend" / trend["latest"] / "cycle.json").read_text())
    equity = cycle["account"]["equity"]
    weights = [p["quantity"] * p["price"] / equity for p in cycle["positions"]]
    history = [e for _, e in Ledger(state_db_of(built)).equity_history("trend")]
    intents = Ledger(state_db_of(built)).intents("trend", trend["latest"])
    expected = {
        "max_weight": max(map(abs, weights)) / risk["max_weight"],
        "max_gross_exposure": sum(map(abs, weights)) / risk["max_gross_exposure"],
        "max_net_exposure": abs(sum(weights)) / risk["max_net_exposure"],
        "daily_loss_limit": max(0.0, 1 - history[-1] / history[-2]) / risk["daily_loss_limit"],
        "drawdown_stop": (1 - history[-1] / max(history)) / risk["drawdown_stop"],
        "max_open_orders": len(cycle["open_orders"]) / risk["max_open_orders"],
        "max_daily_orders": len(intents) / risk["max_daily_orders"],
    }
    usage = {row["key"]: row["fraction"] for row in trend["limits"]}
    assert usage == pytest.approx(expected, abs=1e-12)
    assert usage["max_weight"] > 0.7 and len(cycle["open_orders"]) == 4 == len(intents)
    html = built["html"]
    for row in trend["limits"]:
        assert str(charts.gauge(row["value"], row["limit"], label=row["label"])) in html
        assert f"{row['label']}: {row['fraction']:.0%} of the limit" in html
    colours = {key: charts.usage_colour(fraction) for key, fraction in expected.items()}
    assert colours["max_weight"] == charts.WARN and colours["max_gross_exposure"] == charts.BAD
    assert colours["drawdown_stop"] == charts.GOOD


def test_llm_spend_by_run_date_with_the_offline_analyst_named(built):
    llm, html = built["model"]["llm"], built["html"]
    assert llm["total_usd"] == 1.25 and llm["runs"] == 2 and llm["offline_runs"] == 1
    assert [(d["day"], d["cost_usd"]) for d in llm["days"]] == [("2026-11-20", 0.0), ("2026-11-24", 1.25)]
    assert "LLM analyst spend by run date" in html and "$1.25" in html
    assert "1 used the offline analyst, not Claude" in html and "2026-11-20: $0.00 (1 run, 1 offline analyst, not Claude)" in html


def test_data_freshness_ages_each_snapshot_against_today(built):
    data = built["model"]["data"]
    today = NOW.astimezone().date()
    assert [r["source"] for r in data["rows"]] == ["yfinance", "bundled"], "newest prices first"
    yf, bundled = data["rows"]
    assert yf["age_days"] == (today - dt.date(2026, 11, 23)).days and yf["freshness"] == "fresh"
    assert bundled["freshness"] == "stale" and bundled["sha256"] == "a" * 12
    assert f"{yf['age_days']} days</span> before {today:%Y-%m-%d}" in built["html"]


def test_schedule_jobs_by_next_run_and_the_last_runs_newest_first(built):
    schedule, html = built["model"]["schedule"], built["html"]
    assert [j["id"] for j in schedule["jobs"]] == ["trade", "research", "paused"]
    assert schedule["jobs"][0]["next"] == "in 9 h" and schedule["jobs"][1]["last"] == "30 min ago"
    assert len(schedule["history"]) == 10 and schedule["history"][0]["detail"] == "run 24"
    assert "Paper trade" in html and "XNYS" in html and 'class="error-status">failed' in html


def test_alerts_are_the_last_ten_newest_first_and_bad_lines_are_counted(built):
    alerts = built["model"]["alerts"]
    assert alerts["bad_lines"] == 1 and len(alerts["alerts"]) == 10
    assert alerts["alerts"][0]["message"] == HOSTILE and alerts["alerts"][0]["delivered"] == "email"
    assert [a["message"] for a in alerts["alerts"][1:]] == [f"alert {m}" for m in range(10, 1, -1)]
    assert alerts["alerts"][1]["fields"] == "strategy=trend, te=0.1"
    assert alerts["alerts"][1]["delivered"] == "webhook: ok, email: error: timed out" and alerts["alerts"][1]["undelivered"]
    assert alerts["alerts"][2]["delivered"] == "webhook: ok, email: ok" and not alerts["alerts"][2]["undelivered"]
    assert "unreadable: 1 line of alerts.jsonl" in built["html"]


def test_a_long_alerts_file_is_read_from_its_end(tmp_path):
    lines = [json.dumps({"at": str(i), "kind": "k", "message": f"m{i}" + "x" * 200}) for i in range(8000)]
    (tmp_path / "alerts.jsonl").write_text("\n".join(lines))
    alerts = read_alerts(tmp_path)
    assert alerts["bad_lines"] == 0 and [a["at"] for a in alerts["alerts"]] == [str(i) for i in range(7999, 7989, -1)]


# ---------------------------------------------------------------- missing and unreadable files


def test_an_empty_workspace_says_none_yet_in_every_section(workspace):
    html = build_index(workspace / "reports", now=NOW).read_text()
    for note in ("No runs yet", "None yet: a run that passes the gate is promoted",
                 "None yet: only promoted strategies paper trade", "No scheduler has run: <code>spartan schedule</code>",
                 "None yet: alerts are written", "None yet: no run has reached", "None yet: no run has loaded prices"):
        assert note in html, note


def test_unreadable_files_are_named_and_the_rest_of_the_page_still_renders(workspace):
    made = promote_by_hand(workspace, "trend")
    first, second = trade_session("trend"), trade_session("trend")
    reports = workspace / "reports"
    (reports / "paper" / "trend" / second["session"] / "cycle.json").write_text("[1, 2")
    (reports / "schedule.json").write_text('{"jobs": "nope"}')
    (workspace / "params" / "promoted" / "bad.yaml").write_text("strategy: [unclosed")
    model = dashboard(reports, now=NOW)
    trend = next(p for p in model["paper"] if p["strategy"] == "trend")
    assert trend["latest"] == first["session"], "the previous readable cycle.json is used"
    assert any(p.startswith(f"unreadable: paper/trend/{second['session']}/cycle.json (JSONDecodeError") for p in trend["problems"])
    assert model["schedule"]["problem"].startswith("unreadable: schedule.json (ValueError")
    html = build_index(reports, now=NOW).read_text()
    assert "unreadable file bad.yaml" in html and "unreadable: schedule.json" in html
    assert made["run_dir"].name in html

    good = (reports / "paper" / "trend" / first["session"] / "cycle.json").read_text()
    cycle = json.loads(good)
    cycle["account"]["equity"], cycle["positions"][0:0] = "lots", [{"symbol": "ZZZ", "quantity": "many"}]
    (reports / "paper" / "trend" / first["session"] / "cycle.json").write_text(json.dumps(cycle))
    html = build_index(reports, now=NOW).read_text()
    assert "equity <strong>n/a</strong>" in html and "<td>ZZZ</td>" in html, "bad numbers show n/a"
    cycle["positions"] = ["not a position"]
    (reports / "paper" / "trend" / first["session"] / "cycle.json").write_text(json.dumps(cycle))
    html = build_index(reports, now=NOW).read_text()
    assert "unreadable: the paper-trading files of trend (AttributeError" in html and made["run_dir"].name in html

    (reports / "paper" / "trend" / first["session"] / "cycle.json").write_text(good)
    state_db().unlink()
    for leftover in state_db().parent.glob("spartan.sqlite-*"):
        leftover.unlink()
    state_db().write_bytes(b"this is not a database" * 100)
    trend = next(p for p in dashboard(reports, now=NOW)["paper"] if p["strategy"] == "trend")
    assert any(p.startswith("unreadable: data/spartan.sqlite (DatabaseError") for p in trend["problems"])
    assert trend["kill_switch"]["reason"].endswith("(as of the latest cycle.json)")
    assert [s for s in trend["equity"]["sessions"]] == [first["session"]], "equity from the cycle.json instead"


def test_many_sessions_show_the_latest_twelve_and_fold_the_rest(workspace):
    folder = workspace / "reports" / "paper" / "many"
    for day in range(1, 15):
        (folder / f"2024-01-{day:02d}").mkdir(parents=True)
        (folder / f"2024-01-{day:02d}" / "summary.html").write_text("<title>s</title>")
    html = build_index(workspace / "reports", now=NOW).read_text()
    shown, folded = html.split("<details", 1)
    assert all(f"paper/many/2024-01-{day:02d}/summary.html" in shown for day in range(3, 15))
    assert "2 older sessions" in folded and all(f"2024-01-{day:02d}/summary" in folded for day in (1, 2))
    assert "not promoted (no params/promoted/many.yaml)" in html and "Not traded yet" in html


def test_expected_equity_compounds_the_backtest_from_the_first_compared_session():
    equity = [("d0", 100.0), ("d1", 101.0), ("d2", 99.0), ("d3", 98.0)]
    by_session = [{"session": "d1", "expected": None}, {"session": "d2", "expected": 0.1},
                  {"session": "d3", "expected": -0.5}]
    assert expected_equity(equity, by_session) == [None, 101.0, pytest.approx(111.1), pytest.approx(55.55)]


def test_limit_usage_without_positions_or_with_a_zero_limit():
    risk = {"max_weight": 0.2, "max_gross_exposure": 1.0, "max_net_exposure": 1.0, "daily_loss_limit": 0.05,
            "drawdown_stop": 0.2, "max_open_orders": 0, "max_daily_orders": None}
    rows = {r["key"]: r for r in limit_usage(risk, {"cycle": {"daily_pnl": 0.01, "drawdown": 0.05}}, 3)}
    assert rows["max_weight"]["fraction"] == 0.0 and rows["daily_loss_limit"]["fraction"] == 0.0
    assert rows["drawdown_stop"]["fraction"] == pytest.approx(0.25)
    assert rows["max_open_orders"]["fraction"] is None and rows["max_daily_orders"]["fraction"] is None


# ---------------------------------------------------------------- charts


def test_nice_ticks_cover_the_range_with_round_steps():
    assert charts.nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert charts.nice_ticks(998_000, 1_012_000) == [995_000, 1_000_000, 1_005_000, 1_010_000, 1_015_000]
    assert charts.nice_ticks(5.0, 5.0)[0] < 5.0 < charts.nice_ticks(5.0, 5.0)[-1]
    with pytest.raises(ValueError, match="finite bounds"):
        charts.nice_ticks(0.0, float("nan"))


def test_charts_escape_text_and_draw_gaps_single_points_and_empty_data():
    svg = str(charts.line_chart(["a", "<b>", "c"], {HOSTILE: [1.0, None, 3.0]}, title=HOSTILE))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "<polyline" not in svg and svg.count("<circle") == 2, "a gap leaves two single points, each drawn"
    assert "no data yet" in str(charts.line_chart([], {"x": []}, title="t"))
    bars = str(charts.bar_chart(["d1", "d2"], [0.0, 2.0], title="spend", fmt=charts.dollars, notes=["offline", ""]))
    assert bars.count("<rect") == 2 and "d1: $0.00 (offline)" in bars and "$2.00" in bars


@pytest.mark.parametrize("value, limit, colour", [(0.1, 0.3, charts.GOOD), (0.24, 0.3, charts.WARN),
                                                  (0.29, 0.3, charts.BAD), (0.5, 0.3, charts.BAD)])
def test_a_gauge_is_green_amber_or_red_by_the_share_of_its_limit(value, limit, colour):
    svg = str(charts.gauge(value, limit, label="weight"))
    assert f'fill="{colour}"' in svg and f"weight: {value / limit:.0%} of the limit" in svg
    full = 260 * min(value / limit, 1.0)
    assert f'width="{full:.1f}"' in svg, "filled to the share of the limit, capped at the end"


def test_a_gauge_without_a_limit_says_unknown():
    assert "weight: unknown" in str(charts.gauge(1.0, 0.0, label="weight"))


# ---------------------------------------------------------------- spartan serve


def test_the_server_serves_the_reports_folder_on_localhost_only(built):
    server = make_server(built["reports"], port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(server.url + "index.html", timeout=10) as response:
            assert response.status == 200 and response.read().decode() == built["html"]
        with urllib.request.urlopen(server.url, timeout=10) as response:
            assert response.read().decode() == built["html"], "/ serves the dashboard"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(server.url + "../params/base.yaml", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    from research_lib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"host '0.0.0.0' is not a loopback address.*127.0.0.1"):
        make_server(built["reports"], host="0.0.0.0", port=0)
    with pytest.raises(ConfigError, match="has no index.html.*spartan index"):
        make_server(built["root"] / "nowhere", port=0)


def test_serve_prints_its_url_and_stops_cleanly_on_ctrl_c(built):
    said, fetched = [], []

    def echo(line: str) -> None:
        said.append(line)
        if "http://" in line and not fetched:
            url = line.split()[line.split().index("at") + 1]

            def get_then_interrupt():
                try:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        fetched.append(response.status)
                finally:
                    _thread.interrupt_main()  # what Ctrl-C does

            threading.Thread(target=get_then_interrupt, daemon=True).start()

    # Ctrl-C as at a terminal, whatever this test process inherited: interrupt_main does nothing while
    # SIGINT is ignored (a test run started with & from a non-interactive shell has it ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        url = serve(built["reports"], port=0, echo=echo)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert fetched == [200] and url.startswith("http://127.0.0.1:") and said[-1] == "Stopped."


def test_spartan_serve_refuses_a_host_other_machines_could_reach(workspace, capsys):
    from research_lib.cli import main

    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
