"""Training: the one loop (`fit`), recipes, optimizers, schedules, EMA, checkpoints, DDP.

The names load on first use (PEP 562): the CLI reads recipes and sets up logging without importing torch.
"""
from __future__ import annotations

import importlib as _importlib

_LAZY = {"fit": ".engine", **dict.fromkeys(("Recipe", "apply_overrides", "default_recipe", "load_recipe",
                                            "recipe_names"), ".recipe")}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mobilevision.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["fit", "Recipe", "load_recipe", "apply_overrides", "default_recipe", "recipe_names"]
