"""The shape of research_lib: floors that import only downward, no import loops, no module over
500 lines, and no package reaching into another's private modules (issue 14).

Read from the source with ``ast`` (nothing is imported), so an import hidden inside a function
counts like any other: hiding a loop in a function does not make it go away.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LIB = REPO / "research_lib"
MAX_LINES = 500

# Each floor may import its own floor and the floors below it (ARCHITECTURE.md, "Layers").
FLOORS: list[tuple[str, ...]] = [
    ("errors", "units", "paths", "_io", "_lazy", "_moved", "params", "_kernel_guard"),  # the bottom floor
    ("logs", "env", "alerts", "progress", "compute"),                                     # services every floor may call
    ("data",),
    ("features", "backtest", "plots", "hedging"),
    ("signals", "llm", "sweeps"),
    ("portfolio", "risk"),
    ("config",),                                                         # RunConfig assembles the sections
    ("validation",),
    ("trading", "broker", "execution"),
    ("reports",),
    ("stages",),
    ("pipeline", "scheduler", "cli"),
]
FLOOR_OF = {top: n for n, tops in enumerate(FLOORS) for top in tops}


def _module_files() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if "templates" not in p.parts)


def _top(path: Path) -> str:
    """The top-level part of research_lib a file belongs to (``trading`` for trading/_cycle.py)."""
    return path.relative_to(LIB).parts[0].removesuffix(".py")


def _target(dotted: str) -> Path | None:
    """The file a dotted research_lib module name is (package: its __init__.py)."""
    parts = dotted.split(".")[1:]
    if not parts:
        return LIB / "__init__.py"
    base = LIB.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> list[tuple[int, Path, str]]:
    """(line, imported file, how it is written) for every research_lib import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [(f"{node.module}.{alias.name}", node.module) for alias in node.names]
        else:
            continue
        for dotted, module in names:
            if not dotted.startswith("research_lib"):
                continue
            target = _target(dotted) or (_target(module) if module else None)
            if target is not None and target != path:
                found.append((node.lineno, target, dotted))
    return found


GRAPH = {path: _imports(path) for path in _module_files()}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_every_top_level_part_of_research_lib_has_a_floor():
    unplaced = sorted({_top(p) for p in GRAPH} - set(FLOOR_OF) - {"__init__"})
    assert not unplaced, f"place {unplaced} on a floor in FLOORS (and in ARCHITECTURE.md)"


def test_no_floor_imports_a_floor_above_it():
    upward = [f"{_rel(src)}:{line} imports {dotted} (floor {FLOOR_OF[_top(dst)]} {_top(dst)!r} is above "
              f"floor {FLOOR_OF[_top(src)]} {_top(src)!r})"
              for src, edges in GRAPH.items() if _top(src) in FLOOR_OF
              for line, dst, dotted in edges if _top(dst) in FLOOR_OF and FLOOR_OF[_top(dst)] > FLOOR_OF[_top(src)]]
    assert not upward, "\n".join(upward)


def test_no_package_imports_another_packages_private_module():
    private = [f"{_rel(src)}:{line} imports {dotted}"
               for src, edges in GRAPH.items() for line, dst, dotted in edges
               if dst.name.startswith("_") and dst.name != "__init__.py" and dst.parent != LIB
               and dst.parent != src.parent]
    assert not private, "\n".join(private)


def test_no_import_loops():
    """No file reaches itself through imports (a package's __init__ re-exporting its own modules is
    no loop; a module importing its own package's __init__ that re-exports it is)."""
    state: dict[Path, str] = {}
    loops: list[str] = []

    def visit(node: Path, trail: list[Path]) -> None:
        state[node] = "open"
        for _, nxt, _ in GRAPH.get(node, []):
            if state.get(nxt) == "open":
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                loops.append(" -> ".join(_rel(p) for p in cycle))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in GRAPH:
        if start not in state:
            visit(start, [start])
    assert not loops, "\n".join(loops)


@pytest.mark.parametrize("path", _module_files(), ids=_rel)
def test_no_module_is_over_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{_rel(path)} has {lines} lines; split it by job (at most {MAX_LINES})"


def test_old_module_names_still_import_with_a_warning_naming_the_new_home():
    """Users' notebooks written before issue 14 keep working while they move their imports."""
    import importlib
    import sys

    from research_lib._moved import MOVED
    from research_lib.validation import metrics

    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new), "the module itself: a patch through the old name reaches it"
        assert module.__spec__.name == new, "and it keeps its own spec (reload, pickling)"
    assert importlib.import_module("research_lib.metrics").sharpe_ratio is metrics.sharpe_ratio


def test_lazily_loaded_packages_list_every_name_before_it_is_loaded():
    import research_lib.portfolio
    import research_lib.signals
    import research_lib.stages
    import research_lib.validation

    assert {"RunFolder", "build_weights", "validate_strategy", "paper"} <= set(dir(research_lib.stages))
    assert {"baseline_weights", "PortfolioConfig"} <= set(dir(research_lib.portfolio))
    assert {"forward_returns", "MLConfig"} <= set(dir(research_lib.signals))
    assert {"sharpe_moments", "sweep", "evidence"} <= set(dir(research_lib.validation))


def test_the_removed_run_module_says_what_replaced_it():
    with pytest.raises(ModuleNotFoundError, match=r"research_lib.run was replaced by research_lib.stages: .*RunFolder.open"):
        import research_lib.run  # noqa: F401


def test_names_that_left_trading_say_where_they_went():
    import research_lib.trading as trading
    from research_lib.validation import promotion

    with pytest.warns(DeprecationWarning, match="moved to research_lib.validation.promotion.load_promoted"):
        assert trading.load_promoted is promotion.load_promoted
    with pytest.raises(AttributeError, match="trade_session moved to research_lib.stages.paper.trade_session"):
        trading.trade_session
