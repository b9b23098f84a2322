"""The content keys of a run's stages and artifacts: what each stage reads, hashed.

A stage's outputs are keyed by exactly what it reads:

- the parameters it reads (`STAGE_READS`: whole sections, or one ``section.key``);
- the upstream artifacts it reads (their sha256, taken by the caller);
- the code that makes them (`code_digest`): the notebook file and the static import closure of
  the ``research_lib`` modules it imports (found with `ast`; a name a package exports lazily is
  followed to its submodule, so a notebook importing ``RunFolder`` from ``research_lib.stages``
  depends on ``stages/folder.py``, not on every stage), the templates beside those modules, and
  the versions of the libraries whose results the numbers depend on.

- the state outside the run that chooses what it makes (`stage_context`): the user's price file
  (resolved as the kernel resolves it), the analyst 04 resolves to, the gate's thresholds 06 reads.

Settings that change only the speed (`SPEED_ONLY`) are left out. `research_lib.stages.folder`
keys each artifact with its producing stage's parameters, context and producer's code, and the
pipeline keys each notebook with the same, its notebook's code and the sha256 of the run-folder
files it reads (`research_lib.stages.chain`): a notebook run alone and ``spartan run`` agree on
what is fresh.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from research_lib._io import package_versions
from research_lib.config import RunConfig

__all__ = ["ALL_SECTIONS", "LIBRARY", "SPEED_ONLY", "STAGE_READS", "code_digest", "data_file", "file_sha256",
           "module_closure", "notebook_modules", "params_digest", "resolved_analyst", "stage_context", "stage_sections"]

LIBRARY = Path(__file__).resolve().parents[1]  # research_lib/
ALL_SECTIONS = ("*",)  # the whole configuration: a stage that writes every parameter into its record

# What each stage of the chain reads from the parameters (checked against the stages' code:
# `tradable` reads data.benchmark and features.vix_symbol; the ML labels and the analyst's IC are
# lagged by backtest.execution_lag_sessions; 01 loads the VIX the hedge prices on). 06 writes the whole configuration into
# validation.json (promotion checks it against the run's), so it reads everything.
STAGE_READS: dict[str, tuple[str, ...]] = {
    "01_load_data": ("data", "features.names", "features.vix_symbol", "hedge.kind", "hedge.volatility"),
    # the calendar the universe follows annualizes the volatility features (RunConfig.sessions_per_year)
    "02_build_features": ("data.benchmark", "data.symbols", "data.calendar", "data.markets", "features"),
    "03_fit_ml_signals": ("ml", "backtest.execution_lag_sessions"),
    "04_ask_claude": ("llm", "ml.horizon_days", "backtest.execution_lag_sessions"),
    "05_build_portfolio": ("strategy", "portfolio", "risk", "data.benchmark", "features.vix_symbol", "data.symbols",
                           "data.calendar", "data.markets"),
    "06_validate_strategy": ALL_SECTIONS,
}
# Documented as changing only the speed (``data.refresh`` is handled by never reusing what it reloads).
SPEED_ONLY = ("features.n_jobs", "data.refresh", "compute")
# Libraries whose versions can change the numbers a stage makes (cvxpy's solvers decide the optimum).
_VERSIONED = ("numpy", "pandas", "scipy", "scikit-learn", "arch", "cvxpy", "clarabel", "osqp", "scs", "ecos",
              "pyportfolioopt", "skfolio", "quantstats", "numba", "pyarrow")


def stage_sections(stage: str, config: RunConfig) -> tuple[str, ...]:
    """The parameters stage ``stage`` (a notebook name without ``.ipynb``) reads under ``config``.

    05 runs a backtest, and so reads ``backtest``, only when ``portfolio.circuit_breaker`` is set
    (and ``execution`` too when the backtest charges its impact: ``backtest.impact_from_execution``).
    A stage outside the table (a user's notebook) is taken to read everything.
    """
    sections = STAGE_READS.get(stage, ALL_SECTIONS)
    if stage == "05_build_portfolio" and config.portfolio.circuit_breaker is not None:
        sections = (*sections, "backtest", *(("execution",) if config.backtest.impact_from_execution else ()))
    return sections


def params_digest(config: RunConfig, sections: tuple[str, ...], data_file_sha256: str | None = None) -> dict:
    """The values of ``sections`` (``section`` or ``section.key``; ``*``: everything) in ``config``,
    with the user's price file's hash when the whole ``data`` section is read from a file."""
    dumped = config.model_dump(mode="json")
    for setting in SPEED_ONLY:
        head, _, key = setting.partition(".")
        if key:
            dumped[head].pop(key, None)
        else:
            dumped.pop(head, None)
    if sections == ALL_SECTIONS:
        named = dumped
    else:
        named = {}
        for section in sections:
            head, _, key = section.partition(".")
            named[section] = dumped[head][key] if key else dumped[head]
    reads_data_file = sections == ALL_SECTIONS or "data" in sections
    if reads_data_file and config.data.source == "file" and config.data.path:
        named = {**named, "data_file_sha256": data_file_sha256}
    return named


def data_file(config: RunConfig, cwd: str | Path | None = None) -> Path | None:
    """The user's price file (``data.source: file``) as the data loader opens it: a relative
    ``data.path`` is relative to the working folder of the process that loads it (``cwd``; a
    pipeline's kernels run in ``notebooks/``), or None when the data come from elsewhere."""
    if config.data.source != "file" or not config.data.path:
        return None
    path = Path(config.data.path)
    return path if path.is_absolute() or cwd is None else Path(cwd) / path


def resolved_analyst(config: RunConfig) -> str:
    """The analyst stage 04 uses under ``config`` and the environment as it is now: ``offline``,
    ``anthropic`` or ``replay``, decided by the function 04 calls (``llm.provider: auto`` follows
    whether the API key is set; the key itself is never read into a key or a record)."""
    from research_lib.llm import API_KEY_ENV, analyst_source

    return analyst_source(config.llm, has_key=bool(os.environ.get(API_KEY_ENV)))


def stage_context(stage: str, config: RunConfig) -> dict:
    """What outside the parameters and the run folder decides what ``stage`` makes: the analyst 04
    resolves to, and the gate's thresholds (``params/promotion.yaml``) the validation reads."""
    context = {}
    if stage == "04_ask_claude":
        context["analyst"] = resolved_analyst(config)
    if stage_sections(stage, config) == ALL_SECTIONS:
        from research_lib import paths
        from research_lib.validation.promotion import PROMOTION_FILE

        context["promotion_sha256"] = file_sha256(paths.workspace_root() / "params" / PROMOTION_FILE)
    return context


def file_sha256(path: str | Path, cached: bool = True) -> str | None:
    """The sha256 of a file, or None when it is missing. ``cached``: remembered while the file
    keeps its inode, size and times (every writer replaces files atomically, which gives a new
    inode); ``cached=False`` reads it again (to check a file against its recorded hash)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not cached:
        return _sha256_at.__wrapped__(str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return _sha256_at(str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@lru_cache(maxsize=1024)
def _sha256_at(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


# ---------------------------------------------------------------- code


def code_digest(modules: Iterable[str], files: Iterable[Path] = ()) -> str:
    """A hash of the source of ``modules`` (dotted ``research_lib`` names) and everything they
    import from ``research_lib``, of ``files`` (e.g. the notebook), and of the library versions."""
    closure = set()
    for module in modules:
        closure |= module_closure(module)
    parts = {str(path.relative_to(LIBRARY.parent)): file_sha256(path) for path in sorted(closure)}
    parts |= {str(Path(path).name): file_sha256(path) for path in files}
    parts["versions"] = _library_versions()
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    return package_versions(_VERSIONED)


# The keying machinery: their own code is keyed (a keying fix re-keys), but what they import only
# to read outside state (the analyst's choice, the trial registry, the gate's file) is keyed as
# that state (`stage_context`, `reuse.external_change`), never as code that makes an artifact.
_IMPORTS_NOT_FOLLOWED = frozenset({"research_lib.stages.keys", "research_lib.stages.reuse"})


def module_closure(module: str) -> frozenset[Path]:
    """The files ``module`` runs when imported and used: itself, its parent packages, every
    ``research_lib`` module it imports (at any depth, function-level imports included, but not
    through the keying modules, `_IMPORTS_NOT_FOLLOWED`) and the ``templates/`` beside them."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(_parents(name))
        if name not in _IMPORTS_NOT_FOLLOWED:
            todo.extend(_imports_of(path, *_stat_key(path)))
    templates = {t for path in seen if (path.parent / "templates").is_dir()
                 for t in (path.parent / "templates").iterdir() if t.is_file()}
    return frozenset(seen | templates)


def notebook_modules(notebook: Path) -> list[str]:
    """The ``research_lib`` modules a notebook's code cells import (lazily exported names followed)."""
    cells = json.loads(Path(notebook).read_text()).get("cells", [])
    found: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a cell magic: not Python, imports nothing of ours
            continue
        found.extend(_imported_modules(tree))
    return found


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@lru_cache(maxsize=512)
def _imports_of(path: Path, mtime_ns: int, size: int) -> tuple[str, ...]:
    return tuple(_imported_modules(ast.parse(path.read_text(), str(path))))


def _imported_modules(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names if alias.name.startswith("research_lib"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("research_lib"):
            found.extend(_resolve(node.module, alias.name) for alias in node.names)
    return found


def _resolve(package: str, name: str) -> str:
    """The module ``from package import name`` runs: a submodule, the submodule a lazily exporting
    package loads ``name`` from (its ``_WHERE`` table), or the package itself."""
    if _module_file(f"{package}.{name}") is not None:
        return f"{package}.{name}"
    where = _lazy_table(package)
    return f"{package}.{where[name]}" if name in where else package


def _lazy_table(package: str) -> dict[str, str]:
    init = _module_file(package)
    if init is None or init.name != "__init__.py":
        return {}
    return _lazy_table_of(init, *_stat_key(init))


@lru_cache(maxsize=64)
def _lazy_table_of(init: Path, mtime_ns: int, size: int) -> dict[str, str]:
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_WHERE" for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return {}
    return {}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "research_lib":
        return None
    base = LIBRARY.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None
