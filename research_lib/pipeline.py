"""Execute the notebook chain with papermill and record the run.

One run: resolve parameters -> create ``reports/runs/<run_id>/`` with ``config.yaml`` ->
execute each ``notebooks/NN_name.ipynb`` into the run folder (parameters: ``config_path``
and ``run_dir`` only; secrets stay in the environment) -> HTML of each executed notebook
-> ``manifest.json`` updated after every stage -> ``reports/index.html`` rebuilt.

Incremental: each stage is keyed by the parameters it reads, its notebook and library code, the
outside state that decides what it makes and the sha256 of the run-folder files it reads
(`research_lib.stages.chain`). A stage whose key matches complete, intact outputs of an earlier
run in the workspace is not executed: its files (executed notebook and HTML included) are copied
into the new run folder and the manifest says ``"status": "reused", "reused_from": <run id>``
(``computed_in``: the run that executed it). ``fresh=True`` (``spartan run --fresh``, or
``SPARTAN_REUSE=0``) executes every stage. Every stage's outputs are recorded as
``{file: sha256}``, and what it read as ``reads``.

Logs: every line of the run, its notebook kernels' included, goes to ``run.log.jsonl`` in the
run folder and to the workspace log, carrying the run id and the stage (``research_lib.logs``).
A failed run raises a ``run_failed`` alert (``research_lib.alerts``).

Kernels: each notebook runs in a kernel that dies with this process (`_IPCKernelManager`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import socket
import stat
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from research_lib import compute, logs, paths, progress
from research_lib._kernel_guard import guarded_command, pid_max, process_state
from research_lib.alerts import alert
from research_lib.config import RunConfig, load_config, save_config
from research_lib.data import read_provenance
from research_lib._io import atomic_write_bytes, git_commit, now_utc, package_versions, read_json, write_json
from research_lib.errors import ConfigError, SpartanError
from research_lib.env import load_env_file
from research_lib.stages import chain as stage_files, reuse

STAGE_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")
PAPER_NOTEBOOK = "07_paper_trade.ipynb"  # run by `spartan trade`, one session at a time
NOT_STAGES = (PAPER_NOTEBOOK, "00_explore.ipynb")  # paper trading; where a researcher starts in Lab
MANIFEST = "manifest.json"
_VERSIONED = ("pandas", "numpy", "papermill", "quantstats", "scikit-learn", "skfolio", "arch")
KERNEL_LOGGING = "--IPKernelApp.extensions=research_lib.logs"  # kernels log like the process that starts them

log = logging.getLogger(__name__)


KERNEL_FILES = "spartan-kernel-"  # + "<pid of the process that started it>-<id>": its sockets and connection file
_KERNEL_FILE = re.compile(rf"^{KERNEL_FILES}(?P<pid>[1-9][0-9]*)-(?P<id>[0-9a-f]{{8}})(-[0-9]+|\.json)$")
_SOCKET_PROBE_S = 0.2  # how long to wait for a kernel's socket to accept a connection


class _IPCKernelManager(AsyncKernelManager):
    """The kernel of one notebook run by this process.

    - It talks over IPC sockets in the temp folder, not unencrypted TCP ports. Its sockets and
      connection file are named ``spartan-kernel-<this pid>-<id>*``, so the files a killed
      process left behind are found and removed by the next run (`remove_orphaned_kernel_files`).
    - It dies with this process: jupyter_client starts it in a session of its own (out of reach
      of a signal to the command's process group), so on Linux it is started through
      `research_lib._kernel_guard`, which asks to be SIGKILLed when the thread that started it
      ends (``PR_SET_PDEATHSIG``; that thread runs the notebook to its end) before it becomes the
      kernel. Elsewhere ipykernel's parent poller ends it within a second. Either way the
      trading cycle checks before each order that the command is still there.
    - It is killed, not interrupted, when its notebook ends or is abandoned (`shutdown_kernel`).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transport = "ipc"
        self.ip = os.path.join(tempfile.gettempdir(), f"{KERNEL_FILES}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.connection_file = f"{self.ip}.json"

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        await super()._async_launch_kernel(guarded_command(kernel_cmd, os.getpid()), **kw)

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        """SIGKILL the kernel's process group and remove its files. jupyter_client's shutdown would
        first interrupt it (SIGINT): a finished notebook's kernel may still answer papermill's last
        ``kernel_info_request`` and log ``KeyboardInterrupt``, an abandoned cell would run on for
        ``shutdown_wait_time``. Its outputs are in hand: killed at once (a restart is left to jupyter_client).
        """
        if restart:
            await super().shutdown_kernel(now=now, restart=restart)
            return
        if not self.owns_kernel:
            return
        self.shutting_down = True
        self.stop_restarter()
        await self._async_kill_kernel()
        await self._async_cleanup_resources()


def remove_orphaned_kernel_files(folder: str | Path | None = None) -> list[Path]:
    """Delete the sockets and connection files of kernels whose command was killed before it
    could clean up (its kernels died with it); return what was deleted.

    Clean-up never fails a run: a file is removed only when it is ours beyond doubt (`_orphaned`:
    named as our kernels name theirs, owned by this user, its command's pid a valid pid of no
    process, and none of its kernel's sockets accepting a connection, which a live kernel's do
    even when its command runs in another pid namespace); anything else, and any error, is
    logged and left alone.
    """
    removed: list[Path] = []
    try:
        kernels: dict[tuple[int, str], list[Path]] = {}  # (its command's pid, its id): its files
        for path in Path(folder or tempfile.gettempdir()).glob(f"{KERNEL_FILES}*"):
            named = _KERNEL_FILE.match(path.name)
            if named:
                kernels.setdefault((int(named["pid"]), named["id"]), []).append(path)
            else:
                log.debug("kernel file clean-up: %s is not named as a kernel's file; left alone", path)
    except OSError as err:
        log.warning("kernel file clean-up skipped: %s cannot be listed (%s)", folder or tempfile.gettempdir(), err)
        return removed
    for (pid, _), files in sorted(kernels.items()):
        why_not = _orphaned(pid, files)
        if why_not:
            log.debug("kernel file clean-up: %s left alone: %s", files[0].name, why_not)
            continue
        for path in files:
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                log.warning("kernel file clean-up: %s could not be removed (%s); left alone", path, err)
                continue
            removed.append(path)
    return removed


def _orphaned(pid: int, files: list[Path]) -> str | None:
    """Why the files of one kernel, started by process ``pid``, must be left alone, or None."""
    if pid > pid_max():
        return f"pid {pid} is beyond this system's pid_max ({pid_max()})"
    for path in files:
        try:
            owner = os.lstat(path).st_uid
        except OSError as err:
            return f"{path.name} cannot be read ({err})"
        if owner != os.getuid():
            return f"{path.name} belongs to user {owner}, not to this one ({os.getuid()})"
    state = process_state(pid)
    if state != "gone":
        return f"its command, process {pid}, is {state}"
    if any(_accepts_connections(path) for path in files):
        return "a live kernel listens on its sockets (its command runs in another pid namespace)"
    return None


def _accepts_connections(path: Path) -> bool:
    """Whether a process listens on the Unix socket ``path`` (an error counts as yes)."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return True
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_SOCKET_PROBE_S)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True
    finally:
        probe.close()
    return True


class StageFailed(SpartanError):
    """A notebook of the chain raised; the run is marked failed in its manifest."""


def discover_stages(notebooks_dir: Path) -> list[Path]:
    """The research chain: every ``NN_verb_object.ipynb`` in ``notebooks_dir`` but the paper-trading
    and the exploration notebooks, in number order."""
    return sorted(p for p in Path(notebooks_dir).iterdir() if STAGE_PATTERN.match(p.name) and p.name not in NOT_STAGES)


def select_stages(available: list[Path], wanted: list[str] | None) -> list[Path]:
    """Pick stages by name (``01_load_data``) or number (``01``); refuse unknown ones."""
    if not wanted:
        return available
    by_key = {}
    for path in available:
        by_key[path.stem] = path
        by_key[path.stem[:2]] = path
    unknown = [w for w in wanted if w not in by_key]
    if unknown:
        raise ConfigError(f"Unknown stage(s) {unknown}; the chain has {[p.stem for p in available]}.")
    chosen = {by_key[w] for w in wanted}
    return [p for p in available if p in chosen]


def new_run_id(scenario: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{scenario}-{uuid.uuid4().hex[:4]}"


def write_manifest(run_dir: Path, manifest: dict) -> None:
    write_json(run_dir / MANIFEST, manifest)


def run_pipeline(
    params: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    stages: list[str] | None = None,
    run_dir: str | Path | None = None,
    *,
    notebooks_dir: str | Path | None = None,
    echo: Callable[[str], None] = print,
    fresh: bool = False,
) -> Path:
    """Run the chain for ``params`` and return the run folder; ``fresh``: execute every stage
    (otherwise a stage whose key matches an earlier run's intact outputs is reused).

    Raises
    ------
    ConfigError
        bad parameters or stage names (before anything is written).
    StageFailed
        a notebook failed; the manifest says which, and the index is rebuilt.
    """
    config = load_config(params, overrides)
    load_env_file()  # as the kernels will: whether a key is set decides 04's analyst, hence its key
    fresh = fresh or not reuse.enabled()
    notebooks = Path(notebooks_dir or paths.notebooks_dir())
    chain = select_stages(discover_stages(notebooks), stages)
    if not chain:
        raise ConfigError(f"No notebooks named NN_verb_object.ipynb in {notebooks}; nothing to run.")
    if config.validation.sweep and any(p.stem == "06_validate_strategy" for p in chain):
        from research_lib.stages.validation import check_sweep_recorded

        check_sweep_recorded(config.validation.sweep)  # a mistyped id found now, not after five stages
    run_id = new_run_id(config.scenario) if run_dir is None else Path(run_dir).name
    run_dir = Path(run_dir or paths.reports_dir() / "runs" / run_id).resolve()
    if (run_dir / MANIFEST).exists():
        raise ConfigError(f"Run folder {run_dir} already holds a run; its artifacts would be mixed with this one. "
                          "Choose a new --run-dir (or leave it out for reports/runs/<run_id>).")
    run_dir.mkdir(parents=True, exist_ok=True)
    logs.configure()
    whole = discover_stages(notebooks)  # stages may be reused only while the chain has every stage before them
    run = _Run(config, run_dir, notebooks, echo, fresh, next((n for n, p in enumerate(chain) if p != whole[n]), len(chain)))
    with logs.run_logging(run_dir, run_id):
        _run_chain(run, params, overrides, chain, run_id)
    return run_dir


@dataclass
class _Run:
    """One run of the chain: where it writes, whether it may reuse, where its seconds go."""
    config: RunConfig
    run_dir: Path
    notebooks: Path
    echo: Callable[[str], None]
    fresh: bool = False
    complete: int = 0  # stages 0..complete-1 of the chain are the workspace's first ones: those may be reused
    manifest: dict = field(default_factory=dict)
    earlier: list = field(default_factory=list)  # earlier runs (folder, manifest), newest first
    timings: dict = field(default_factory=dict)  # seconds the pipeline itself spent, by kind


@contextmanager
def _timed(timings: dict, kind: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[kind] = round(timings.get(kind, 0.0) + time.perf_counter() - started, 3)


@contextmanager
def _reuse_in_kernels(allowed: bool) -> Iterator[None]:
    """Whether an executed stage's kernel (it inherits the environment) may take artifacts from
    earlier runs: only after a gap in the chain (``--stages 06``); else its inputs are here."""
    before = os.environ.get(reuse.REUSE_ENV)
    os.environ[reuse.REUSE_ENV] = (before or "1") if allowed else "0"
    try:
        yield
    finally:
        del os.environ[reuse.REUSE_ENV]
        if before is not None:
            os.environ[reuse.REUSE_ENV] = before


def _run_chain(run: _Run, params: str | Path, overrides: list[str] | tuple[str, ...], chain: list[Path],
               run_id: str) -> None:
    """The body of ``run_pipeline``, inside its run's logging."""
    config, run_dir, echo = run.config, run.run_dir, run.echo
    config_path = save_config(config, run_dir / "config.yaml")
    manifest = {
        "run_id": run_id, "scenario": config.scenario, "description": config.description,
        "params_file": str(params), "overrides": list(overrides), "status": "running",
        "created_at": now_utc(), "finished_at": None, "error": None,
        "code": git_commit(paths.workspace_root()), "versions": package_versions(_VERSIONED),
        "config": config.model_dump(mode="json"), "data": None, "metrics": None,
        "stages": [{"name": p.stem, "status": "pending"} for p in chain], "fresh": run.fresh,
    }
    run.manifest = manifest
    with _timed(run.timings, "lookup_s"):
        run.earlier = [] if run.fresh else reuse.list_runs(exclude=run_dir)
    write_manifest(run_dir, manifest)
    echo(f"spartan run {params} -> {run_dir}")
    log.info("run started", extra={"params_file": str(params), "overrides": list(overrides),
                                   "stages": [p.stem for p in chain], "run_dir": str(run_dir)})
    run_started = time.perf_counter()
    stage = None
    try:
        with compute.cluster_for_run(config.compute):  # compute.backend dask: one cluster for every stage's kernel
            for number, notebook in enumerate(chain):
                stage = manifest["stages"][number]
                with logs.stage(notebook.stem):
                    _run_stage(run, number, notebook, stage, config_path)
        manifest["status"] = "succeeded"
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        message = str(err) if isinstance(err, StageFailed) else f"{type(err).__name__}: {err}"
        if stage is not None and stage["status"] in ("pending", "running"):  # keying, too, can fail
            stage.update(status=status, error=message)
        manifest.update(status=status, error=message)
        if status == "failed":
            failed_stage = stage["name"] if stage is not None else None
            alert("run_failed", f"Run {run_id} failed: {message}", key=run_id, run_id=run_id, stage=failed_stage,
                  scenario=config.scenario, run_dir=str(run_dir), error=message)
        if isinstance(err, (StageFailed, KeyboardInterrupt)):
            raise
        raise StageFailed(f"Run {run_id} failed: {message}") from err
    finally:
        manifest["finished_at"] = now_utc()
        manifest["data"] = read_provenance(run_dir / "prices.parquet")
        manifest["metrics"] = read_json(run_dir / "metrics.json")
        manifest["ml"] = _ml_headline(read_json(run_dir / "ml_report.json"))
        manifest["llm"] = _llm_headline(read_json(run_dir / "llm_report.json"))
        manifest["validation"] = _gate_headline(read_json(run_dir / "validation.json"))
        manifest["timings"] = run.timings
        write_manifest(run_dir, manifest)
        with _timed(run.timings, "index_s"):
            _rebuild_index()
        write_manifest(run_dir, manifest)  # with the index's seconds
        duration_s = round(time.perf_counter() - run_started, 3)
        log.info("run %s in %.1f s", manifest["status"], duration_s, extra={"status": manifest["status"],
                                                                            "duration_s": duration_s})


def _run_stage(run: _Run, number: int, notebook: Path, stage: dict, config_path: Path) -> None:
    """Reuse stage ``notebook`` from an earlier run when its key matches intact outputs; else execute it."""
    label = f"[{number + 1}/{len(run.manifest['stages'])}] {notebook.stem}"
    started = time.perf_counter()
    with _timed(run.timings, "keys_s"):
        stage["key"], stage["reads"] = stage_files.stage_key(notebook.stem, notebook, run.config, run.run_dir, run.notebooks)
    found, why = _reusable(run, number, notebook.stem, stage["key"])
    if found is not None:
        with _timed(run.timings, "copying_s"):
            reuse.copy_files(found.run_dir, found.entry["outputs"], run.run_dir)
        stage.update(status="reused", reused_from=found.run_id, computed_in=found.entry.get("computed_in", found.run_id),
                     notebook=notebook.name, outputs=found.entry["outputs"], external=found.entry.get("external"),
                     html=found.entry.get("html"), duration_s=round(time.perf_counter() - started, 3))
        log.info("stage reused from %s", found.run_id, extra={"status": "reused", "reused_from": found.run_id})
        run.echo(f"{label} reused from {found.run_id}" + (f" (computed in {stage['computed_in']})"
                                                          if stage["computed_in"] != found.run_id else ""))
        return write_manifest(run.run_dir, run.manifest)
    run.echo(f"{label} ..." + (f" recomputed: {why}" if why else ""))  # papermill's cell bar follows on stderr
    log.info("stage started", extra={"notebook": notebook.name, "why": why})
    stage.update(status="running", started_at=now_utc(), notebook=notebook.name, why=why)
    write_manifest(run.run_dir, run.manifest)
    before, state = reuse.stat_folder(run.run_dir), reuse.state_before(notebook.stem, run.run_dir.name)
    with _reuse_in_kernels(not run.fresh and number >= run.complete):
        error = _execute(notebook, run.run_dir, config_path, run.notebooks, progress_bar=_progress_bar(notebook.stem))
    stage.update(duration_s=round(time.perf_counter() - started, 3),
                 status="failed" if error else "succeeded", error=error)
    log.log(logging.ERROR if error else logging.INFO, "stage %s in %.1f s", stage["status"], stage["duration_s"],
            extra={"status": stage["status"], "duration_s": stage["duration_s"], "error": error})
    with _timed(run.timings, "html_s"):
        stage["html"] = to_html(run.run_dir / notebook.name)
    if error:
        kept = run.run_dir / (stage["html"] or notebook.name)
        raise StageFailed(f"Stage {notebook.stem} failed: {error} Executed notebook: {kept}")
    with _timed(run.timings, "hashing_s"):
        written = reuse.written_files(before, reuse.stat_folder(run.run_dir))
        after = reuse.external_state(notebook.stem, run.run_dir)
        stage.update(outputs=stage_files.outputs(notebook.stem, run.config, run.run_dir, written),
                     external={**(state or {}), **(after or {})} or None)
    run.echo(f"      done in {stage['duration_s']:.1f} s")
    write_manifest(run.run_dir, run.manifest)


def _reusable(run: _Run, number: int, stage: str, key: str) -> tuple[reuse.Reusable | None, str | None]:
    """The earlier run whose outputs of ``stage`` may be reused, or None and why not (None: nothing to say)."""
    if run.fresh or number >= run.complete:  # a chain that skips stages has no upstream outputs to key on
        return None, None
    with _timed(run.timings, "lookup_s"):
        return stage_files.find_reusable(run.earlier, stage, key, run.config)


def _progress_bar(stage: str) -> dict | bool:
    """papermill's cell progress bar for the CLI on a terminal (a log file gets the stage lines only),
    unless progress is turned off."""
    return progress.enabled() and sys.stderr.isatty() and {"desc": f"      {stage}", "unit": "cell",
                                                           "file": sys.stderr, "leave": False}


def _execute(notebook: Path, run_dir: Path, config_path: Path, cwd: Path, progress_bar: dict | bool = False) -> str | None:
    """Execute one stage of the chain into the run folder; return a one-line failure or None."""
    return execute_notebook(notebook, run_dir / notebook.name,
                            {"config_path": str(config_path), "run_dir": str(run_dir)}, cwd, progress_bar)


def execute_notebook(notebook: Path, output: Path, parameters: dict, cwd: Path,
                     progress_bar: dict | bool = False) -> str | None:
    """Execute ``notebook`` with papermill into ``output``; return a one-line description of
    the failure (the cell, its first line, the exception), or None. Never pass secrets as
    ``parameters``: papermill writes them into the output notebook."""
    import papermill as pm

    os.environ["SPARTAN_HOME"] = str(paths.workspace_root())
    remove_orphaned_kernel_files()
    # papermill rewrites its output in place as cells run: never into a file linked from another run
    Path(output).unlink(missing_ok=True)
    try:
        pm.execute_notebook(
            str(notebook), str(output), parameters=parameters,
            kernel_name="python3", cwd=str(cwd), progress_bar=progress_bar, log_output=False,
            kernel_manager_class=f"{__name__}._IPCKernelManager", extra_arguments=[KERNEL_LOGGING],
        )
    except pm.PapermillExecutionError as err:
        first_line = next((line for line in err.source.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
        return f"cell {err.exec_count} (`{first_line.strip()}`) raised {err.ename}: {err.evalue}"
    except (DeadKernelError, CellTimeoutError, RuntimeError, TimeoutError) as err:  # kernel died or hung
        return f"the notebook could not be executed ({type(err).__name__}: {err})."
    return None


def to_html(executed: Path) -> str | None:
    """Convert an executed notebook to HTML beside it; return the file name."""
    if not executed.is_file():
        return None
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    atomic_write_bytes(target, body.encode())
    return target.name


def _ml_headline(report: dict | None) -> dict | None:
    """The signal model's out-of-sample rank IC (mean and t-statistic) for the manifest."""
    if not report:
        return None
    rank_ic = report["models"][report["signal_model"]]["rank_ic"]
    return {"model": report["signal_model"], "horizon_days": report["horizon_days"],
            "rank_ic": rank_ic["mean"], "rank_ic_t": rank_ic["t_stat"]}


def _llm_headline(report: dict | None) -> dict | None:
    """Who the analyst was (Claude or the offline stand-in), what it cost, what it abstained on."""
    if not report or "analyst" not in report:
        return None
    return {k: report[k] for k in ("analyst", "model", "sources", "views", "abstentions", "contaminated_views",
                                   "cost_usd", "usd_per_signal")}


def _gate_headline(report: dict | None) -> dict | None:
    """The gate's verdict and the statistics the dashboard shows."""
    if not report:
        return None
    stats = report["gate_stats"]
    return {"passed": report["verdict"]["passed"], "failed": report["verdict"]["failed"],
            "deflated_sharpe": stats["deflated_sharpe"], "pbo": stats["pbo"], "n_trials": stats["n_trials"]}


def _rebuild_index() -> None:
    from research_lib.reports import build_index

    build_index(paths.reports_dir())


def load_manifest(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / MANIFEST).read_text())


__all__ = ["RunConfig", "StageFailed", "discover_stages", "load_manifest", "remove_orphaned_kernel_files",
           "run_pipeline", "select_stages"]
