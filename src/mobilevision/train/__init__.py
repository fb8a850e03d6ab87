"""Training: recipes, the loop, optimizers, schedules, EMA, checkpoints, DDP."""
from .loop import evaluate, fit
from .recipe import Recipe, apply_overrides, load_recipe, recipe_names

__all__ = ["fit", "evaluate", "Recipe", "load_recipe", "apply_overrides", "recipe_names"]
