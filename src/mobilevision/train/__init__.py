"""Training: the one loop (`fit`), recipes, optimizers, schedules, EMA, checkpoints, DDP.

The names load on first use (PEP 562): the CLI reads recipes and sets up logging without importing torch.
"""
from __future__ import annotations

from mobilevision.lazy import lazy_names

_LAZY = {"fit": ".engine", **dict.fromkeys(("Recipe", "apply_overrides", "default_recipe", "load_recipe",
                                            "recipe_names"), ".recipe")}

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)

__all__ = ["fit", "Recipe", "load_recipe", "apply_overrides", "default_recipe", "recipe_names"]
