"""Counting: parameters, multiply-accumulates and activation memory."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilevision.layers.helpers import eval_mode


@contextlib.contextmanager
def eval_pass(model: nn.Module, handles: list | None = None) -> Iterator[None]:
    """Eval mode and no_grad for one measuring forward; afterwards the hooks (`handles`) go and the mode comes back."""
    try:
        with eval_mode(model), torch.no_grad():
            yield
    finally:
        for h in handles or []:
            h.remove()


def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int], batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass: FlopCounterMode total / 2 (input (batch, C, H, W)).

    Runs on the model's device; build the model on the meta device to count large models for free.
    """
    device = next(model.parameters()).device
    x = torch.zeros((batch, *input_size), device=device)
    counter = FlopCounterMode(display=False)
    with eval_pass(model), counter:
        model(x)
    return counter.get_total_flops() // 2


def count_on_meta(build: Callable[[], nn.Module], input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(params, MACs) of the model `build()` makes, built on the meta device so no memory is used."""
    with torch.device("meta"):
        model = build()
    return count_params(model), count_macs(model, input_size)


def activation_memory(model: nn.Module, input_size: tuple[int, int, int], batch: int = 1) -> dict[str, int]:
    """Bytes of the tensors the leaf modules return in one eval forward (input (batch, C, H, W)).

    `total` sums every leaf output (what a training step keeps for backward, roughly); `peak_single` is the
    largest one. Runs on the model's device: on the meta device it costs nothing.
    """
    device = next(model.parameters()).device
    sizes: list[int] = []

    def hook(_mod, _inp, out):
        for t in (out if isinstance(out, (list, tuple)) else [out]):
            if isinstance(t, torch.Tensor):
                sizes.append(t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with eval_pass(model, handles):
        model(torch.zeros((batch, *input_size), device=device))
    return {"total": sum(sizes), "peak_single": max(sizes, default=0)}


def stage_table(model: nn.Module, input_size: tuple[int, int, int]) -> list[dict]:
    """One row per `feature_info` stage: module, channels, reduction, output shape, params of the stage module,
    and MACs (batch 1) spent from the previous stage's output to this one's (`macs`) and in total (`cum_macs`)."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    infos = list(getattr(model, "feature_info", []))
    subs = [_submodule(model, info.get("module", "")) for info in infos]
    done: dict[int, int] = {}
    handles = []
    for i, sub in enumerate(subs):
        if sub is not None:  # live flop total when the stage module returns
            def hook(*_args, i=i) -> None:
                done.setdefault(i, counter.get_total_flops())

            handles.append(sub.register_forward_hook(hook))
    with eval_pass(model, handles), counter:
        fn = getattr(model, "forward_stages", None)
        maps = fn(torch.zeros((1, *input_size), device=device)) if fn is not None else []
    rows, prev = [], 0
    for i, (info, sub) in enumerate(zip(infos, subs)):
        cum = done.get(i)
        rows.append({
            "stage": i,
            "module": info.get("module", ""),
            "num_chs": info["num_chs"],
            "reduction": info["reduction"],
            "shape": tuple(maps[i].shape[1:]) if i < len(maps) else None,
            "params": count_params(sub) if sub is not None else None,
            "macs": (cum - prev) // 2 if cum is not None else None,
            "cum_macs": cum // 2 if cum is not None else None,
        })
        prev = cum if cum is not None else prev
    return rows


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name) if name else None
    except AttributeError:
        return None


def parts_table(model: nn.Module, input_size: tuple[int, int, int]) -> list[dict]:
    """For task models (no `feature_info`): one row per top-level part with parameters (a detector's
    backbone / extra / head, a segmenter's backbone / head / aux_head): params and MACs (batch 1) spent in it."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    parts = [(n, m) for n, m in model.named_children() if count_params(m)]
    spent = {n: 0 for n, _ in parts}
    start: dict[str, int] = {}
    handles = []
    for n, part in parts:
        # a ModuleList is never called itself: count its members' calls
        for m in part.children() if isinstance(part, (nn.ModuleList, nn.ModuleDict)) else [part]:
            handles.append(m.register_forward_pre_hook(
                lambda *_a, n=n: start.__setitem__(n, counter.get_total_flops())))
            handles.append(m.register_forward_hook(
                lambda *_a, n=n: spent.__setitem__(n, spent[n] + counter.get_total_flops() - start[n])))
    with eval_pass(model, handles), counter:
        model(torch.zeros((1, *input_size), device=device))
    rows, cum = [], 0
    for i, (n, m) in enumerate(parts):
        cum += spent[n]
        rows.append({"stage": i, "module": n, "num_chs": None, "reduction": None, "shape": None,
                     "params": count_params(m), "macs": spent[n] // 2, "cum_macs": cum // 2})
    return rows


def profile(name: str, size: tuple[int, int] | None = None) -> dict:
    """Params, MACs, activation memory and per-stage table of a registered model, counted on the meta device.

    `size` is (H, W); default: the model's default input size. ValueError when the model cannot take it.
    """
    import mobilevision
    from mobilevision.models.registry import get_config

    cfg = get_config(name)
    c = cfg.input_size[0]
    h, w = (cfg.input_size[1], cfg.input_size[2]) if size is None else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {h}x{w}")
    with torch.device("meta"):
        model = mobilevision.create_model(name)
    try:
        params, macs = count_params(model), count_macs(model, (c, h, w))
        act = activation_memory(model, (c, h, w))
        stages = (stage_table(model, (c, h, w)) if getattr(model, "feature_info", None)
                  else parts_table(model, (c, h, w)))
    except Exception as err:  # noqa: BLE001 - a model that cannot take the size may raise anything
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model {name!r} cannot take input size {h}x{w}: {msg[:200]}") from None
    return {"model": name, "input_size": (c, h, w), "params": params, "macs": macs,
            "activation_bytes": act["total"], "peak_activation_bytes": act["peak_single"], "stages": stages}
