"""A run's folder: its artifacts, read when fresh, otherwise taken from an earlier run or made by
the stage that owns them.

Each artifact ``X.parquet`` has ``X.json`` beside it recording ``config_key`` (a hash of the
parameters its stage reads and of its producer's code, `research_lib.stages.keys`; with the
whole ``data`` section, of the user's price file too) and the sha256 of the upstream artifacts
it read. An artifact is fresh when that record matches and its upstream artifacts are fresh.
Asking a `RunFolder` for an artifact reads it when fresh; otherwise it copies the artifacts of the
latest complete (succeeded) run that has them fresh under the same keys, as that run recorded
them (hash-checked, the snapshot its prices came from unchanged; `research_lib.stages.reuse`,
saying which run and why newer ones were skipped), and failing that the producer a stage
registered for it (`produces`) makes it and saves it. Copies, not links: a folder opened alone
(``reports/lab``) is the user's sandbox, where an in-place write must not reach a run's history. The record is removed before a new file is written and written last (both
atomically), so a half-written artifact is never taken for a fresh one.
"""

from __future__ import annotations

import hashlib
import json
from importlib import import_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from research_lib import compute
from research_lib._io import read_json, write_json, write_parquet
from research_lib.config import RunConfig, load_config
from research_lib.env import load_env_file
from research_lib.errors import ConfigError
from research_lib.params import did_you_mean
from research_lib.stages import reuse
from research_lib.stages.keys import code_digest, data_file, file_sha256, params_digest, stage_context, stage_sections

Producer = Callable[["RunFolder"], pd.DataFrame]
Reader = Callable[[Path, RunConfig], pd.DataFrame]


@dataclass(frozen=True)
class Artifact:
    """One artifact of a run: its file, the notebook stage that makes it, the upstream artifacts it reads."""

    file: str
    notebook: str  # the chain's stage that makes it: its parameters (`keys.STAGE_READS`) key the artifact
    stage: str  # the stage module that makes it (imported when the artifact must be made or has its own reader)
    inputs: tuple[str, ...] = ()  # upstream artifacts it reads: their hashes, and their freshness, key it too
    own_reader: bool = False  # read by its stage's reader (`produces(read=...)`), not as plain parquet


ARTIFACTS = {
    "prices": Artifact("prices.parquet", "01_load_data", "prices", own_reader=True),
    "features": Artifact("features.parquet", "02_build_features", "features", inputs=("prices",)),
    "signals": Artifact("signals_ml.parquet", "03_fit_ml_signals", "ml", inputs=("prices", "features")),
    # the views' report compares them with the ML signals when those are there
    "views": Artifact("signals_llm.parquet", "04_ask_claude", "llm", inputs=("prices", "features", "signals")),
    "weights": Artifact("weights.parquet", "05_build_portfolio", "portfolio", inputs=("prices", "signals", "views")),
}
REPORTS = {"ml": "ml_report.json", "llm": "llm_report.json", "portfolio": "portfolio_report.json"}
REPORT_OF = {"signals": "ml", "views": "llm", "weights": "portfolio"}  # the stage report made with an artifact

_PRODUCERS: dict[str, Producer] = {}
_READERS: dict[str, Reader] = {}


def produces(name: str, read: Reader | None = None) -> Callable[[Producer], Producer]:
    """Register the stage function that makes (and saves) artifact ``name``; ``read`` reads a fresh one."""
    if name not in ARTIFACTS:
        raise ValueError(f"unknown artifact {name!r}; known: {sorted(ARTIFACTS)}")

    def register(producer: Producer) -> Producer:
        _PRODUCERS.setdefault(name, producer)  # the first wins: a stage loading later keeps a producer set before it
        if read is not None:
            _READERS.setdefault(name, read)
        return producer

    return register


def config_key(config: RunConfig, sections: tuple[str, ...], data_file_sha256: str | None = None,
               code: str | None = None, context: dict | None = None) -> str:
    """A short hash of the named parameter sections (``section`` or ``section.key``) and of the
    ``code`` digest; with the whole ``data`` section, of the user's price file too (``data.source:
    file``), so that every artifact made from it is made again once it is edited; ``context``: the
    stage's `keys.stage_context`. ``data_file_sha256``: that file's hash when the caller took it already (`data_file_hash`)."""
    named = params_digest(config, sections, data_file_sha256 or data_file_hash(config))
    payload = json.dumps({"params": named, "code": code, **({"context": context} if context else {})}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def artifact_key(config: RunConfig, name: str, data_file_sha256: str | None = None) -> str:
    """The key of artifact ``name`` under ``config``: its stage's parameters and context, and its
    producer's code."""
    spec = ARTIFACTS[name]
    return config_key(config, stage_sections(spec.notebook, config), data_file_sha256,
                      code_digest([f"research_lib.stages.{spec.stage}"]), stage_context(spec.notebook, config))


def data_file_hash(config: RunConfig, cwd: str | Path | None = None) -> str | None:
    """The sha256 of the user's price file (``data.source: file``; a relative path from ``cwd``,
    by default this process's working folder, as the data loader opens it); None when there is
    none or it cannot be read (then nothing made from it is fresh, and the load says why)."""
    path = data_file(config, cwd)
    return file_sha256(path) if path is not None else None


class RunFolder:
    """The artifacts of one run folder under one set of parameters.

    ``folder.prices``, ``.features``, ``.signals``, ``.views`` and ``.weights`` are read when
    fresh and made otherwise; ``folder.report("llm")`` reads a stage's JSON report once.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path):
        if not isinstance(config, RunConfig):
            raise ConfigError(f"a run folder needs validated parameters (a RunConfig), not {type(config).__name__}; "
                              "open it with RunFolder.open(config_path, run_dir)")
        if not isinstance(run_dir, (str, Path)) or (Path(run_dir).exists() and not Path(run_dir).is_dir()):
            raise ConfigError(f"run_dir {run_dir!r} is not a folder; pass the path of a run folder "
                              "(it is created if missing), e.g. reports/lab")
        self.config = config
        self.run_dir = Path(run_dir)
        # The keys are taken once, with the user's price file as it is now: what this folder reads
        # afterwards is at least as new, so nothing older is ever saved under a newer file's key.
        file_hash = data_file_hash(config)
        self._keys = {name: artifact_key(config, name, file_hash) for name in ARTIFACTS}
        self._frames: dict[str, pd.DataFrame] = {}
        self._reports: dict[str, dict | None] = {}
        self._memo: dict[str, Any] = {}
        self._told: set[str] = set()  # artifacts this folder said it must compute

    @classmethod
    def open(cls, config_path: str | Path, run_dir: str | Path) -> RunFolder:
        """Load the run's parameters (and keys from ``.env``), choose their compute backend for this
        process (a notebook opened alone honours ``compute`` too) and make sure the folder exists."""
        load_env_file()
        folder = cls(load_config(config_path), run_dir)
        compute.configure(folder.config.compute)
        if label := folder.config.data.market_label():
            print(label)  # at the top of every notebook of a synthetic run
        folder.run_dir.mkdir(parents=True, exist_ok=True)
        return folder

    # ---------------------------------------------------------------- artifacts

    prices = property(lambda self: self.get("prices"), doc="validated prices (field x symbol columns)")
    features = property(lambda self: self.get("features"), doc="the (date, symbol) feature panel")
    signals = property(lambda self: self.get("signals"), doc="out-of-sample ML scores, dates x symbols")
    views = property(lambda self: self.get("views"), doc="the analyst's views, one row per date and symbol")
    weights = property(lambda self: self.get("weights"), doc="the configured strategy's target weights")

    def get(self, name: str) -> pd.DataFrame:
        """Artifact ``name``: read if fresh, else made by its stage (which saves it)."""
        _check_name(name, ARTIFACTS, "artifact")
        if name not in self._frames:
            fresh = self.is_fresh(name) or self._link_from_latest_run(name)
            if not fresh or ARTIFACTS[name].own_reader:
                _load_stage(name)
            if fresh:
                self._frames[name] = _READERS.get(name, _read_parquet)(self.path(name), self.config)
            else:
                self._frames[name] = _PRODUCERS[name](self)
        return self._frames[name]

    def path(self, name: str) -> Path:
        """The file of artifact (or report) ``name``, or of any other file name in the folder."""
        file = ARTIFACTS[name].file if name in ARTIFACTS else REPORTS.get(name, name)
        return self.run_dir / file

    def key(self, name: str) -> str:
        """The freshness key artifact ``name`` has under this folder's parameters and the user's
        price file as it was when the folder was made (a folder made after an edit of the file
        finds what was made before it stale)."""
        _check_name(name, ARTIFACTS, "artifact")
        return self._keys[name]

    def input_hashes(self, name: str) -> dict[str, str | None]:
        paths = [self.path(i) for i in ARTIFACTS[name].inputs]
        return {p.name: file_sha256(p) for p in paths}

    def is_fresh(self, name: str) -> bool:
        """Whether artifact ``name`` is complete, was made with these parameters, this code and
        these inputs, and its inputs are fresh too (an input's stage may read other parameters)."""
        path = self.path(name)
        record = read_json(path.with_suffix(".json"))
        if not (path.is_file() and record is not None and record.get("config_key") == self.key(name)
                and record.get("inputs", {}) == self.input_hashes(name)):
            return False
        return all(self.is_fresh(i) for i in ARTIFACTS[name].inputs if self.path(i).is_file())

    def save(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Write artifact ``name`` and then its record; what was read from the folder is forgotten."""
        _check_name(name, ARTIFACTS, "artifact")
        path = self.path(name)
        path.with_suffix(".json").unlink(missing_ok=True)  # never a new frame beside an old record
        write_parquet(frame, path)
        write_json(path.with_suffix(".json"), {"config_key": self.key(name), "rows": len(frame),
                                               "inputs": self.input_hashes(name)})
        self.forget()
        self._frames[name] = frame
        return frame

    def forget(self) -> None:
        """Forget what was read from the folder (its files were replaced)."""
        self._frames.clear()
        self._reports.clear()
        self._memo.clear()

    def provenance(self, name: str) -> dict:
        """Where artifact ``name`` came from: its stored key and inputs, the sections it reads, and
        whether it is fresh under this folder's parameters."""
        _check_name(name, ARTIFACTS, "artifact")
        spec, record = ARTIFACTS[name], read_json(self.path(name).with_suffix(".json")) or {}
        return {"artifact": name, "file": spec.file, "config_key": record.get("config_key"),
                "sections": list(stage_sections(spec.notebook, self.config)), "upstream": list(spec.inputs),
                "inputs": record.get("inputs", {}), "fresh": self.is_fresh(name)}

    def _link_from_latest_run(self, name: str) -> bool:
        """Make artifact ``name`` fresh here from the newest complete run that has it fresh under the
        same keys, as that run recorded it: copy it with its upstream artifacts, their records and
        stage reports, and every other artifact fresh there and stale here; say which run, and why
        each newer run that had it was skipped. When no run has it, say what must be computed."""
        never = [n for n in _with_inputs(name) if not self.is_fresh(n) and reuse.never_reused(ARTIFACTS[n].notebook, self.config)]
        if not reuse.enabled() or never:
            return False  # e.g. data.refresh asks for prices fetched now, and for what is made from them
        skipped = []
        for run_dir, manifest in reuse.list_runs(exclude=self.run_dir):
            other = RunFolder(self.config, run_dir)
            if not other.is_fresh(name):
                continue  # other parameters or code: not a candidate
            wanted = [n for n in ARTIFACTS if not self.is_fresh(n) and other.is_fresh(n)]
            why_not = self._why_not_from(run_dir, manifest, other, wanted)
            if why_not:
                skipped.append(f"skipped run {run_dir.name}: {why_not}")
                continue
            reuse.copy_files(run_dir, [f for n in wanted for f in other._files_of(n)], self.run_dir)
            self.forget()
            print("\n".join([*skipped, f"{', '.join(wanted)}: reused from run {run_dir.name}"]), flush=True)
            return True
        missing = [n for n in ARTIFACTS if n == name or (n in _with_inputs(name) and not self.is_fresh(n))]
        if name not in self._told:  # once: computing an artifact asks for its missing inputs again
            self._told.update(missing)
            print("\n".join([*skipped, f"{name}: no earlier run has it for these parameters and code; computing "
                                       f"{', '.join(missing)}"]), flush=True)
        return False

    def _why_not_from(self, run_dir: Path, manifest: dict, other: RunFolder, wanted: list[str]) -> str | None:
        """Why the ``wanted`` artifacts of run ``run_dir`` cannot be taken (None: they can)."""
        if manifest.get("status") != "succeeded":
            return f"it did not complete ({manifest.get('status')})"
        kept = sorted(set().union(*map(_with_inputs, wanted)) - set(wanted))  # fresh here: read as they are
        differ = [n for n in kept if file_sha256(self.path(n)) != file_sha256(other.path(n))]
        if differ:  # its artifacts were made from other inputs than this folder's
            return f"its {', '.join(differ)} differ from this folder's"
        files = [f for n in wanted for f in other._files_of(n)]
        entries = [e for e in manifest["stages"] if set(e.get("outputs") or {}) & set(files)]
        recorded = {f: sha for e in entries for f, sha in (e.get("outputs") or {}).items()}
        unrecorded = [f for f in files if f not in recorded]
        if unrecorded:
            return f"it did not record {', '.join(unrecorded)}"
        changed = next(filter(None, map(reuse.external_change, entries)), None)
        if changed:
            return f"{changed} since it was recorded"
        broken = reuse.verify(run_dir, {f: recorded[f] for f in files})
        return f"{broken} changed since it was recorded" if broken else None

    def _files_of(self, name: str) -> list[str]:
        """Artifact ``name``'s file, its record and the report its stage writes with it."""
        files = [self.path(name).name, self.path(name).with_suffix(".json").name]
        if name in REPORT_OF and self.path(REPORT_OF[name]).is_file():
            files.append(self.path(REPORT_OF[name]).name)
        return files

    # ---------------------------------------------------------------- reports and derived values

    def report(self, name: str) -> dict | None:
        """A stage's JSON report (``ml``, ``llm``, ``portfolio``), read once."""
        _check_name(name, REPORTS, "report")
        if name not in self._reports:
            self._reports[name] = read_json(self.path(name))
        return self._reports[name]

    def write_report(self, name: str, payload: dict) -> dict:
        _check_name(name, REPORTS, "report")
        write_json(self.path(name), payload)
        self._reports[name] = payload
        return payload

    def memo(self, name: str, compute: Callable[[], Any]) -> Any:
        """A value derived from the artifacts, computed once until an artifact is saved again."""
        if name not in self._memo:
            self._memo[name] = compute()
        return self._memo[name]


def _load_stage(name: str) -> None:
    """Import the stage that makes artifact ``name`` (it registers itself with `produces`): a stage
    module, with its libraries, is loaded only when one of its artifacts is made or read by it."""
    if name not in _PRODUCERS or (ARTIFACTS[name].own_reader and name not in _READERS):
        import_module(f"research_lib.stages.{ARTIFACTS[name].stage}")
    if name not in _PRODUCERS:  # e.g. the registry was reloaded while the stage module stayed loaded
        raise ConfigError(f"no stage is registered to make {name!r} (research_lib.stages."
                          f"{ARTIFACTS[name].stage} registers it when first imported); restart the kernel")


def _with_inputs(name: str) -> set[str]:
    """Artifact ``name`` and every artifact upstream of it."""
    return {name}.union(*(_with_inputs(i) for i in ARTIFACTS[name].inputs))


def _check_name(name: str, known: dict, what: str) -> None:
    if name not in known:
        article = "an" if what[0] in "aeiou" else "a"
        raise ConfigError(f"{name!r} is not {article} {what} of a run folder; known: {sorted(known)}."
                          f"{did_you_mean(name, known)}")


def _read_parquet(path: Path, config: RunConfig) -> pd.DataFrame:
    return pd.read_parquet(path)
