"""Structured logs: JSON lines carrying the run id and the stage, per run and per workspace,
rotated, written by notebook kernels too, and free of secrets."""

from __future__ import annotations

import json
import logging
import os

import nbformat
import pytest

from research_lib import logs
from tests.conftest import REPO

CANARY = "sk-ant-" + "canary-logs-0123456789"  # fake keys, split so scanners see no key


@pytest.fixture(autouse=True)
def restore_logging():
    """Each test leaves the process's logging as it found it (handlers closed, levels back)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name).level for name in logs.LIBRARY_LOGGERS}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def workspace_log(workspace):
    return workspace / "reports" / "logs" / "spartan.jsonl"


def test_every_line_is_json_with_run_id_and_stage(workspace, tmp_path):
    logs.configure()
    log = logging.getLogger("research_lib.test")
    log.info("before the run")
    run_dir = tmp_path / "run"
    with logs.run_logging(run_dir, "20260101T000000Z-smoke-abcd") as run_log:
        assert os.environ["SPARTAN_RUN_ID"] == "20260101T000000Z-smoke-abcd"
        assert os.environ["SPARTAN_RUN_LOG"] == str(run_log)
        log.info("run level", extra={"rows": 3, "symbols": ["AAPL", "KO"]})
        with logs.stage("01_load_data"):
            assert os.environ["SPARTAN_STAGE"] == "01_load_data"
            logging.getLogger("some.package").warning("a third-party warning")
            try:
                1 / 0
            except ZeroDivisionError:
                log.exception("it broke")
        log.debug("not at INFO: dropped")
    log.info("after the run")
    assert not {"SPARTAN_RUN_ID", "SPARTAN_STAGE", "SPARTAN_RUN_LOG"} & set(os.environ)

    assert run_log == run_dir / "run.log.jsonl"
    lines = read_lines(run_log)
    assert [(line["message"], line["run_id"], line["stage"]) for line in lines] == [
        ("run level", "20260101T000000Z-smoke-abcd", "-"),
        ("a third-party warning", "20260101T000000Z-smoke-abcd", "01_load_data"),
        ("it broke", "20260101T000000Z-smoke-abcd", "01_load_data"),
    ]
    assert lines[0]["rows"] == 3 and lines[0]["symbols"] == ["AAPL", "KO"]
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "research_lib.test"
    assert lines[0]["ts"].endswith("+00:00")
    assert lines[2]["level"] == "ERROR" and "ZeroDivisionError: division by zero" in lines[2]["exc"]

    everything = read_lines(workspace_log(workspace))
    assert [line["message"] for line in everything] == ["before the run", "run level", "a third-party warning",
                                                        "it broke", "after the run"]
    assert all({"ts", "level", "logger", "message", "run_id", "stage"} <= set(line) for line in everything)
    assert everything[0]["run_id"] == everything[-1]["run_id"] == "-"


def test_configure_twice_adds_no_duplicate_handlers(workspace, tmp_path, monkeypatch):
    root = logging.getLogger()
    before = len(root.handlers)
    logs.configure()
    logs.configure()
    assert len(root.handlers) == before + 1
    logging.getLogger("spartan.test").info("once")
    assert [line["message"] for line in read_lines(workspace_log(workspace))] == ["once"]

    other = tmp_path / "other"
    monkeypatch.setenv("SPARTAN_HOME", str(other))
    logs.configure()  # another workspace: the log follows it, still one handler
    assert len(root.handlers) == before + 1
    logging.getLogger("spartan.test").info("elsewhere")
    assert [line["message"] for line in read_lines(workspace_log(other))] == ["elsewhere"]
    assert len(read_lines(workspace_log(workspace))) == 1

    logs.configure(workspace_log=False)
    assert len(root.handlers) == before


def test_workspace_log_rotates_at_the_configured_size(workspace):
    logs.configure(max_bytes=2_000, backup_count=2)
    log = logging.getLogger("research_lib.test")
    for number in range(60):
        log.info("line %03d %s", number, "x" * 60)
    folder = workspace / "reports" / "logs"
    assert sorted(p.name for p in folder.glob("spartan.jsonl*") if not p.name.endswith(".lock")) == [
        "spartan.jsonl", "spartan.jsonl.1", "spartan.jsonl.2"]
    sizes = {p.name: p.stat().st_size for p in folder.glob("spartan.jsonl*")}
    assert all(size <= 2_000 for size in sizes.values()), sizes
    assert sizes["spartan.jsonl.1"] > 1_500, "a file is rotated when the next line would pass the size, not before"
    oldest_first = ("spartan.jsonl.2", "spartan.jsonl.1", "spartan.jsonl")
    kept = [line for name in oldest_first for line in read_lines(folder / name)]
    numbers = [int(line["message"].split()[1]) for line in kept]
    assert numbers == list(range(numbers[0], 60)) and numbers[0] > 0, "the newest lines, in order; the oldest dropped"


def test_secrets_never_reach_a_line(workspace, tmp_path, monkeypatch):
    canaries = {name: f"{CANARY}-{number}" for number, name in enumerate(logs.redacted_names())}
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    logs.configure()
    log = logging.getLogger("research_lib.test")
    with logs.run_logging(tmp_path / "run", "run-1") as run_log:
        log.info("key %s in the arguments", canaries["ANTHROPIC_API_KEY"])
        log.warning(f"password {canaries['SPARTAN_SMTP_PASSWORD']} in the message")
        log.info("in the fields", extra={"request": {"headers": [canaries["APCA_API_SECRET_KEY"]]},
                                         "url": canaries["SPARTAN_ALERT_WEBHOOK_URL"]})
        try:
            raise RuntimeError(f"rejected key {canaries['APCA_API_KEY_ID']}")
        except RuntimeError:
            log.exception("in the exception")
    for path in (run_log, workspace_log(workspace)):
        text = path.read_text()
        assert not any(value in text for value in canaries.values()), path
        lines = read_lines(path)
        assert lines[0]["message"] == "key *** in the arguments"
        assert lines[2]["request"] == {"headers": ["***"]} and lines[2]["url"] == "***"
        assert "RuntimeError: rejected key ***" in lines[3]["exc"]


def tiny_notebook(path, code: str) -> None:
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('config_path = ""\nrun_dir = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(code),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


@pytest.mark.notebook
def test_a_run_logs_its_stages_and_its_kernels_into_run_log(workspace, tmp_path):
    from research_lib.pipeline import StageFailed, run_pipeline

    chain = tmp_path / "chain"
    chain.mkdir()
    tiny_notebook(chain / "01_say_hello.ipynb", "import logging, os\n"
                  "log = logging.getLogger('research_lib.kernel')\n"
                  "log.info('hello from the kernel', extra={'pid': os.getpid()})\n"
                  "log.warning('shown in the notebook too')")
    tiny_notebook(chain / "02_fail_now.ipynb", "raise RuntimeError('boom')")
    with pytest.raises(StageFailed, match="Stage 02_fail_now failed"):
        run_pipeline(REPO / "params" / "smoke.yaml", notebooks_dir=chain, run_dir=tmp_path / "run-xyz")

    lines = read_lines(tmp_path / "run-xyz" / "run.log.jsonl")
    assert {line["run_id"] for line in lines} == {"run-xyz"}
    said = [(line["logger"], line["message"], line["stage"]) for line in lines]
    assert said == [
        ("research_lib.pipeline", "run started", "-"),
        ("research_lib.pipeline", "stage started", "01_say_hello"),
        ("research_lib.kernel", "hello from the kernel", "01_say_hello"),
        ("research_lib.kernel", "shown in the notebook too", "01_say_hello"),
        ("research_lib.pipeline", said[4][1], "01_say_hello"),
        ("research_lib.pipeline", "stage started", "02_fail_now"),
        ("research_lib.pipeline", said[6][1], "02_fail_now"),
        ("spartan.alerts", said[7][1], "-"),
        ("research_lib.pipeline", "run failed in " + said[8][1].split(" in ")[1], "-"),
    ]
    assert lines[2]["pid"] != os.getpid(), "written by the kernel process"
    assert said[4][1].startswith("stage succeeded in ") and lines[4]["duration_s"] > 0
    assert lines[6]["level"] == "ERROR" and lines[6]["status"] == "failed" and "RuntimeError: boom" in lines[6]["error"]
    assert lines[7]["level"] == "ERROR" and lines[7]["fields"]["stage"] == "02_fail_now"

    kernel_lines = [line for line in read_lines(workspace_log(workspace)) if line["logger"] == "research_lib.kernel"]
    assert [(line["run_id"], line["stage"]) for line in kernel_lines] == [("run-xyz", "01_say_hello")] * 2
    executed = nbformat.read(tmp_path / "run-xyz" / "01_say_hello.ipynb", as_version=4)
    shown = {"name": "stderr", "output_type": "stream", "text": "shown in the notebook too\n"}
    assert shown in executed.cells[-1].outputs, "warnings still show in the notebook"

    [alert] = read_lines(workspace / "reports" / "alerts.jsonl")
    assert alert["kind"] == "run_failed" and alert["fields"]["run_id"] == "run-xyz"
    assert alert["delivered"] == {"webhook": "not configured", "smtp": "not configured"}
