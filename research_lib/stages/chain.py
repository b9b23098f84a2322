"""The chain's stages as ``spartan run`` keys and reuses them: which run-folder files each stage
reads and makes, its key, what a run records of it, and what is never reused.

A stage's key holds the sha256 of the files it READS, taken from the run folder at key time
(after the stages before it ran or were reused): two runs whose upstream files differ never share
a key, whether or not the upstream stage wrote them itself. An earlier run's entry for a stage is
reusable only when it recorded every file the stage MAKES (`makes`), each checked by its hash.

Records beside artifacts (``prices.json``: when the prices were fetched) are not keyed: what a
later stage takes from them follows from the artifact's bytes and the parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from research_lib.config import RunConfig
from research_lib.stages.folder import ARTIFACTS, REPORT_OF, REPORTS, data_file_hash
from research_lib.stages.keys import (ALL_SECTIONS, code_digest, file_sha256, notebook_modules, params_digest,
                                      stage_context, stage_sections)
from research_lib.stages.reuse import NOT_OUTPUTS, Reusable, find_stage, never_reused

__all__ = ["EXTRA_READS", "find_reusable", "makes", "outputs", "reads", "stage_key"]

FOR_PEOPLE = (".ipynb", ".html")  # executed notebooks and their pages: never read by a later stage

# Reports a stage reads besides its artifacts' inputs (`folder.ARTIFACTS`): 05 names the analyst
# its weights were built on (`stages.portfolio`).
EXTRA_READS = {"05_build_portfolio": ("llm",)}


def reads(stage: str, config: RunConfig, run_dir: Path) -> list[str]:
    """The run-folder files ``stage`` reads: its artifacts' inputs and the reports it reads. A
    stage that reads every parameter (06, a notebook a user added to the chain) may read anything
    the stages before it left: every file in ``run_dir`` (but the run's own files, and the executed
    notebooks and their HTML, which are for people), whoever wrote it."""
    if stage_sections(stage, config) == ALL_SECTIONS:
        return sorted(entry.name for entry in os.scandir(run_dir) if entry.is_file() and not entry.name.startswith(".")
                      and entry.name not in NOT_OUTPUTS and not entry.name.endswith(FOR_PEOPLE))
    made_here = [spec for spec in ARTIFACTS.values() if spec.notebook == stage]
    names = sorted({i for spec in made_here for i in spec.inputs} | set(EXTRA_READS.get(stage, ())))
    return sorted(ARTIFACTS[n].file if n in ARTIFACTS else REPORTS[n] for n in names)


def makes(stage: str, config: RunConfig) -> list[str]:
    """The files every successful run of ``stage`` leaves: its executed notebook, its artifacts with
    their records, and their stage's report (a dry run of 04 leaves only its report)."""
    files = [f"{stage}.ipynb"]
    for name, spec in ARTIFACTS.items():
        if spec.notebook != stage:
            continue
        if name in REPORT_OF:
            files.append(REPORTS[REPORT_OF[name]])
        if not (name == "views" and config.llm.dry_run):
            files += [spec.file, Path(spec.file).with_suffix(".json").name]
    return sorted(files)


def stage_key(stage: str, notebook: Path, config: RunConfig, run_dir: Path, cwd: Path) -> tuple[str, dict]:
    """The key of ``stage``'s outputs, and the ``{file: sha256}`` of the run-folder files it read
    (None: missing). ``cwd``: the kernels' working folder (a relative ``data.path`` is read there)."""
    producers = [f"research_lib.stages.{spec.stage}" for spec in ARTIFACTS.values() if spec.notebook == stage]
    code = code_digest([*notebook_modules(notebook), *producers], [notebook])
    read = {name: file_sha256(run_dir / name) for name in reads(stage, config, run_dir)}
    payload = {"params": params_digest(config, stage_sections(stage, config), data_file_hash(config, cwd)),
               "context": stage_context(stage, config), "code": code, "reads": read}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16], read


def outputs(stage: str, config: RunConfig, run_dir: Path, written: list[str]) -> dict[str, str | None]:
    """``{file: sha256}`` of what a stage leaves: the files it makes (whether it wrote them now or
    found them fresh in the folder) and every other file it wrote."""
    names = {n for n in makes(stage, config) if (run_dir / n).is_file()} | set(written)
    return {name: file_sha256(run_dir / name) for name in sorted(names - NOT_OUTPUTS)}



def find_reusable(earlier: list[tuple[Path, dict]], stage: str, key: str,
                  config: RunConfig) -> tuple[Reusable | None, str | None]:
    """The newest of the ``earlier`` runs whose ``stage`` may be reused under ``key`` (complete and
    intact), or None and why not (None: nothing to say)."""
    never = never_reused(stage, config)
    return (None, never) if never else find_stage(earlier, stage, key, makes(stage, config))
