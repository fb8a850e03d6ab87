"""Small helpers shared by the model families and tasks."""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block; its train / eval mode comes back afterwards (also on error)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_choice(value: str, accepted: Iterable[str], what: str) -> None:
    """ValueError naming `what`, the bad `value` and the accepted ones, unless `value` is one of `accepted`."""
    accepted = list(accepted)
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor` (at least `divisor`), never dropping below 0.9 * value.

    The rule of the TF MobileNet/EfficientNet code (and timm): round to the nearest multiple, and if that
    lost more than 10% go one multiple up.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def capturing_graph(x) -> bool:
    """True while `torch.jit.trace`, `torch.compile` / `torch.export` or `torch.fx` trace the forward that sees
    `x`: a shortcut that depends on the size, device or strides of `x` must step aside, or the captured graph
    would hold the one case it was traced with."""
    import torch

    return torch.jit.is_tracing() or torch.compiler.is_compiling() or isinstance(x, torch.fx.Proxy)
