"""Modules that moved when research_lib was arranged by floors (issue 14).

Code written against the old layout keeps working for a while: importing an old module name
gives the module's names from its new home, with a DeprecationWarning naming it. ``research_lib.run``
cannot be aliased (its ``(config, run_dir)`` functions became stages taking a ``RunFolder``):
importing it fails with what replaced it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "research_lib.labels": "research_lib.signals.labels",
    "research_lib.models": "research_lib.signals.models",
    "research_lib.evaluation": "research_lib.signals.evaluation",
    "research_lib.metrics": "research_lib.validation.metrics",
    "research_lib.sweep": "research_lib.validation.sweep",
    "research_lib.registry": "research_lib.validation.registry",
    "research_lib.promotion": "research_lib.validation.promotion",
    "research_lib.strategies": "research_lib.portfolio",
}
REPLACED = {
    "research_lib.run": "research_lib.stages: open a run folder with `folder = RunFolder.open(config_path, run_dir)`, "
                        "then read folder.prices, .features, .signals, .views, .weights and call the stages with it "
                        "(e.g. build_weights(folder), backtest_strategies(folder), validate_strategy(folder, results, "
                        "metrics))",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, alias: str, target: str):
        self.alias, self.target = alias, target

    def create_module(self, spec):
        """The module itself, under its old name too: a patch through the old name reaches it."""
        target = importlib.import_module(self.target)
        self._spec = target.__spec__  # the import system stamps the alias's spec on it; restored below
        return target

    def exec_module(self, module) -> None:
        module.__spec__ = self._spec
        warnings.warn(f"{self.alias} moved to {self.target}; import it from there", DeprecationWarning, stacklevel=2)


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in REPLACED:
            raise ModuleNotFoundError(f"{fullname} was replaced by {REPLACED[fullname]}.", name=fullname)
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, _Alias(fullname, MOVED[fullname]))
        return None


def install() -> None:
    """Answer imports of the old module names (once per process)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
