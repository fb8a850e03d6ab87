"""Optimizers with weight-decay parameter groups; timm only for the TF-style RMSprop."""
from __future__ import annotations

import torch
from torch import nn

from .recipe import Recipe


def param_groups(model: nn.Module, weight_decay: float, filter_bias_and_bn: bool = True) -> list[dict]:
    """Two groups: decayed weights, and exempt ones (1-D params: norms, biases, GRN gamma/beta,
    layer-scale; plus names from `model.no_weight_decay()`, e.g. tokens and position embeddings)."""
    if not filter_bias_and_bn or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    skip_fn = getattr(model, "no_weight_decay", None)
    skip = set(skip_fn()) if callable(skip_fn) else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim <= 1 or name in skip or any(name.startswith(s + ".") for s in skip)
        (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """AdamW / SGD / RMSprop from torch.optim, or timm's RMSpropTF (the TF recipes' RMSprop:
    eps inside the sqrt, lr in the momentum buffer)."""
    groups = param_groups(model, recipe.weight_decay, recipe.filter_bias_and_bn)
    name = recipe.optimizer
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(recipe.betas), eps=recipe.eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=recipe.rmsprop_alpha, eps=recipe.eps,
                                   momentum=recipe.momentum)
    if name == "rmsproptf":
        from timm.optim import RMSpropTF

        return RMSpropTF(groups, lr=lr, alpha=recipe.rmsprop_alpha, eps=recipe.eps, momentum=recipe.momentum)
    raise ValueError(f"optimizer {name!r} is not one of adamw, sgd, rmsprop, rmsproptf")
