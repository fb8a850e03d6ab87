"""Exponential moving average of the weights (and buffers) via torch.optim.swa_utils."""
from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """ema = decay * ema + (1 - decay) * model after each `update_parameters(model)`; BN statistics too."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
