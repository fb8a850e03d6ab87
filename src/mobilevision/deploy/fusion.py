"""The inference form of any model: BatchNorm and layer-scale folded into the preceding conv / linear,
dropout and drop-path removed.

Pairs are found generically, without per-family code: one eval forward with hooks on the leaf modules
records which module produced each tensor, so a BatchNorm whose input tensor *is* the output of a
Conv2d / Linear (and of nothing later, e.g. an in-place activation) is a fold candidate. Layer-scale
modules (one parameter, output == input * gamma along the channel dim) are found the same way. Blocks
with something special to fold define `fuse()` (called in place, children first). The result is checked
against the original model and any fold that changes the outputs is left out.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from mobilevision.layers.drop_path import DropPath

from .profiling import eval_pass

_DROPOUT_TYPES: tuple[type, ...] = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout, DropPath)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Fold:
    """One fold: `target` (Conv2d / Linear) absorbs `source` (a BatchNorm or a layer-scale module)."""

    kind: str  # "bn" | "scale"
    target: str
    source: str
    channel_dim: int = 1  # layer-scale only: 1 = channels-first input, -1 = channels-last


@dataclass
class FuseReport:
    """What `fuse` did: the folds applied, those rejected by verification, removed modules, max abs diff."""

    folds: list[Fold]
    rejected: list[Fold]
    removed: list[str]
    max_abs_diff: float


def _is_random(m: nn.Module) -> bool:
    name = type(m).__name__.lower()
    return isinstance(m, _DROPOUT_TYPES) or any(k in name for k in ("droppath", "dropblock", "dropout",
                                                                     "stochasticdepth"))


def strip_random(model: nn.Module) -> list[str]:
    """Replace every dropout / drop-path / drop-block module by nn.Identity (in place); returns their names."""
    removed = []
    for name, m in list(model.named_modules()):
        if name and _is_random(m):
            _set_submodule(model, name, nn.Identity())
            removed.append(name)
    return removed


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _scale_param(m: nn.Module) -> torch.Tensor | None:
    """The single parameter of a possible layer-scale module, if it is a 1-D-like channel vector."""
    if list(m.children()) or isinstance(m, (nn.Conv2d, nn.Linear) + _BN_TYPES + (nn.LayerNorm, nn.GroupNorm)):
        return None
    params = list(m.parameters(recurse=False))
    if len(params) != 1 or len(list(m.buffers(recurse=False))) != 0:
        return None
    p = params[0]
    if p.numel() < 1 or p.numel() != max(p.shape, default=1):
        return None
    return p


def find_folds(model: nn.Module, example: torch.Tensor) -> list[Fold]:
    """Candidate folds of an eval-mode model, from one forward pass on `example`."""
    names = {m: n for n, m in model.named_modules()}
    producer: dict[int, str] = {}  # id(tensor) -> name of the last leaf module that returned it
    keep: list[torch.Tensor] = []  # keep tensors alive so their ids stay unique during the pass
    calls: dict[str, int] = {}
    consumers: dict[int, int] = {}  # id(tensor) -> how many leaf modules took it as first input
    found: list[tuple[str, str, str, int, int]] = []  # (kind, source, producer-at-input, channel_dim, id(input))
    handles = []

    def hook(mod, inputs, output):
        name = names[mod]
        calls[name] = calls.get(name, 0) + 1
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if x is not None and not isinstance(mod, nn.Identity):
            consumers[id(x)] = consumers.get(id(x), 0) + 1
            keep.append(x)
        if x is not None and id(x) in producer:
            if type(mod) in _BN_TYPES:
                found.append(("bn", name, producer[id(x)], 1, id(x)))
            elif (p := _scale_param(mod)) is not None and isinstance(output, torch.Tensor):
                c = p.numel()
                for dim in (1, x.ndim - 1):
                    if x.ndim >= 2 and x.shape[dim] == c:
                        shape = [1] * x.ndim
                        shape[dim] = c
                        if output.shape == x.shape and torch.allclose(output, x * p.reshape(shape), atol=1e-6,
                                                                      rtol=1e-5):
                            last = dim == x.ndim - 1 and (x.ndim != 4 or dim != 1)
                            found.append(("scale", name, producer[id(x)], -1 if last else dim, id(x)))
                        break
        if isinstance(output, torch.Tensor) and not isinstance(mod, nn.Identity):
            producer[id(output)] = name
            keep.append(output)

    for mod in model.modules():
        if not list(mod.children()):
            handles.append(mod.register_forward_hook(hook))
    with eval_pass(model, handles):
        model(example)

    folds = []
    for kind, source, target, dim, tid in found:
        t = model.get_submodule(target)
        if calls.get(source) != 1 or calls.get(target) != 1 or consumers.get(tid, 0) != 1:
            continue  # shared modules, or an output that also feeds another module, cannot be folded
        bn = type(model.get_submodule(source))
        if kind == "bn" and ((isinstance(t, nn.Conv2d) and bn is nn.BatchNorm2d)
                             or (isinstance(t, nn.Linear) and bn is nn.BatchNorm1d)):
            folds.append(Fold("bn", target, source))
        elif kind == "scale" and ((isinstance(t, nn.Conv2d) and dim == 1) or (isinstance(t, nn.Linear) and dim == -1)):
            folds.append(Fold("scale", target, source, dim))
    return folds


def _apply(model: nn.Module, folds: list[Fold]) -> None:
    for f in folds:
        t = model.get_submodule(f.target)
        s = model.get_submodule(f.source)
        if f.kind == "bn":
            new = fuse_conv_bn_eval(t, s) if isinstance(t, nn.Conv2d) else fuse_linear_bn_eval(t, s)
        else:
            new = copy.deepcopy(t)
            gamma = _scale_param(s).detach().reshape(-1)  # (C,)
            with torch.no_grad():
                new.weight.mul_(gamma.reshape(-1, *([1] * (new.weight.ndim - 1))))
                if new.bias is not None:
                    new.bias.mul_(gamma)
        _set_submodule(model, f.target, new)
        _set_submodule(model, f.source, nn.Identity())


def _call_block_fuse(model: nn.Module) -> None:
    """Call `fuse()` on every submodule that defines one (children before parents), the root excluded."""
    for name, m in reversed(list(model.named_modules())):
        if name and callable(getattr(m, "fuse", None)):
            m.fuse()


def _default_example(model: nn.Module) -> torch.Tensor:
    from mobilevision.data.config import resolve_data_config

    c, h, w = resolve_data_config(model).input_size
    # Folding does not depend on the size; keep verification cheap but above any model's minimum.
    h, w = min(h, 128), min(w, 128)
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else "cpu"
    return torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0)).to(device)


def _max_diff(a, b) -> float:
    """Largest |a - b| over tensors nested in lists / tuples / dicts (detectors' per-image dicts); inf where
    the structures or shapes differ (another number of detections)."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape:
            return math.inf
        return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return math.inf
        a, b = list(a.values()), list(b.values())
    if len(a) != len(b):
        return math.inf
    return max((_max_diff(x, y) for x, y in zip(a, b)), default=0.0)


def _outputs(model: nn.Module, x: torch.Tensor):
    """What fusing must keep: a detector's raw boxes and scores (before NMS, whose selection a 1e-6 change
    can flip), any other model's forward."""
    raw = getattr(model, "forward_raw", None)
    return raw(x) if callable(raw) else model(x)


def fuse(model: nn.Module, example: torch.Tensor | None = None, atol: float = 1e-4,
         return_report: bool = False) -> nn.Module | tuple[nn.Module, FuseReport]:
    """A new eval-mode model with BN / layer-scale folded and no random ops; `model` is left unchanged.

    `example` is the verification input (default: (2, C, min(H,128), min(W,128)) from the model's data config).
    The fused outputs are checked against the original: a fold that changes them by more than
    `atol * max(1, max|output|)` is left out; RuntimeError if the result still differs.
    """
    ref_model = copy.deepcopy(model).eval()
    base = copy.deepcopy(model).eval()
    removed = strip_random(base)
    _call_block_fuse(base)
    x = _default_example(base) if example is None else example
    with torch.no_grad():
        ref = _outputs(ref_model, x)
        base_out = _outputs(base, x)
    scale = max(1.0, _max_diff(ref, torch.zeros_like(ref)) if isinstance(ref, torch.Tensor) else 1.0)
    tol = atol * scale
    diff0 = _max_diff(base_out, ref)
    if diff0 > tol:
        raise RuntimeError(f"a block's fuse() changed the outputs of {type(model).__name__} (max abs diff {diff0:.2e})")

    def trial(start: nn.Module, chosen: list[Fold]) -> tuple[nn.Module, float]:
        m = copy.deepcopy(start)
        _apply(m, chosen)
        with torch.no_grad():
            return m, _max_diff(_outputs(m, x), ref)

    # Folding a BN exposes the conv to a following layer-scale, so search again until nothing new is found.
    fused, diff = base, diff0
    applied: list[Fold] = []
    rejected: list[Fold] = []
    for _ in range(4):
        folds = [f for f in find_folds(fused, x) if f not in rejected]
        if not folds:
            break
        cand, d = trial(fused, folds)
        if d > tol:  # find the offending folds one by one
            good: list[Fold] = []
            for f in folds:
                _, d1 = trial(fused, good + [f])
                (good if d1 <= tol else rejected).append(f)
            if not good:
                break
            cand, d = trial(fused, good)
            folds = good
        fused, diff = cand, d
        applied += folds
    fused.eval()
    left = [n for n, m in fused.named_modules() if n and _is_random(m)]
    if left:
        raise RuntimeError(f"random modules survived fusing: {', '.join(left[:5])}")
    if return_report:
        return fused, FuseReport(applied, rejected, removed, diff)
    return fused


def count_norms(model: nn.Module) -> int:
    """Number of BatchNorm modules left (0 after fusing a pure conv-BN network)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
