"""Training: the one loop (`fit`), recipes, optimizers, schedules, EMA, checkpoints, DDP."""
from .engine import fit
from .recipe import Recipe, apply_overrides, default_recipe, load_recipe, recipe_names

__all__ = ["fit", "Recipe", "load_recipe", "apply_overrides", "default_recipe", "recipe_names"]
