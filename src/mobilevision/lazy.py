"""Lazy public names for a package (PEP 562): each name is imported from its defining module on first access, so
importing the package (and the CLI's quick paths) loads no torch."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_names(package: str, namespace: dict, table: dict[str, str], subpackages: tuple[str, ...] = ()
               ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The (`__getattr__`, `__dir__`) of `package`, whose module globals are `namespace`: `table` maps a public
    name to the module (relative to `package`) that defines it; `subpackages` are reachable as attributes."""

    def getattr_(name: str):
        if name in table:
            value = getattr(importlib.import_module(table[name], package), name)
            namespace[name] = value  # later lookups skip __getattr__
            return value
        if name in subpackages:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(table) | set(subpackages))

    return getattr_, dir_
