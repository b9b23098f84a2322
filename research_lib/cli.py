"""``spartan``: the command line.

Exit codes: 0 success; 1 a run failed or was refused (data error, failing notebook, a gate
or a trading refusal, another trade of the strategy running, a broker error); 2 bad arguments
or parameters (nothing was run); 128 + the signal for a command stopped by Ctrl-C (SIGINT,
130), SIGTERM (143) or SIGHUP (129), after its clean-up (its notebook kernel killed with it,
its files removed; a second stop signal meanwhile does not cut the clean-up short); 141 when
the reader of its output went away (``spartan status | head -3``), quietly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from research_lib import logs, paths
from research_lib.env import load_env_file
from research_lib.errors import ConfigError, SpartanError

if TYPE_CHECKING:
    from research_lib.stages.paper import SessionPlan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_PIPE_CLOSED = 128 + 13  # SIGPIPE's number: what a shell reports for a writer whose reader went away
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, a supervisor stopping, a terminal closing


class Stopped(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP, raised where the command is as Ctrl-C raises KeyboardInterrupt,
    so that the same clean-up runs (a run is marked interrupted, a notebook kernel is killed at
    once)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spartan", description="Spartan quant research workspace.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute the research notebook chain for a parameter file")
    run.add_argument("params", help="parameter file, e.g. params/daily.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter, e.g. --set backtest.cost_bps=5 (repeatable)")
    run.add_argument("--stages", nargs="+", metavar="STAGE", help="run only these stages, e.g. 01_load_data or 01")
    run.add_argument("--run-dir", help="write the run here instead of reports/runs/<run_id>")
    run.add_argument("--fresh", action="store_true", help="execute every stage, as SPARTAN_REUSE=0 does (by default "
                     "a stage whose parameters, code, inputs and outside state match an earlier run's complete, "
                     "intact outputs is reused from it)")

    commands.add_parser("index", help="rebuild reports/index.html from the runs on disk")

    promote = commands.add_parser("promote", help="freeze a run that passes the promotion gate into params/promoted/")
    promote.add_argument("run_dir", help="a finished run folder, e.g. reports/runs/<run_id>")
    promote.add_argument("--override-reason", metavar="TEXT",
                         help="promote even though the gate fails; the reason is recorded in the file and the index")

    trade = commands.add_parser("trade", help="paper trade one session of a promoted strategy (notebook 07)")
    trade.add_argument("--strategy", help="a strategy in params/promoted/ (default: the only one)")
    trade.add_argument("--broker", choices=["sim", "alpaca"], help="default: the promoted parameters' paper.broker")
    trade.add_argument("--asof", metavar="YYYY-MM-DD", help="session to trade (sim: default the next session; "
                       "alpaca: today only)")
    trade.add_argument("--dry-run", action="store_true", help="reconcile and report what would be sent; send nothing")

    schedule = commands.add_parser("schedule", help="run research and paper trading on the exchange calendar "
                                   "(long-lived; SIGTERM stops it)")
    schedule.add_argument("schedule", nargs="?", default="params/schedule.yaml", help="schedule file")
    schedule.add_argument("--print-crontab", action="store_true", help="print the equivalent crontab and exit")
    schedule.add_argument("--run-due", metavar="JOB", help="run JOB now if the calendar says it is due (for cron)")
    schedule.add_argument("--fake-clock", metavar="ISO_START", help="an accelerated clock starting at this time "
                          "(a demonstration or test: every wait is skipped)")
    schedule.add_argument("--sessions", type=int, help="stop after this many sessions")

    serve = commands.add_parser("serve", help="serve reports/ at http://127.0.0.1:8000 (this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1", help="a loopback address: 127.0.0.1, ::1 or localhost")

    status = commands.add_parser("status", help="positions, cash, P&L, open orders and kill switch of paper trading")
    status.add_argument("--strategy", help="one promoted strategy (default: all)")
    for name, verb in (("halt", "stop all new orders (HALTED: only cancels; open simulated orders are cancelled)"),
                       ("resume", "lift a halt or a reduce-only state (back to ACTIVE)")):
        command = commands.add_parser(name, help=verb)
        command.add_argument("--strategy", help="one promoted strategy (default: every strategy)")
        command.add_argument("--reason", default=f"{name} by the user", help="recorded in the ledger")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spartan-research")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
        return "unknown (not installed: pip install -e .)"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (missing := paths.no_workspace_reason()) is not None:  # before anything could create data/ or reports/
        print(f"spartan: {missing}.", file=sys.stderr)
        return EXIT_USAGE
    load_env_file()
    logs.configure()  # JSON lines in reports/logs/spartan.jsonl; runs and sessions add their own file
    handlers = {"promote": _promote, "trade": _trade, "status": _status, "halt": _halt, "resume": _resume,
                "serve": _serve, "schedule": _schedule, "index": _index}
    try:
        with _stop_signals_interrupt():
            code = handlers.get(args.command, _run)(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit, where it could only be printed
            return code
    except KeyboardInterrupt as stop:
        number = getattr(stop, "signum", signal.SIGINT)
        print(f"spartan: stopped by {signal.Signals(number).name}; its notebook kernel, if any, was killed with it. "
              "Run the command again to finish (a trading session run again sends no order twice).", file=sys.stderr)
        return 128 + number
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE_CLOSED


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Within the block, the first of Ctrl-C, SIGTERM and SIGHUP raises `Stopped` (unless the
    signal is ignored, as under ``nohup``, or handled by someone else); later ones are let go,
    until the process ends, so that a second Ctrl-C cannot cut the clean-up short (a kernel left
    running, its files left in the temp folder) nor change the exit code. Unless stopped, the
    previous handlers are restored after the block. Main thread only: signal handlers can be set
    nowhere else."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def stop(signum: int, frame) -> None:
        if stopping:  # already stopping: the clean-up runs to its end
            return
        stopping.append(signum)
        for number in ours:  # ignored from now on, to the very end: Python's shutdown puts its handlers
            signal.signal(number, signal.SIG_IGN)  # back to the default, which would kill us with the next
        raise Stopped(signum)

    defaults = {signal.SIGINT: signal.default_int_handler}
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    ours = [number for number, handler in previous.items() if handler is defaults.get(number, signal.SIG_DFL)]
    for number in ours:
        signal.signal(number, stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            if not stopping:
                signal.signal(number, handler)


def _discard_stdout() -> None:
    """Point stdout at the null device: the reader is gone, and Python's final flush of what is
    still buffered must not raise again."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, sys.stdout.fileno())
    finally:
        os.close(null)


def _index(args: argparse.Namespace) -> int:
    from research_lib.reports import build_index

    print(build_index(paths.reports_dir()))
    return EXIT_OK


def _refusal(err: Exception) -> int:
    """Print a refusal or failure the user can act on; return its exit code."""
    if isinstance(err, ConfigError):
        print(f"spartan: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"spartan: {err}", file=sys.stderr)
    return EXIT_FAILED


def _trade(args: argparse.Namespace) -> int:
    from research_lib.broker import BrokerError
    from research_lib.stages.paper import plan_session
    from research_lib.trading import parse_asof, trade_lock
    from research_lib.validation.promotion import promoted_strategy

    with ExitStack() as held:
        try:  # every argument is checked before the report folder is made or a notebook starts
            parse_asof(args.asof)  # a malformed date is a bad argument even while another trade runs
            # One trade of a strategy at a time, from the choice of its session to its report (a dry
            # run sends and moves nothing: it neither waits for nor blocks a trade).
            if not args.dry_run:
                held.enter_context(trade_lock(promoted_strategy(args.strategy)))
            plan = plan_session(args.strategy, args.broker, args.asof, args.dry_run)
        except (SpartanError, BrokerError) as err:
            return _refusal(err)
        return _trade_planned(plan)


def _trade_planned(plan: SessionPlan) -> int:
    """Run notebook 07 for ``plan``'s session, or show the session's report if it was traded."""
    from research_lib._io import read_json
    from research_lib.pipeline import PAPER_NOTEBOOK, execute_notebook, to_html
    from research_lib.reports import build_index
    from research_lib.reports.paper import CYCLE_FILE, SUMMARY_FILE
    from research_lib.trading import describe_session, legacy_cost_note, session_report_dir

    name, session, broker = plan.promoted.name, plan.session, plan.broker
    for report in plan.recovered:
        print(f"spartan: wrote the missing report of {name} {report['session']} from the ledger (its command was "
              f"stopped before writing it): {report['status']}, {len(report['cycle']['sent'])} order(s) sent")
    if plan.report is not None:
        folder = plan.report_dir
        print(f"spartan trade {name} {session} on {broker}: already traded; nothing was run or sent, its report "
              f"stands -> {folder}")
        print(describe_session(plan.report))
        print(f"  {'summary':15s} {folder / SUMMARY_FILE}")
        return EXIT_OK
    if broker == "sim" and (note := legacy_cost_note(plan.promoted)):
        print(f"spartan: {note}", file=sys.stderr)
    folder = session_report_dir(name, session, plan.dry_run)
    notebook = paths.notebooks_dir() / PAPER_NOTEBOOK
    executed, if_failed = _attempt_paths(folder, notebook.name)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"spartan trade {name} {session} on {broker}{' (dry run)' if plan.dry_run else ''} -> {folder}")
    with logs.run_logging(folder, f"paper-{name}-{session:%Y%m%d}"), logs.stage(notebook.stem):
        error = execute_notebook(notebook, executed, {
            "strategy": name, "broker": broker, "asof": f"{session:%Y-%m-%d}", "dry_run": plan.dry_run,
            "report_dir": str(folder)}, paths.notebooks_dir())
        kept = if_failed if error else folder / notebook.name
        if executed != kept and executed.is_file():
            executed.replace(kept)
        if error:
            from research_lib.alerts import alert

            alert("run_failed", f"paper trading {name} {session} failed: {error}",
                  key=f"paper-{name}", strategy=name, session=f"{session:%Y-%m-%d}", notebook=str(kept))
    to_html(kept)
    build_index(paths.reports_dir())
    if error:
        print(f"spartan: the paper-trading cycle failed: {error}\n  executed notebook: {kept}", file=sys.stderr)
        return EXIT_FAILED
    print(describe_session(read_json(folder / CYCLE_FILE)))
    print(f"  {'summary':15s} {folder / SUMMARY_FILE}")
    return EXIT_OK


def _attempt_paths(folder: Path, name: str) -> tuple[Path, Path]:
    """Where this attempt's executed notebook is written, and where it is kept if the attempt fails.

    A session folder that holds the report of an earlier run keeps that run's notebook until this
    attempt succeeds: the attempt runs as ``<stem>.running.ipynb``, replaces ``name`` if it succeeds
    and is kept as ``<stem>.failed.ipynb`` if not. In a folder without a report it runs as ``name``.
    """
    from research_lib.reports.paper import CYCLE_FILE

    stem = Path(name).stem
    if not (folder / CYCLE_FILE).is_file():
        return folder / name, folder / name
    return folder / f"{stem}.running.ipynb", folder / f"{stem}.failed.ipynb"


def _status(args: argparse.Namespace) -> int:
    from research_lib.trading import describe_status, status

    try:
        print(describe_status(status(args.strategy)))
    except SpartanError as err:
        return _refusal(err)
    return EXIT_OK


def _halt(args: argparse.Namespace) -> int:
    from research_lib.trading import halt

    try:
        cancelled = halt(args.strategy, args.reason)
    except SpartanError as err:
        return _refusal(err)
    print(f"HALTED {args.strategy or 'every strategy'}: no new orders until `spartan resume"
          f"{' --strategy ' + args.strategy if args.strategy else ''}`. Cancelled {len(cancelled)} open simulated "
          "order(s); Alpaca's open orders are cancelled at the next cycle.")
    return EXIT_OK


def _resume(args: argparse.Namespace) -> int:
    from research_lib.trading import resume

    try:
        states = resume(args.strategy, args.reason)
    except SpartanError as err:
        return _refusal(err)
    held = {name: (state, why) for name, (state, why) in states.items() if state.value != "active"}
    for name in states:
        if name not in held:
            print(f"ACTIVE {name}: trading resumes at the next cycle.")
    for name, (state, why) in held.items():
        print(f"spartan: {name} is still {state.value.upper()}: {why}", file=sys.stderr)
    return EXIT_FAILED if held else EXIT_OK


def _schedule(args: argparse.Namespace) -> int:
    import datetime as dt
    import shutil
    from zoneinfo import ZoneInfo

    from research_lib import scheduler

    try:
        config = scheduler.load_schedule(args.schedule)
        if args.print_crontab:
            print(scheduler.crontab(config, shutil.which("spartan") or str(Path(sys.argv[0]).resolve())))
            return EXIT_OK
        if args.run_due:
            _echo_log_lines("spartan.scheduler")
            return scheduler.run_due(config, args.run_due)
        clock = None
        if args.fake_clock:
            start = dt.datetime.fromisoformat(args.fake_clock)
            clock = scheduler.FakeClock(start if start.tzinfo else start.replace(tzinfo=ZoneInfo(config.timezone)))
    except (SpartanError, ValueError) as err:
        return _refusal(err if isinstance(err, SpartanError) else ConfigError(f"--fake-clock: {err}"))
    _echo_log_lines("spartan.scheduler")
    try:
        return scheduler.run_scheduler(config, clock=clock, stop_after_sessions=args.sessions)
    except SpartanError as err:  # another scheduler holds the workspace, an unreadable job store
        return _refusal(err)


def _echo_log_lines(logger: str) -> None:
    """Show a long-running command's log lines on stderr too (secrets redacted)."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(logs.RedactSecrets())
    logging.getLogger(logger).addHandler(handler)


def _serve(args: argparse.Namespace) -> int:
    from research_lib.reports import build_index
    from research_lib.reports.serve import serve

    build_index(paths.reports_dir())
    try:
        serve(paths.reports_dir(), args.host, args.port)
    except ConfigError as err:
        return _refusal(err)
    return EXIT_OK


def _promote(args: argparse.Namespace) -> int:
    from research_lib._io import load_yaml
    from research_lib.validation.promotion import PromotionRefused, promote
    from research_lib.reports import build_index

    try:
        path = promote(args.run_dir, args.override_reason)
    except (ConfigError, PromotionRefused) as err:
        return _refusal(err)
    overridden = bool(load_yaml(path.read_text()).get("override_reason"))
    print(f"Promoted{' (gate overridden, reason recorded)' if overridden else ''}: {path}")
    build_index(paths.reports_dir())
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from research_lib.pipeline import load_manifest, run_pipeline

    try:
        run_dir = run_pipeline(args.params, args.overrides, args.stages, args.run_dir, fresh=args.fresh)
    except ConfigError as err:
        return _refusal(err)
    except SpartanError as err:
        print(f"spartan: run failed. {err}", file=sys.stderr)
        return EXIT_FAILED
    manifest = load_manifest(run_dir)
    metrics = (manifest.get("metrics") or {}).get("strategy")
    data = manifest.get("data") or {}
    if data.get("source") == "synthetic":
        from research_lib.data import SyntheticConfig, market_label
        print(market_label("synthetic", SyntheticConfig(**data.get("synthetic", {}))) + ".")
    if metrics:
        print(f"Run succeeded: CAGR {metrics['cagr']:.1%}, Sharpe {metrics['sharpe']:.2f}, "
              f"max drawdown {metrics['max_drawdown']:.1%} ({metrics['start']} to {metrics['end']}, net of costs).")
    else:
        print("Run succeeded.")
    gate = manifest.get("validation")
    if gate:
        print(f"Promotion gate: {'passed' if gate['passed'] else 'failed on ' + ', '.join(gate['failed'])}"
              f" (details: validation.html; spartan promote {run_dir})")
    for name in ("tearsheet.html", "validation.html", "metrics.json", "manifest.json"):
        if (run_dir / name).is_file():
            print(f"  {name:15s} {run_dir / name}")
    print(f"  {'dashboard':15s} {paths.reports_dir() / 'index.html'}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
