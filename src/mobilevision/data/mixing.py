"""Batch-level MixUp / CutMix from `torchvision.transforms.v2`."""
from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2


def build_mixing(mixup: float, cutmix: float, num_classes: int, prob: float = 1.0,
                 switch_prob: float = 0.5) -> Callable | None:
    """A `(images, labels) -> (images, soft_targets)` function, or None when both alphas are 0.

    mixup / cutmix: Beta(alpha, alpha) parameters; prob: chance a batch is mixed at all;
    switch_prob: chance of CutMix rather than MixUp when both are on (timm's convention).
    Labels of unmixed batches become one-hot so that targets are always (B, num_classes).
    """
    for name, v in (("mixup", mixup), ("cutmix", cutmix)):
        if v < 0:
            raise ValueError(f"{name} alpha must be >= 0, got {v}")
    if not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
        raise ValueError(f"mix_prob and switch_prob must be in [0, 1], got {prob}, {switch_prob}")
    choices, weights = [], []
    if mixup > 0:
        choices.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
        weights.append(1 - switch_prob if cutmix > 0 else 1.0)
    if cutmix > 0:
        choices.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
        weights.append(switch_prob if mixup > 0 else 1.0)
    if not choices or prob == 0:
        return None
    mix = choices[0] if len(choices) == 1 else v2.RandomChoice(choices, p=weights)

    def apply(images: torch.Tensor, labels: torch.Tensor):
        if prob < 1 and float(torch.rand(())) >= prob:
            return images, torch.nn.functional.one_hot(labels, num_classes).to(images.dtype)
        return mix(images, labels)

    return apply
