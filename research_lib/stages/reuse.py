"""Reuse of earlier runs' outputs: by ``spartan run`` (whole stages) and by a notebook run alone
(the artifacts a `RunFolder` asks for, `research_lib.stages.folder`).

An earlier run's outputs are reused only when their key matches (`research_lib.stages.keys`) and
every file still has the sha256 its run recorded (a corrupted file is never reused). Reused files
are hard links (a copy across file systems): every writer of the library replaces files
atomically (`research_lib._io.atomic_path`: a new inode), and the pipeline removes an executed
notebook before papermill writes it, so no write ever reaches another run's file.

``SPARTAN_REUSE=0`` in the environment turns reuse off (``spartan run --fresh`` sets it for its
notebooks' kernels).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from research_lib import paths
from research_lib._io import read_json
from research_lib.stages.keys import code_digest, file_sha256, notebook_modules, params_digest, stage_sections

if TYPE_CHECKING:
    from research_lib.config import RunConfig

__all__ = ["REUSE_ENV", "Reusable", "data_outputs", "enabled", "external_change", "external_state", "find_stage", "link_files",
           "list_runs", "registry_digest", "stage_key", "stat_folder", "verify", "written_files"]

REUSE_ENV = "SPARTAN_REUSE"
MANIFEST = "manifest.json"
NOT_OUTPUTS = {MANIFEST, "config.yaml", "run.log.jsonl"}  # the run's own files, written by the pipeline
NOT_DATA = (".ipynb", ".html")  # outputs a later stage never reads: not part of its key


def enabled() -> bool:
    """Whether earlier runs may be reused (``SPARTAN_REUSE`` is not ``0``)."""
    return os.environ.get(REUSE_ENV, "1").strip() != "0"


# ---------------------------------------------------------------- keys and state of a stage


def stage_key(stage: str, notebook: Path, config: RunConfig, upstream: dict[str, str | None],
              data_file_sha256: str | None = None, producers: Iterable[str] = ()) -> str:
    """The key of a chain stage's outputs: the parameters it reads, its notebook and the library
    code it runs (the modules the notebook imports and ``producers``, the stage modules of the
    artifacts it makes, which a `RunFolder` loads by name), and the sha256 of the upstream
    artifacts (``{file: sha256}``)."""
    code = code_digest([*notebook_modules(notebook), *producers], [notebook])
    payload = {"params": params_digest(config, stage_sections(stage, config), data_file_sha256),
               "code": code, "inputs": dict(sorted(upstream.items()))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def registry_digest() -> str | None:
    """The state of the workspace's trial registry (what 06 reads and records), or None when empty."""
    db = paths.state_db()
    if not db.is_file():
        return None
    from research_lib.validation.registry import list_trials

    trials = list_trials(db)
    if trials.empty:
        return None
    rows = trials[["config_hash", "sharpe", "n_obs"]].sort_values("config_hash").to_json(orient="values")
    return hashlib.sha256(rows.encode()).hexdigest()[:16]


def external_state(stage: str, run_dir: Path) -> dict | None:
    """State outside the run folder that ``stage`` read, as it left it: 06 the trial registry (it
    records its trials there), 01 the snapshot its prices came from (``{"files": {path: sha256}}``)."""
    if stage == "06_validate_strategy":
        return {"registry": registry_digest()}
    snapshot = (read_json(run_dir / "prices.json") or {}).get("snapshot") if stage == "01_load_data" else None
    return {"files": {snapshot: file_sha256(snapshot, cached=False)}} if snapshot else None


def external_change(entry: dict) -> str | None:
    """What changed outside the run folder since a stage's run recorded it (`external_state`), or None."""
    recorded = entry.get("external") or {}
    if "registry" in recorded and recorded["registry"] != registry_digest():
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
    """Every run folder with a readable manifest, newest first (``exclude``: this run's own)."""
    runs_dir = Path(runs_dir or paths.reports_dir() / "runs")
    found = []
    for run_dir in runs_dir.iterdir() if runs_dir.is_dir() else ():
        try:
            manifest = read_json(run_dir / MANIFEST)
        except (OSError, ValueError):  # a manifest being written or broken: not a run to reuse
            continue
        if manifest and (exclude is None or run_dir.resolve() != Path(exclude).resolve()):
            found.append((run_dir, manifest))
    return sorted(found, key=lambda item: (item[1].get("created_at") or "", item[0].name), reverse=True)


def find_stage(runs: list[tuple[Path, dict]], stage: str, key: str) -> tuple[Reusable | None, str | None]:
    """The newest run whose ``stage`` has ``key``, succeeded, and left its outputs intact (and the
    state outside the folder it read as it is now); else None and why the newest match was not
    taken (or None)."""
    why_not = None
    for run_dir, manifest in runs:
        for entry in manifest.get("stages", []):
            if entry.get("name") != stage or entry.get("key") != key or entry.get("status") not in ("succeeded", "reused"):
                continue
            changed = external_change(entry)
            if changed:
                why_not = why_not or f"{changed} since run {run_dir.name}"
                continue
            broken = verify(run_dir, entry.get("outputs") or {})
            if broken:
                why_not = why_not or f"{broken} of run {run_dir.name} does not match its recorded sha256"
                continue
            return Reusable(run_dir.name, run_dir, entry), why_not
    return None, why_not


def verify(run_dir: Path, outputs: dict[str, str]) -> str | None:
    """The first of ``outputs`` (``{file: sha256}``) in ``run_dir`` that is missing or changed, or None."""
    if not outputs:
        return "no recorded output"
    for name, sha in outputs.items():
        if file_sha256(run_dir / name, cached=False) != sha:
            return name
    return None


def link_files(source: Path, names: Iterable[str], target: Path) -> None:
    """Hard link (copy when linking fails) each file ``names`` of ``source`` into ``target``,
    replacing what is there atomically."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.", suffix=".link")
        os.close(fd)
        os.unlink(tmp)
        try:
            os.link(source / name, tmp)
        except OSError:  # another file system, or links not allowed: a copy
            shutil.copy2(source / name, tmp)
        os.replace(tmp, target / name)


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


def data_outputs(outputs: dict[str, str]) -> dict[str, str]:
    """The outputs a later stage may read (not executed notebooks, nor their HTML)."""
    return {name: sha for name, sha in outputs.items() if not name.endswith(NOT_DATA)}
