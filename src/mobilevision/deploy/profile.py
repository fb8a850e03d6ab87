"""Counting: parameters, multiply-accumulates and activation memory."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int], batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass: FlopCounterMode total / 2 (input (batch, C, H, W)).

    Runs on the model's device; build the model on the meta device to count large models for free.
    """
    device = next(model.parameters()).device
    x = torch.zeros((batch, *input_size), device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def count_on_meta(build: Callable[[], nn.Module], input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(params, MACs) of the model `build()` makes, built on the meta device so no memory is used."""
    with torch.device("meta"):
        model = build()
    return count_params(model), count_macs(model, input_size)
