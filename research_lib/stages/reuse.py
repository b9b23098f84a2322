"""Reuse of earlier runs' outputs: by ``spartan run`` (whole stages, `research_lib.stages.chain`)
and by a notebook run alone (the artifacts a `RunFolder` asks for, `research_lib.stages.folder`).

An earlier run's outputs are reused only when their key matches (`research_lib.stages.keys`), the
entry holds every file its stage makes, every file still has the sha256 its run recorded (a
corrupted file is never reused) and the state outside the run folder the stage read is as its
run recorded it (`external_change`). Reused files are copied, never hard-linked: a plain in-place
write (``df.to_parquet(path)`` in a user's notebook of the chain, or in Lab) into one run's file
must never rewrite an earlier run's, nor a promoted run's. Copies cost disk (a run folder of the
daily scenario is tens of MB) and a fraction of a second per run.

``SPARTAN_REUSE=0`` in the environment turns reuse off (``spartan run`` then recomputes every
stage, as with ``--fresh``, which sets it for its notebooks' kernels).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from research_lib import paths
from research_lib._io import read_json
from research_lib.stages.keys import file_sha256

if TYPE_CHECKING:
    from research_lib.config import RunConfig

__all__ = ["REUSE_ENV", "Reusable", "enabled", "external_change", "external_state", "find_stage", "copy_files",
           "list_runs", "never_reused", "registry_digest", "state_before", "stat_folder", "verify", "why_not_reusable",
           "written_files"]

log = logging.getLogger(__name__)

REUSE_ENV = "SPARTAN_REUSE"
MANIFEST = "manifest.json"
NOT_OUTPUTS = {MANIFEST, "config.yaml", "run.log.jsonl"}  # the run's own files, written by the pipeline


def never_reused(stage: str, config: RunConfig) -> str | None:
    """Why ``stage`` reads what only running it can tell (None: it may be reused).

    Claude's answers are kept by the response cache (only valid ones), so a stage run again with
    the same prompts gets the same views: 04 with a live Claude analyst is reused like any stage.
    Headlines are fetched from the network when 04 runs: with them, 04 always runs (and what reads
    its views is reused only when they came out the same)."""
    if stage == "01_load_data" and config.data.refresh:
        return "data.refresh asks for fresh data"
    if stage == "04_ask_claude" and config.llm.headlines != "none":
        return f"llm.headlines: {config.llm.headlines} reads the news as it is now"
    return None


def enabled() -> bool:
    """Whether earlier runs may be reused (``SPARTAN_REUSE`` is not ``0``)."""
    return os.environ.get(REUSE_ENV, "1").strip() != "0"


# ---------------------------------------------------------------- keys and state of a stage


def registry_digest(excluding_run: str | None = None) -> str | None:
    """The state of the workspace's trial registry (what 06 reads and records), or None when empty;
    ``excluding_run``: without the trials that run recorded first (a trial already known keeps the
    run id that recorded it first)."""
    db = paths.state_db()
    if not db.is_file():
        return None
    from research_lib.validation.registry import list_trials

    trials = list_trials(db)
    if excluding_run is not None:
        trials = trials[trials["run_id"] != excluding_run]
    if trials.empty:
        return None
    rows = trials[["config_hash", "sharpe", "n_obs"]].sort_values("config_hash").to_json(orient="values")
    return hashlib.sha256(rows.encode()).hexdigest()[:16]


def state_before(stage: str, run_id: str) -> dict | None:
    """State outside the run folder ``stage`` reads, taken before it runs: 06 the trial registry
    (it records its own trials there, under ``run_id``, then reads them all)."""
    if stage == "06_validate_strategy":
        return {"registry_before": registry_digest(), "run_id": run_id}
    return None


def external_state(stage: str, run_dir: Path) -> dict | None:
    """State outside the run folder ``stage`` read, taken after it ran: 01 the snapshot its prices
    came from (``{"files": {path: sha256}}``)."""
    snapshot = (read_json(run_dir / "prices.json") or {}).get("snapshot") if stage == "01_load_data" else None
    return {"files": {snapshot: file_sha256(snapshot, cached=False)}} if snapshot else None


def external_change(entry: dict) -> str | None:
    """What changed outside the run folder since a stage's run recorded it, or None.

    The registry is right under concurrent runs: it must be now exactly what it was before that
    stage ran plus the trials that stage recorded (those bearing its run id); a trial another
    run recorded in between (which the stage may have counted) or since, recomputes it."""
    recorded = entry.get("external") or {}
    if "registry" in recorded:  # recorded after the stage ran, by an older version: its count may include others'
        return "the trial registry's state was recorded after 06 ran"
    if "registry_before" in recorded and recorded["registry_before"] != registry_digest(recorded.get("run_id")):
        return "the trial registry changed"
    for path, sha in (recorded.get("files") or {}).items():
        if file_sha256(path, cached=False) != sha:
            return f"{path} changed"
    return None


# ---------------------------------------------------------------- earlier runs


@dataclass(frozen=True)
class Reusable:
    """A stage's outputs in an earlier run, checked: every file has its recorded sha256."""

    run_id: str
    run_dir: Path
    entry: dict  # the stage's entry in that run's manifest


def list_runs(runs_dir: Path | None = None, exclude: Path | None = None) -> list[tuple[Path, dict]]:
    """Every run folder with a well-formed manifest, newest first (``exclude``: this run's own); a
    malformed one is skipped with a warning naming its file."""
    runs_dir = Path(runs_dir or paths.reports_dir() / "runs")
    found = []
    for run_dir in runs_dir.iterdir() if runs_dir.is_dir() else ():
        if exclude is not None and run_dir.resolve() == Path(exclude).resolve():
            continue
        try:
            manifest = read_json(run_dir / MANIFEST)
        except (OSError, ValueError):  # a manifest being written or broken: not a run to reuse
            continue
        problem = _malformed(manifest)
        if problem:
            log.warning("%s is skipped: %s", run_dir / MANIFEST, problem)
            continue
        if manifest is not None:
            found.append((run_dir, manifest))
    return sorted(found, key=lambda item: (item[1].get("created_at") or "", item[0].name), reverse=True)


def _malformed(manifest) -> str | None:
    """Why ``manifest`` cannot be read as a run's record (None: well formed, or no manifest)."""
    if manifest is None:
        return None
    if not isinstance(manifest, dict):
        return f"a manifest is a JSON object, not {type(manifest).__name__}"
    if not isinstance(manifest.get("created_at") or "", str):
        return f"created_at is {manifest['created_at']!r}, not a time"
    stages = manifest.get("stages")
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        return f"stages is {stages!r}, not a list of stage records"
    if not all(isinstance(s.get("outputs") or {}, dict) and isinstance(s.get("external") or {}, dict) for s in stages):
        return "a stage's outputs or external state is not an object"
    return None


def find_stage(runs: list[tuple[Path, dict]], stage: str, key: str,
               makes: Iterable[str] = ()) -> tuple[Reusable | None, str | None]:
    """The newest run whose ``stage`` has ``key``, succeeded, holds every file of ``makes`` and
    left its outputs intact (and the state outside the folder it read as it is now); else None and
    why the newest match was not taken (or None)."""
    why_not = None
    for run_dir, manifest in runs:
        for entry in manifest["stages"]:
            if entry.get("name") != stage or entry.get("key") != key or entry.get("status") not in ("succeeded", "reused"):
                continue
            problem = why_not_reusable(run_dir, entry, makes)
            if problem:
                why_not = why_not or problem
                continue
            return Reusable(run_dir.name, run_dir, entry), why_not
    return None, why_not


def why_not_reusable(run_dir: Path, entry: dict, makes: Iterable[str] = ()) -> str | None:
    """Why a stage's ``entry`` in run ``run_dir`` cannot be reused (None: it can): a file of
    ``makes`` it did not record, state outside the folder changed since, or a changed output."""
    outputs = entry.get("outputs") or {}
    missing = [name for name in makes if name not in outputs]
    if missing:
        return f"run {run_dir.name} did not record {', '.join(missing)}"
    changed = external_change(entry)
    if changed:
        return f"{changed} since run {run_dir.name}"
    broken = verify(run_dir, outputs)
    if broken:
        return f"{broken} of run {run_dir.name} does not match its recorded sha256"
    return None


def verify(run_dir: Path, outputs: dict[str, str]) -> str | None:
    """The first of ``outputs`` (``{file: sha256}``) in ``run_dir`` that is missing or changed, or None."""
    if not outputs:
        return "no recorded output"
    for name, sha in outputs.items():
        if file_sha256(run_dir / name, cached=False) != sha:
            return name
    return None


def copy_files(source: Path, names: Iterable[str], target: Path) -> None:
    """Copy each file ``names`` of ``source`` into ``target`` (the content only: a writable file of
    its own), replacing what is there atomically."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".copy")
        os.close(fd)
        try:
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, target / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def written_files(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """The files of a run folder that a stage wrote: new, or changed since ``before`` (`stat_folder`)."""
    return sorted(name for name, stamp in after.items() if before.get(name) != stamp and name not in NOT_OUTPUTS)


def stat_folder(run_dir: Path) -> dict[str, tuple]:
    """``{file: (inode, size, mtime)}`` for the visible files of ``run_dir``."""
    found = {}
    for entry in os.scandir(run_dir):
        if entry.is_file() and not entry.name.startswith("."):
            st = entry.stat()
            found[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found

