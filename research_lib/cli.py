"""``spartan``: the command line.

Exit codes: 0 success; 1 a run failed (data error, failing notebook); 2 bad arguments or
parameters (nothing was run).
"""

from __future__ import annotations

import argparse
import sys

from research_lib import paths
from research_lib.env import load_env_file
from research_lib.errors import ConfigError, SpartanError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spartan", description="Spartan quant research workspace.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="execute the research notebook chain for a parameter file")
    run.add_argument("params", help="parameter file, e.g. params/daily.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter, e.g. --set backtest.cost_bps=5 (repeatable)")
    run.add_argument("--stages", nargs="+", metavar="STAGE", help="run only these stages, e.g. 01_load_data or 01")
    run.add_argument("--run-dir", help="write the run here instead of reports/runs/<run_id>")

    commands.add_parser("index", help="rebuild reports/index.html from the runs on disk")

    promote = commands.add_parser("promote", help="freeze a run that passes the promotion gate into params/promoted/")
    promote.add_argument("run_dir", help="a finished run folder, e.g. reports/runs/<run_id>")
    promote.add_argument("--override-reason", metavar="TEXT",
                         help="promote even though the gate fails; the reason is recorded in the file and the index")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_env_file()
    if args.command == "index":
        from research_lib.reports import build_index

        print(build_index(paths.reports_dir()))
        return EXIT_OK
    if args.command == "promote":
        return _promote(args)
    return _run(args)


def _promote(args: argparse.Namespace) -> int:
    import yaml

    from research_lib.promotion import PromotionRefused, promote
    from research_lib.reports import build_index

    try:
        path = promote(args.run_dir, args.override_reason)
    except ConfigError as err:
        print(f"spartan: {err}", file=sys.stderr)
        return EXIT_USAGE
    except PromotionRefused as err:
        print(f"spartan: {err}", file=sys.stderr)
        return EXIT_FAILED
    overridden = bool(yaml.safe_load(path.read_text()).get("override_reason"))
    print(f"Promoted{' (gate overridden, reason recorded)' if overridden else ''}: {path}")
    build_index(paths.reports_dir())
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from research_lib.pipeline import load_manifest, run_pipeline

    try:
        run_dir = run_pipeline(args.params, args.overrides, args.stages, args.run_dir)
    except ConfigError as err:
        print(f"spartan: {err}", file=sys.stderr)
        return EXIT_USAGE
    except SpartanError as err:
        print(f"spartan: run failed. {err}", file=sys.stderr)
        return EXIT_FAILED
    manifest = load_manifest(run_dir)
    metrics = (manifest.get("metrics") or {}).get("strategy")
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
