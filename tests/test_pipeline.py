"""The research run end to end: papermill chain, manifest, reports, failures and exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from contextlib import closing

import pandas as pd
import pytest
import yaml

from research_lib.backtest import run_backtest
from research_lib.cli import main
from research_lib.data import read_provenance, read_snapshot
from research_lib.validation.metrics import headline_metrics
from research_lib.pipeline import discover_stages, load_manifest, select_stages
from research_lib.errors import ConfigError
from tests.conftest import REPO

CANARY = "sk-ant-" + "canary-0123456789abcdefghij"  # a fake key, split so scanners see no key


def sim_orders(workspace) -> list[tuple]:
    with closing(sqlite3.connect(workspace / "data" / "spartan.sqlite")) as conn:
        return conn.execute("SELECT client_order_id, status FROM sim_orders ORDER BY seq").fetchall()


def paper_trade_the_promoted_smoke_run(workspace, capsys):
    """Issue 7's acceptance: `spartan trade --broker sim` on advancing sessions, a re-run that
    sends nothing, `spartan halt` that stops new orders, `spartan status`, and the reports."""
    paper = workspace / "reports" / "paper" / "smoke"
    assert main(["trade", "--broker", "sim", "--asof", "2018-11-29"]) == 0
    first = json.loads((paper / "2018-11-29" / "cycle.json").read_text())
    assert first["status"] == "traded" and first["decision"] == "2018-10-31" and len(first["cycle"]["sent"]) >= 4
    assert "offline analyst, not Claude" in (paper / "2018-11-29" / "summary.html").read_text()
    placed = sim_orders(workspace)
    assert len(placed) == len(first["cycle"]["sent"]) and {s for _, s in placed} == {"new"}

    files = {p.name: p.read_bytes() for p in (paper / "2018-11-29").iterdir()}
    capsys.readouterr()
    assert main(["trade", "--broker", "sim", "--asof", "2018-11-29"]) == 0, "the same session again"
    assert "smoke 2018-11-29 on sim: already traded; nothing was run or sent" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (paper / "2018-11-29").iterdir()} == files, "its report stands"
    assert sim_orders(workspace) == placed, "a second trade for the same date places no new orders"

    assert main(["trade", "--broker", "sim"]) == 0, "without --asof: the next session, 2018-11-30, a new decision"
    second = json.loads((paper / "2018-11-30" / "cycle.json").read_text())
    assert second["decision"] == "2018-11-30" and second["positions"], "the first orders filled at the 11-30 close"
    assert {status for cid, status in sim_orders(workspace) if "20181129" in cid} == {"filled"}
    out = capsys.readouterr().out
    assert "smoke 2018-11-30 on sim" in out and "summary.html" in out

    assert main(["halt", "--reason", "acceptance test"]) == 0
    assert main(["trade", "--broker", "sim"]) == 0
    halted = json.loads((paper / "2018-12-03" / "cycle.json").read_text())
    assert halted["status"] == "halted" and halted["cycle"]["sent"] == [] and halted["kill_switch"]["state"] == "halted"
    assert not any(cid.startswith("smoke-20181203") for cid, _ in sim_orders(workspace)), "halt stops all new orders"
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "smoke  trading: HALTED (kill switch engaged: no new orders, cancels only); last change: all strategies: " \
           "acceptance test" in out and "sim account at 2018-12-03" in out
    assert main(["resume"]) == 0 and "ACTIVE" in capsys.readouterr().out
    for folder in ("2018-11-29", "2018-11-30", "2018-12-03"):
        assert {p.name for p in (paper / folder).iterdir()} >= {"07_paper_trade.ipynb", "07_paper_trade.html",
                                                                 "cycle.json", "summary.html"}
    assert main(["trade", "--strategy", "momentum"]) == 2
    err = capsys.readouterr().err
    assert "Strategy 'momentum' is not promoted" in err
    assert "KeyboardInterrupt" not in err and "[IPKernelApp]" not in err, "the kernels' shutdown is quiet"


def only_run(workspace):
    runs = sorted((workspace / "reports" / "runs").iterdir())
    assert len(runs) == 1
    return runs[0]


@pytest.mark.notebook
def test_smoke_run_leaves_every_artifact_and_no_secret(workspace, monkeypatch, capfd):
    capsys = capfd  # the kernels' stderr too: they write to this process's file descriptors
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as for a user: kernels plot inline
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", CANARY + "-alpaca")
    # With a key set, provider "auto" would call Claude; this run checks the offline analyst's labels
    # (the live path and its key scan are in tests/test_llm.py).
    assert main(["run", str(workspace / "params" / "smoke.yaml"), "--set", "report.tearsheet=true",
                 "--set", "llm.provider=offline"]) == 0
    run = only_run(workspace)
    out = capsys.readouterr().out
    assert "[1/6] 01_load_data" in out and "[6/6] 06_validate_strategy" in out and "Run succeeded: CAGR" in out

    golden = json.loads((REPO / "tests" / "golden" / "smoke_metrics.json").read_text())
    assert json.loads((run / "metrics.json").read_text()) == golden, \
        ("metrics.json differs from tests/golden/smoke_metrics.json (made by the code before the restructure of issue "
         "14, and again in issue 15 when the optimizer's problem became one re-solved per date: the portfolio's "
         "numbers moved by 5e-11 relative, the solver's tolerance); numbers must not move")

    manifest = load_manifest(run)
    assert manifest["status"] == "succeeded" and manifest["scenario"] == "smoke"
    assert [s["name"] for s in manifest["stages"]] == ["01_load_data", "02_build_features", "03_fit_ml_signals",
                                                       "04_ask_claude", "05_build_portfolio", "06_validate_strategy"]
    assert manifest["llm"]["analyst"] == "offline analyst, not Claude" and manifest["llm"]["cost_usd"] == 0.0
    assert all(s["status"] == "succeeded" and s["duration_s"] > 0 for s in manifest["stages"])
    assert manifest["config"]["report"]["tearsheet"] is True, "overrides are saved with the run"
    assert manifest["data"]["sha256"] == read_provenance(run / "prices.parquet")["sha256"]
    assert manifest["data"]["source"] == "bundled"
    assert set(manifest["metrics"]["strategy"]) >= {"cagr", "sharpe", "max_drawdown", "win_rate"}
    assert manifest["metrics"]["strategy_name"] == "portfolio"
    assert set(manifest["metrics"]["alternatives"]) == {"momentum_12_1", "ml_signal", "llm_signal"}, \
        "06 backtests the baseline and both signal rules alongside"
    # 06 backtested exactly the weights 05 wrote, and those came from the signals (blend of ML and analyst).
    weights = pd.read_parquet(run / "weights.parquet")
    replay = run_backtest(weights, read_snapshot(run / "prices.parquet"), cost_bps=10.0)
    assert manifest["metrics"]["strategy"]["sharpe"] == pytest.approx(headline_metrics(replay.returns)["sharpe"])
    portfolio = json.loads((run / "portfolio_report.json").read_text())
    assert portfolio["signal_sources"] == ["llm", "ml"] and portfolio["method"] == "black_litterman"
    assert portfolio["analyst"] == "offline analyst, not Claude"
    events = pd.read_parquet(run / "risk_events.parquet")
    assert portfolio["risk_clamped"] == (events["action"] == "clamped").sum() > 0, "smoke's limits make the risk layer clamp"
    by_cutoff = manifest["metrics"]["llm_signal_by_cutoff"]
    assert by_cutoff["knowledge_cutoff"] == "2026-06-30" and by_cutoff["after_cutoff"] is None
    assert by_cutoff["before_cutoff"]["sessions"] > 200
    report = json.loads((run / "ml_report.json").read_text())
    assert manifest["ml"]["rank_ic"] == report["models"]["hgbr"]["rank_ic"]["mean"]
    assert set(report["models"]) == {"ridge", "hgbr"} and report["permutation_importance"]

    for name in ("config.yaml", "prices.parquet", "features.parquet", "signals_ml.parquet", "ml_report.json",
                 "weights.parquet", "weights_optimizer.parquet", "05_build_portfolio.html", "metrics.json", "01_load_data.ipynb", "01_load_data.html", "06_validate_strategy.ipynb", "06_validate_strategy.html",
                 "tearsheet.html"):
        assert (run / name).is_file(), name
    for stage in ("01_load_data", "03_fit_ml_signals", "05_build_portfolio", "06_validate_strategy"):
        cells = json.loads((run / f"{stage}.ipynb").read_text())["cells"]
        assert any("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", [])), f"{stage} shows its charts"
    assert (run / "tearsheet.html").stat().st_mode & 0o044, "reports are readable by others, like any file"
    tearsheet = (run / "tearsheet.html").read_text()
    for section in ("Cumulative Returns", "Drawdown", "Monthly Returns", "Sharpe", "Benchmark: SP500"):
        assert section in tearsheet, section

    index = (workspace / "reports" / "index.html").read_text()
    assert run.name in index and f"runs/{run.name}/tearsheet.html" in index and "succeeded" in index
    assert f"{manifest['ml']['rank_ic']:.3f}" in index
    assert "offline analyst, not Claude" in index, "the dashboard says who the analyst was"
    assert "offline analyst, not Claude" in (run / "tearsheet.html").read_text()
    assert "offline analyst, not Claude" in (run / "04_ask_claude.html").read_text()
    assert "offline analyst, not Claude" in (run / "05_build_portfolio.html").read_text()

    # 06 validated the run: the gate's verdict is in the manifest, validation.html and on the dashboard.
    gate = manifest["validation"]
    assert gate["passed"] is False and "sharpe" in gate["failed"] and gate["n_trials"] >= 13
    page = (run / "validation.html").read_text()
    for section in ("Promotion gate: FAILED", "Deflated Sharpe ratio", "Probability of backtest overfitting",
                    "Costs stressed", "By volatility regime", "By year", "offline analyst, not Claude", "Data sha256"):
        assert section in page, section
    assert f"runs/{run.name}/validation.html" in index and "DSR" in index
    assert main(["promote", str(run)]) == 1, "a failing run is not promoted"
    refusal = capsys.readouterr().err
    assert f"Run {run.name} fails the promotion gate" in refusal and "- sharpe: " in refusal and "needs >= 1.5" in refusal
    assert not any((workspace / "params" / "promoted").iterdir())
    assert main(["promote", str(run), "--override-reason", "smoke test of the promotion path"]) == 0
    promoted = yaml.safe_load((workspace / "params" / "promoted" / "smoke.yaml").read_text())
    assert promoted["override_reason"] == "smoke test of the promotion path" and promoted["run_id"] == run.name
    assert promoted["data"]["sha256"] == manifest["data"]["sha256"] and promoted["params"]["scenario"] == "smoke"
    assert "smoke test of the promotion path" in (workspace / "reports" / "index.html").read_text()
    capsys.readouterr()
    err = capsys.readouterr().err
    assert "KeyboardInterrupt" not in err and "[IPKernelApp]" not in err, err
    paper_trade_the_promoted_smoke_run(workspace, capsys)

    for path in [*run.rglob("*"), *(workspace / "reports" / "paper").rglob("*"), *(workspace / "data").glob("*.sqlite*"),
                 workspace / "reports" / "index.html", workspace / "params" / "promoted" / "smoke.yaml"]:
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"secret leaked into {path}"


@pytest.mark.notebook
@pytest.mark.parametrize("corrupt, message", [
    ("nan", r"snapshot .*bundled-\w+\.parquet, KO: missing \(NaN\) close on 2016-03-01.*The snapshot is corrupt: delete bundled-\w+\.parquet or run with --set data.refresh=true"),
    ("negative", r"snapshot .*bundled-\w+\.parquet, KO: non-positive close -1 on 2016-03-01"),
    ("duplicate", r"snapshot .*bundled-\w+\.parquet has duplicated dates \(1: 2016-03-01\)"),
])
def test_corrupted_snapshot_fails_the_run_with_one_clear_paragraph(workspace, capsys, corrupt, message):
    params = str(workspace / "params" / "smoke.yaml")
    assert main(["run", params, "--stages", "01"]) == 0
    [snapshot] = (workspace / "data" / "snapshots").glob("*.parquet")
    prices = pd.read_parquet(snapshot)
    day = pd.Timestamp("2016-03-01")
    if corrupt == "duplicate":
        prices = pd.concat([prices, prices.loc[[day]]]).sort_index()
    else:
        prices.loc[day, ("close", "KO")] = float("nan") if corrupt == "nan" else -1.0
    prices.to_parquet(snapshot)
    capsys.readouterr()

    assert main(["run", params, "--stages", "01"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "Stage 01_load_data failed" in err and "DataValidationError" in err
    import re
    assert re.search(message, err), err

    failed = max((workspace / "reports" / "runs").iterdir(), key=lambda p: load_manifest(p)["created_at"] + p.name)
    manifest = load_manifest(failed)
    assert manifest["status"] == "failed" and manifest["stages"][0]["status"] == "failed"
    assert (failed / "01_load_data.html").is_file(), "the failed notebook is kept, with its traceback"
    assert "failed" in (workspace / "reports" / "index.html").read_text()


def test_bad_parameters_exit_2_and_write_nothing(workspace, capsys):
    assert main(["run", str(workspace / "params" / "smoke.yaml"), "--set", "backtest.cost_bps=-3"]) == 2
    assert "backtest.cost_bps: Input should be greater than or equal to 0" in capsys.readouterr().err
    assert not (workspace / "reports").exists()


def test_unknown_stage_exits_2(workspace, capsys):
    assert main(["run", str(workspace / "params" / "smoke.yaml"), "--stages", "99"]) == 2
    assert "Unknown stage(s) ['99']; the chain has ['01_load_data', '02_build_features', '03_fit_ml_signals', '04_ask_claude', '05_build_portfolio', '06_validate_strategy']" in capsys.readouterr().err


def test_bad_command_line_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["run"])
    assert caught.value.code == 2


def test_stage_discovery_and_selection(tmp_path):
    chain = discover_stages(REPO / "notebooks")
    assert [p.stem for p in chain] == ["01_load_data", "02_build_features", "03_fit_ml_signals", "04_ask_claude",
                                       "05_build_portfolio", "06_validate_strategy"]
    assert select_stages(chain, ["06"]) == chain[5:]
    assert select_stages(chain, None) == chain
    (tmp_path / "scratch.ipynb").write_text("{}")
    with pytest.raises(ConfigError, match="No notebooks named NN_verb_object.ipynb"):
        from research_lib.pipeline import run_pipeline
        run_pipeline(REPO / "params" / "smoke.yaml", notebooks_dir=tmp_path, run_dir=tmp_path / "run")


def test_index_command_lists_runs_even_with_a_broken_manifest(workspace, capsys):
    broken = workspace / "reports" / "runs" / "20260101T000000Z-x-0000"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    assert main(["index"]) == 0
    html = (workspace / "reports" / "index.html").read_text()
    assert "20260101T000000Z-x-0000" in html and "unreadable" in html


@pytest.mark.notebook
def test_a_dying_kernel_fails_the_run_cleanly(workspace, tmp_path, capsys):
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('config_path = ""\nrun_dir = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nos._exit(1)"),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    chain = tmp_path / "chain"
    chain.mkdir()
    nbformat.write(notebook, chain / "01_crash_kernel.ipynb")
    from research_lib.pipeline import StageFailed, run_pipeline

    with pytest.raises(StageFailed, match=r"Stage 01_crash_kernel failed: the notebook could not be executed \(DeadKernelError"):
        run_pipeline(REPO / "params" / "smoke.yaml", notebooks_dir=chain, run_dir=tmp_path / "run")
    manifest = load_manifest(tmp_path / "run")
    assert manifest["status"] == "failed" and manifest["stages"][0]["status"] == "failed"
    assert manifest["finished_at"] is not None


def test_an_unexpected_error_still_marks_the_run_failed(workspace, tmp_path):
    from research_lib.pipeline import StageFailed, run_pipeline

    chain = tmp_path / "chain"
    chain.mkdir()
    (chain / "01_broken_json.ipynb").write_text("{ not a notebook")
    with pytest.raises(StageFailed, match=r"failed: .*Error"):
        run_pipeline(REPO / "params" / "smoke.yaml", notebooks_dir=chain, run_dir=tmp_path / "run")
    manifest = load_manifest(tmp_path / "run")
    assert manifest["status"] == "failed" and manifest["stages"][0]["status"] == "failed"


def test_a_run_folder_is_never_reused(workspace, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text("{}")
    assert main(["run", str(workspace / "params" / "smoke.yaml"), "--run-dir", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err


# ---------------------------------------------------------------- notebook kernels: quiet, killed, cleaned up


def lingering_notebook(path):
    """A notebook whose kernel, from its second cell on, answers each kernel_info_request and then
    lingers in the handler: papermill asks for it after the last cell and shuts the kernel down as
    soon as the answer arrives, while the handler still runs."""
    import nbformat

    linger = (
        "import asyncio, time\n"
        "kernel = get_ipython().kernel\n"
        "answer = kernel.shell_handlers['kernel_info_request']\n"
        "async def answer_then_linger(*args):\n"
        "    result = answer(*args)\n"
        "    if asyncio.iscoroutine(result):\n"
        "        await result\n"
        "    time.sleep(1.0)\n"
        "kernel.shell_handlers['kernel_info_request'] = answer_then_linger")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('config_path = ""\nrun_dir = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(linger)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


@pytest.mark.notebook
def test_a_finished_notebook_kernel_is_killed_quietly_and_leaves_no_file(workspace, tmp_path, monkeypatch, capfd):
    from research_lib.pipeline import execute_notebook

    kernels = tmp_path / "tmp"
    kernels.mkdir()
    monkeypatch.setenv("TMPDIR", str(kernels))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    notebook = lingering_notebook(tmp_path / "01_linger.ipynb")
    assert execute_notebook(notebook, tmp_path / "out.ipynb", {}, tmp_path) is None
    err = capfd.readouterr().err
    assert "KeyboardInterrupt caught in kernel" not in err and "[IPKernelApp] ERROR" not in err, err
    assert list(kernels.iterdir()) == [], "the kernel's sockets and connection file are removed"


def kernel_files(folder, pid, kernel="0a1b2c3d", sockets=True) -> list:
    """The files a kernel started by ``pid`` leaves: 5 sockets (bound, nobody listening) and its
    connection file."""
    import socket

    stem = folder / f"spartan-kernel-{pid}-{kernel}"
    made = []
    for port in range(1, 6):
        path = stem.parent / f"{stem.name}-{port}"
        if sockets:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
                bound.bind(str(path))
        else:
            path.write_text("")
        made.append(path)
    stem.with_name(f"{stem.name}.json").write_text("{}")
    return made + [stem.with_name(f"{stem.name}.json")]


def test_kernel_file_clean_up_removes_only_our_dead_commands_files_and_never_fails(tmp_path, process_states,
                                                                                   monkeypatch,
                                                                                   caplog):
    """A table of hostile temp-folder contents: only files named as our kernels', owned by this
    user, of a valid pid of no process, with no live kernel on their sockets, go; each other
    entry, and each error, is logged and left alone."""
    import logging
    import socket

    from research_lib._kernel_guard import pid_max
    from research_lib.pipeline import remove_orphaned_kernel_files

    dead = process_states["ended"]
    rows: dict[str, tuple[list, bool]] = {}  # what: (its files, removed?)
    rows["a dead command's kernel"] = (kernel_files(tmp_path, dead, "00000001"), True)
    rows["a dead command's kernel, plain files"] = (kernel_files(tmp_path, dead, "00000002", sockets=False), True)
    for state, pid in process_states.items():
        if state != "ended":
            rows[f"a kernel of a command that is {state}"] = (kernel_files(tmp_path, pid, "00000003"),
                                                               state == "zombie")
    for what, pid in (("pid_max + 1", pid_max() + 1), ("a huge pid", 10 ** 40), ("pid 0", 0),
                      ("a leading zero", f"0{dead}"), ("non-ASCII digits", "\u0661\u0662\u0663"),
                      ("a negative pid", -dead), ("no pid", "x")):
        rows[f"{what} in the name"] = (kernel_files(tmp_path, pid, "00000004", sockets=False), False)
    odd = [tmp_path / f"spartan-kernel-{dead}-{kernel}" for kernel in ("0A1B2C3D", "0a1b2c3", "0a1b2c3d0")]
    odd += [tmp_path / f"spartan-kernel-{dead}-0a1b2c3d-x", tmp_path / f"spartan-kernel-{dead}-0a1b2c3d.txt",
            tmp_path / f"other-spartan-kernel-{dead}-0a1b2c3d.json", tmp_path / "spartan-kernel-.json"]
    for path in odd:
        path.write_text("")
    rows["names not quite ours"] = (odd, False)
    live = kernel_files(tmp_path, dead, "00000005")  # a live kernel whose command is in another pid namespace
    live[0].unlink()
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(live[0]))
    listening.listen()
    rows["a live kernel of another pid namespace"] = (live, False)
    folder = tmp_path / f"spartan-kernel-{dead}-00000006.json"
    folder.mkdir()
    (folder / "inside").write_text("")
    rows["a folder named as a connection file"] = ([folder], False)
    target = tmp_path / "elsewhere.txt"
    target.write_text("kept")
    link = tmp_path / f"spartan-kernel-{dead}-00000007.json"
    link.symlink_to(target)
    rows["a link to a file elsewhere"] = ([link], True)
    refused = kernel_files(tmp_path, dead, "00000008", sockets=False)
    rows["files the system refuses to delete"] = (refused, False)
    real_unlink = type(tmp_path).unlink

    def unlink(path, missing_ok=False):
        if path in refused:
            raise PermissionError(1, "Operation not permitted (a sticky temp folder)", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(type(tmp_path), "unlink", unlink)
    try:
        if os.geteuid() == 0:  # only root can give a file to another user
            foreign = kernel_files(tmp_path, dead, "00000009", sockets=False)
            for path in foreign:
                os.chown(path, 12345, 12345)
            rows["another user's files"] = (foreign, False)
        with monkeypatch.context() as patched:
            patched.setattr(os, "getuid", lambda: os.geteuid() + 1)
            assert remove_orphaned_kernel_files(tmp_path) == [], "files of another user are never removed"
        with caplog.at_level(logging.DEBUG, logger="research_lib.pipeline"):
            removed = remove_orphaned_kernel_files(tmp_path)
    finally:
        listening.close()
    expected = sorted(str(p) for files, gone in rows.values() if gone for p in files)
    assert sorted(str(p) for p in removed) == expected
    left = {p for p in tmp_path.iterdir()}
    for what, (files, gone) in rows.items():
        assert all((p in left) is not gone for p in files), what
    assert target.read_text() == "kept" and (folder / "inside").exists()
    assert any(r.levelno == logging.WARNING and "could not be removed" in r.getMessage() for r in caplog.records)
    assert remove_orphaned_kernel_files(tmp_path / "no such folder") == []
    assert remove_orphaned_kernel_files(target) == [], "a file, not a folder"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_kernel_is_started_to_die_with_its_command_or_not_at_all_if_that_is_gone():
    """`research_lib._kernel_guard` asks for SIGKILL at its parent's death, keeps that request
    through the exec of the kernel, and starts nothing when its parent is not the command."""
    import signal
    import subprocess

    from research_lib._kernel_guard import guarded_command

    read_request = ("import ctypes; signal = ctypes.c_int(-1); "
                    "ctypes.CDLL(None).prctl(2, ctypes.byref(signal), 0, 0, 0); print(signal.value)")  # PR_GET_PDEATHSIG
    kernel = [sys.executable, "-c", read_request]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = subprocess.run(guarded_command(kernel, os.getpid()), env=env, capture_output=True, text=True, timeout=60)
    assert (started.returncode, started.stdout.strip()) == (0, str(int(signal.SIGKILL))), started.stderr
    plain = subprocess.run(kernel, capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "0", "without the guard no such request"
    orphan = subprocess.run(guarded_command(kernel, os.getpid() + 1), env=env, capture_output=True, text=True,
                            timeout=60)
    assert (orphan.returncode, orphan.stdout) == (1, ""), "its command already gone: the kernel never starts"
