"""Exponential moving average of the weights (and buffers) via torch.optim.swa_utils."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_decay_at(updates: int, decay: float, warmup: bool) -> float:
    """The decay used for the `updates`-th average (0-based). With `warmup`, timm's ramp
    1 - (1 + updates) ** (-2/3), capped at `decay`: early averages follow the model instead of lagging
    hundreds of steps behind it (with averaged BN statistics, an un-warmed 0.99 EMA sits at chance for the
    first epochs of a short run)."""
    if not warmup:
        return decay
    return min(decay, 1.0 - (1.0 + updates) ** (-2.0 / 3.0))


def build_ema(model: nn.Module, decay: float, warmup: bool = False) -> AveragedModel:
    """ema = d * ema + (1 - d) * model after each `update_parameters(model)`, BN statistics too;
    d = `ema_decay_at(number of updates so far, decay, warmup)`."""

    if not warmup:
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        get_ema_multi_avg_fn(ema_decay_at(int(num_averaged), decay, True))(averaged, current, num_averaged)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
