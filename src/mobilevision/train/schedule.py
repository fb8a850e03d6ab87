"""Per-iteration learning-rate schedules as `torch.optim.lr_scheduler.LambdaLR` (resumable)."""
from __future__ import annotations

import math

import torch

from .recipe import Recipe


class LrFactor:
    """lr(step) / lr: linear warm-up from `warmup_ratio` to 1, then cosine to `min_ratio`,
    exponential steps (`decay_rate` every `decay_steps`), or constant."""

    def __init__(self, kind: str, total_steps: int, warmup_steps: int, warmup_ratio: float = 0.0,
                 min_ratio: float = 0.0, decay_steps: float = 1.0, decay_rate: float = 1.0) -> None:
        self.kind, self.total, self.warmup = kind, max(1, total_steps), max(0, warmup_steps)
        self.warmup_ratio, self.min_ratio = warmup_ratio, min_ratio
        self.decay_steps, self.decay_rate = max(1e-9, decay_steps), decay_rate

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_ratio + (1 - self.warmup_ratio) * step / self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.decay_rate ** math.floor((step - self.warmup) / self.decay_steps)
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int,
                    steps_per_epoch: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Step it once per optimizer step."""
    warmup = recipe.warmup_steps if recipe.warmup_steps is not None else round(recipe.warmup_epochs * steps_per_epoch)
    factor = LrFactor(recipe.schedule, total_steps, warmup, recipe.warmup_lr_ratio, recipe.min_lr_ratio,
                      recipe.decay_epochs * steps_per_epoch, recipe.decay_rate)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
