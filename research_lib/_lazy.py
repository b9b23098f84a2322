"""Packages whose names load on first use: ``import research_lib.portfolio`` stays cheap
(no PyPortfolioOpt, no scikit-learn) until a name that needs them is asked for."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable


def lazy_exports(package: str, where: dict[str, str],
                 submodules: tuple[str, ...] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module-level ``__getattr__`` and ``__dir__`` for ``package``: name -> its value from the
    submodule ``where[name]`` (or a submodule itself, if named in ``submodules``), imported on first
    use and then kept in the package's namespace; ``dir()``, ``help()`` and tab completion list
    every name before it is loaded."""
    def __getattr__(name: str) -> Any:
        if name in submodules:
            return import_module(f"{package}.{name}")
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{where[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where, *submodules})

    return __getattr__, __dir__
