"""The promotion gate and the promoted record: thresholds from ``params/promotion.yaml``, a
verdict per criterion, ``spartan promote``, which freezes a passing run into
``params/promoted/<strategy>.yaml`` (`research_lib.paths.promoted_dir`), and the reading of
that record back (`load_promoted`, `promoted_names`, `promoted_strategy`).

Only a promoted strategy may be paper traded. A run that fails the gate is promoted only
with an explicit ``--override-reason``, which is recorded in the promoted file and shown on
the dashboard. What paper trading replays (``weights.parquet``, ``prices.parquet``) must be
the files promoted (same sha256), or `load_promoted` refuses the strategy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import yaml
from pydantic import Field, ValidationError

from research_lib import paths
from research_lib._io import atomic_write_bytes, load_yaml, now_utc, read_json
from research_lib.config import RunConfig
from research_lib.data import sha256_of
from research_lib.errors import ConfigError, SpartanError
from research_lib.params import StrictModel
from research_lib.units import format_drawdown

PROMOTION_FILE = "promotion.yaml"
PAPER_ARTIFACTS = ("weights.parquet", "prices.parquet")
VALIDATION_FILE = "validation.json"


class GateThresholds(StrictModel):
    """What a run must show to be promoted (annualized where it says so)."""

    min_sharpe: float = Field(1.5, description="annualized Sharpe ratio of the daily net returns")
    min_win_rate: float = Field(0.55, ge=0, le=1, description="share of sessions with a positive return")
    max_drawdown: float = Field(0.15, gt=0, le=1, description="largest peak-to-trough loss, a positive fraction")
    min_deflated_sharpe: float = Field(0.95, ge=0, le=1, description="DSR against every trial in the registry")
    max_pbo: float = Field(0.5, ge=0, le=1, description="probability of backtest overfitting (CSCV)")
    track_record_confidence: float = Field(0.95, gt=0.5, lt=1, description="confidence of the minimum track record "
                                           "length (against the best unskilled trial) the history must reach")
    cost_stress_multiple: float = Field(2.0, gt=1, description="still profitable (CAGR >= 0) at this multiple of costs")


def load_thresholds(path: str | Path | None = None) -> GateThresholds:
    """Read the gate's thresholds (default ``params/promotion.yaml``; missing keys take the defaults)."""
    path = Path(path) if path else paths.workspace_root() / "params" / PROMOTION_FILE
    if not path.is_file():
        return GateThresholds()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return GateThresholds.model_validate(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})"
                             for e in err.errors())
        raise ConfigError(f"{path} is not a valid promotion gate: {problems}; valid keys: "
                          f"{sorted(GateThresholds.model_fields)}") from None


@dataclass(frozen=True)
class Criterion:
    """One line of the verdict: ``value`` compared with ``threshold`` by ``rule``."""

    name: str
    value: float | None
    threshold: float
    rule: str  # ">=" or "<="
    passed: bool
    meaning: str


def _check(name: str, value: float | None, threshold: float, rule: str, meaning: str) -> Criterion:
    ok = value is not None and not (isinstance(value, float) and math.isnan(value))
    if ok:
        ok = value >= threshold if rule == ">=" else value <= threshold
    return Criterion(name, value, threshold, rule, bool(ok), meaning)


def evaluate_gate(stats: dict, thresholds: GateThresholds) -> list[Criterion]:
    """Every criterion of the gate for the statistics of a run's headline strategy.

    ``stats`` holds ``sharpe`` (annualized), ``win_rate``, ``max_drawdown`` (negative, as in
    metrics.json), ``deflated_sharpe``, ``pbo``, ``n_obs``, ``min_track_record`` (returns
    needed at the gate's confidence) and ``stress_cagr`` (CAGR at the stressed costs).
    A missing statistic fails its criterion.
    """
    t = thresholds
    drawdown = stats.get("max_drawdown")
    track = stats.get("min_track_record")
    return [
        _check("sharpe", stats.get("sharpe"), t.min_sharpe, ">=", "annualized Sharpe ratio, net of costs"),
        _check("win_rate", stats.get("win_rate"), t.min_win_rate, ">=", "share of sessions with a gain"),
        _check("max_drawdown", None if drawdown is None else abs(drawdown), t.max_drawdown, "<=",
               "largest peak-to-trough loss"),
        _check("deflated_sharpe", stats.get("deflated_sharpe"), t.min_deflated_sharpe, ">=",
               f"probability the Sharpe beats the best of {stats.get('n_trials', '?')} unskilled trials"),
        _check("pbo", stats.get("pbo"), t.max_pbo, "<=", "probability the in-sample best trial is below median "
               "out of sample"),
        _check("track_record", None if track is None else stats.get("n_obs", 0) - track, 0.0, ">=",
               f"sessions beyond the minimum track record length against the best unskilled trial "
               f"({track if track is None else round(track)})"),
        _check("cost_stress", stats.get("stress_cagr"), 0.0, ">=",
               f"CAGR with costs x{t.cost_stress_multiple:g}"),
    ]


def verdict(criteria: list[Criterion]) -> dict:
    """``{"passed": bool, "criteria": [...], "failed": [names]}`` for reports and the manifest."""
    return {"passed": all(c.passed for c in criteria), "criteria": [asdict(c) for c in criteria],
            "failed": [c.name for c in criteria if not c.passed]}


class PromotionRefused(SpartanError):
    """The run failed the gate and no override reason was given (the message lists each failure)."""


_PERCENT_CRITERIA = ("win_rate",)


def criterion_text(criterion: Criterion | dict) -> tuple[str, str]:
    """A criterion's value and requirement as every page and message shows them: a drawdown as a
    loss in percent (``-48.1%``, needs ``no deeper than -15.0%``), a win rate in percent, the rest
    as numbers."""
    c = criterion if isinstance(criterion, dict) else asdict(criterion)
    value, threshold = c["value"], c["threshold"]
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if c["name"] == "max_drawdown":
        return ("missing" if missing else format_drawdown(value)), f"no deeper than {format_drawdown(threshold)}"
    if c["name"] in _PERCENT_CRITERIA:
        return ("missing" if missing else f"{value:.1%}"), f"{c['rule']} {threshold:.1%}"
    return ("missing" if missing else f"{value:.4g}"), f"{c['rule']} {threshold:g}"


def describe_failures(criteria: list[Criterion]) -> str:
    lines = []
    for c in criteria:
        if not c.passed:
            value, needs = criterion_text(c)
            lines.append(f"- {c.name}: {value} (needs {needs}; {c.meaning})")
    return "\n".join(lines)


def promote(run_dir: str | Path, override_reason: str | None = None, thresholds: GateThresholds | None = None,
            promoted_dir: str | Path | None = None) -> Path:
    """Freeze a validated run into ``params/promoted/<strategy>.yaml``.

    The strategy is named after the run's scenario. The file holds the resolved parameters,
    the data and code hashes, the gate's metrics and verdict, the time, and any override.

    Raises
    ------
    PromotionRefused
        The run fails a criterion and ``override_reason`` is empty.
    ConfigError
        ``run_dir`` is not a finished run with a validation.
    """
    run_dir = Path(run_dir)
    manifest = read_json(run_dir / "manifest.json")
    validation = read_json(run_dir / VALIDATION_FILE)
    if manifest is None or validation is None:
        raise ConfigError(f"{run_dir} has no manifest.json and validation.json; pass a run folder made by "
                          "`spartan run` whose 06_validate_strategy stage finished (reports/runs/<run_id>)")
    if manifest.get("status") != "succeeded":
        raise ConfigError(f"run {run_dir.name} is {manifest.get('status')!r}, not succeeded; promote a finished run")
    # 06 reused from an earlier run (same key, so the same parameters) carries that run's id.
    made_in = {manifest.get("run_id")} | {s.get("computed_in") for s in manifest.get("stages", [])
                                          if s.get("name") == "06_validate_strategy" and s.get("computed_in")}
    if validation.get("run_id") not in made_in or \
            (validation.get("provenance") or {}).get("params") != manifest.get("config"):
        raise ConfigError(f"{run_dir / VALIDATION_FILE} was not written by run {manifest.get('run_id')} with its "
                          "parameters (was 06_validate_strategy re-run by hand in this folder?); re-run `spartan run`")
    thresholds = thresholds or load_thresholds()
    criteria = evaluate_gate(validation["gate_stats"], thresholds)
    result = verdict(criteria)
    if result["passed"] and not validation["verdict"]["passed"]:
        # Thresholds loosened since the run was validated: the verdict of record still stands.
        criteria.append(Criterion("verdict_at_validation", 0.0, 1.0, ">=", False,
                                  f"the run failed {validation['verdict']['failed']} under the thresholds of its "
                                  "validation; params/promotion.yaml was loosened since"))
        result = verdict(criteria)
    reason = (override_reason or "").strip()
    if not result["passed"] and not reason:
        raise PromotionRefused(f"Run {run_dir.name} fails the promotion gate:\n{describe_failures(criteria)}\n"
                               "Nothing was promoted. Improve the strategy, or promote anyway with "
                               "--override-reason TEXT (recorded in the promoted file and on the dashboard).")
    name = manifest["scenario"]
    record = {
        "strategy": name, "promoted_at": now_utc(), "run_id": manifest["run_id"], "run_dir": str(run_dir.resolve()),
        "code": manifest.get("code"), "data": manifest.get("data"),
        "gate": {"thresholds": thresholds.model_dump(), **result},
        "override_reason": reason if not result["passed"] else None,
        "metrics": validation["gate_stats"],
        "params": manifest["config"],
        # What paper trading replays; it refuses files changed since (`load_promoted`).
        "artifacts": {name: sha256_of(run_dir / name) for name in PAPER_ARTIFACTS if (run_dir / name).is_file()},
    }
    target = Path(promoted_dir) if promoted_dir else paths.promoted_dir()
    path = target / f"{name}.yaml"
    atomic_write_bytes(path, yaml.safe_dump(record, sort_keys=False, default_flow_style=False).encode())
    return path


def promoted_strategies(promoted_dir: str | Path | None = None) -> list[dict]:
    """Summaries of ``params/promoted/*.yaml`` for the dashboard (unreadable files are listed as such)."""
    folder = Path(promoted_dir) if promoted_dir else paths.promoted_dir()
    out = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            record = load_yaml(path.read_text()) or {}
            out.append({"strategy": record.get("strategy", path.stem), "run_id": record.get("run_id"),
                        "promoted_at": record.get("promoted_at"), "passed": (record.get("gate") or {}).get("passed"),
                        "override_reason": record.get("override_reason"), "file": path.name})
        except (OSError, yaml.YAMLError, AttributeError, TypeError):  # unreadable, or not a promoted record
            out.append({"strategy": path.stem, "run_id": None, "promoted_at": None, "passed": None,
                        "override_reason": None, "file": path.name, "unreadable": True})
    return out


# ---------------------------------------------------------------- reading the promoted record


class NotPromoted(ConfigError):
    """The strategy has no ``params/promoted/<strategy>.yaml``: it may not be paper traded."""


@dataclass(frozen=True)
class Promoted:
    """A promoted strategy with what paper trading needs from its run."""

    name: str
    file: Path
    record: dict
    config: RunConfig
    run_dir: Path
    weights: pd.DataFrame
    prices: pd.DataFrame

    @property
    def starting_cash(self) -> float:
        return self.config.paper.starting_cash or self.config.portfolio.capital


def promoted_names() -> list[str]:
    """The strategies that may be paper traded."""
    return sorted(p.stem for p in paths.promoted_dir().glob("*.yaml"))


def load_promoted(strategy: str | None = None) -> Promoted:
    """Read ``params/promoted/<strategy>.yaml`` and its run's weights and prices.

    ``strategy`` None picks the only promoted strategy. Raises `NotPromoted` for a strategy
    that is not promoted, `ConfigError` for a promoted file whose run is gone or changed.
    """
    strategy = promoted_strategy(strategy)
    file = paths.promoted_dir() / f"{strategy}.yaml"
    try:
        record = load_yaml(file.read_text()) or {}
        config = RunConfig.model_validate(record["params"])
    except (yaml.YAMLError, KeyError, ValidationError) as err:
        raise ConfigError(f"{file} is not a promoted strategy this version can read ({type(err).__name__}: {err}); "
                          "promote the run again with `spartan promote`.") from None
    run_dir = Path(record.get("run_dir") or "")
    if not run_dir.is_dir():
        run_dir = paths.reports_dir() / "runs" / str(record.get("run_id"))
    if config.backtest.execution_lag_sessions != 1:
        raise ConfigError(f"{file}: backtest.execution_lag_sessions is {config.backtest.execution_lag_sessions}, but "
                          "paper trading executes one session after each decision; validate and promote a run with "
                          "execution_lag_sessions: 1.")
    for name in PAPER_ARTIFACTS:
        _check_artifact(file, record, run_dir / name, strategy)
    weights = pd.read_parquet(run_dir / "weights.parquet")
    prices = pd.read_parquet(run_dir / "prices.parquet")
    return Promoted(strategy, file, record, config, run_dir, weights.sort_index(), prices.sort_index())


def _check_artifact(file: Path, record: dict, path: Path, strategy: str) -> None:
    """Refuse a promoted run whose ``path`` is missing or not the file promoted (sha256)."""
    if not path.is_file():
        raise ConfigError(f"{file} points at run {record.get('run_id')}, but {path} is missing; restore the run "
                          "folder, or run the research again and promote the new run.")
    promoted_hash = (record.get("artifacts") or {}).get(path.name)
    if not promoted_hash:
        raise ConfigError(f"{file} records no sha256 of {path.name} (promoted by an older version); promote the run "
                          f"again: spartan promote {path.parent}")
    if sha256_of(path) != promoted_hash:
        raise ConfigError(f"{path} changed since {strategy!r} was promoted (sha256 differs from {file}); paper "
                          "trading only replays what was validated. Promote the run again if the change is wanted.")


def promoted_strategy(strategy: str | None = None) -> str:
    """The name of ``strategy`` if it is promoted (None: the only promoted strategy), without
    reading its run; raises `NotPromoted` as `load_promoted` does."""
    available, folder = promoted_names(), paths.promoted_dir()
    how = ("Only a promoted strategy may be paper traded: `spartan run params/daily.yaml`, then `spartan promote "
           "reports/runs/<run_id>` (add --override-reason TEXT to promote a run that fails the gate).")
    if strategy is None:
        if len(available) != 1:
            raise NotPromoted(f"{'No strategy is' if not available else 'Several strategies are'} promoted in "
                              f"{folder} ({', '.join(available) or 'none'}); "
                              + ("name one with --strategy NAME." if available else how))
        return available[0]
    if not (folder / f"{strategy}.yaml").is_file():
        raise NotPromoted(f"Strategy {strategy!r} is not promoted ({folder} holds: "
                          f"{', '.join(available) or 'nothing'}). {how}")
    return strategy
