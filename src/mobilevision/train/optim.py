"""Optimizers with weight-decay parameter groups; timm only for the TF-style RMSprop."""
from __future__ import annotations

import re

import torch
from torch import nn

from .recipe import Recipe


_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")
_STAGE = re.compile(r"^stages\.(\d+)\.")


def layer_depths(model: nn.Module) -> dict[str, int]:
    """Parameter name -> depth for layer-wise lr decay: one depth per block, counted from the stem.

    The ConvNeXt V2 fine-tuning rule ('single' layer-decay type): block j of stage i has depth
    sum(blocks before stage i) + j + 1; the stem and a stage's downsampling share the depth of the block
    after them; the final norm and head get (number of blocks) + 1. Needs `stages.<i>.blocks.<j>` names
    (ConvNeXt, MetaFormer); ValueError otherwise.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    blocks: dict[int, int] = {}
    for n in names:
        if m := _BLOCK.match(n):
            i, j = int(m.group(1)), int(m.group(2))
            blocks[i] = max(blocks.get(i, 0), j + 1)
    if not blocks:
        raise ValueError(f"layer_decay needs a model with stages.<i>.blocks.<j> parameters (ConvNeXt, MetaFormer); "
                         f"{type(model).__name__} has none: set layer_decay to null")
    before = {i: sum(blocks.get(k, 0) for k in range(i)) for i in range(max(blocks) + 1)}
    top = sum(blocks.values()) + 1
    depths = {}
    for n in names:
        if m := _BLOCK.match(n):
            depths[n] = before[int(m.group(1))] + int(m.group(2)) + 1
        elif m := _STAGE.match(n):
            depths[n] = before[int(m.group(1))] + 1
        elif n.startswith("stem."):
            depths[n] = 1
        else:
            depths[n] = top
    return depths


def param_groups(model: nn.Module, weight_decay: float, filter_bias_and_bn: bool = True,
                 layer_decay: float | None = None, backbone_lr_scale: float = 1.0) -> list[dict]:
    """Parameter groups with their weight decay and `lr_scale`.

    Exempt from decay (with `filter_bias_and_bn`): 1-D params (norms, biases, GRN gamma/beta, layer-scale)
    and names from `model.no_weight_decay()` (tokens, position embeddings). With `layer_decay`, a parameter
    at depth d (see `layer_depths`) gets lr_scale = layer_decay ** (top - d), 1 for the head. Parameters
    under `backbone.` (a detector's or segmenter's backbone) get their lr_scale x `backbone_lr_scale`.
    """
    skip_fn = getattr(model, "no_weight_decay", None)
    skip = set(skip_fn()) if callable(skip_fn) and filter_bias_and_bn else set()
    depths = layer_depths(model) if layer_decay is not None and layer_decay != 1 else {}
    top = max(depths.values(), default=0)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = filter_bias_and_bn and (p.ndim <= 1 or name in skip or any(name.startswith(s + ".") for s in skip))
        depth = depths.get(name, top)
        in_backbone = backbone_lr_scale != 1 and name.startswith("backbone.")
        key = (depth, exempt or weight_decay == 0, in_backbone)
        if key not in groups:
            scale = layer_decay ** (top - depth) if depths else 1.0
            groups[key] = {"params": [], "weight_decay": 0.0 if key[1] else weight_decay,
                           "lr_scale": scale * (backbone_lr_scale if in_backbone else 1.0)}
        groups[key]["params"].append(p)
    # the full-lr group first (the one the logs report)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[2], -k[0], k[1]))]


def build_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """AdamW / SGD / RMSprop from torch.optim, or timm's RMSpropTF (the TF recipes' RMSprop:
    eps inside the sqrt, lr in the momentum buffer)."""
    groups = param_groups(model, recipe.weight_decay, recipe.filter_bias_and_bn, recipe.layer_decay,
                          recipe.backbone_lr_scale)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]  # the schedule multiplies each group's own initial lr
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
