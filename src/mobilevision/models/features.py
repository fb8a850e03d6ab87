"""The classifier protocol every model follows, and the one multi-scale feature wrapper."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mobilevision.data.config import DataConfig, resolve_data_config
from mobilevision.layers.helpers import eval_mode


class CarriesDataConfig:
    """A model's preprocessing lives once, in `data_config` (a DataConfig); `default_cfg` is timm's dict
    view of it (tuples), and assigning a dict to `default_cfg` re-resolves `data_config`."""

    data_config: DataConfig = DataConfig()

    @property
    def default_cfg(self) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.data_config.to_dict().items()}

    @default_cfg.setter
    def default_cfg(self, value: dict) -> None:
        self.data_config = resolve_data_config(value)


class Classifier(CarriesDataConfig, nn.Module):
    """Base of every model in the zoo (timm's protocol).

    Subclasses set `num_classes`, `num_features`, `feature_info` (one `{"num_chs", "reduction", "module"}`
    per stage) and implement (or inherit) `forward_stages`, `forward_features` and `forward_head`.
    `forward_features(x)` returns exactly what `forward_head` takes, so `forward_head(forward_features(x))`
    is the forward pass of every family: the last map (B, C, H', W') everywhere except Mobile-Former, whose
    head also reads the global tokens (a `(map, tokens)` named tuple there). A model whose head is a
    `layers.ClassifierHead` named `head` gets `get_classifier` and `reset_classifier` from here.
    """

    num_classes: int
    num_features: int
    feature_info: list[dict]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One feature map per `feature_info` entry, in order: (B, C_i, H / r_i, W / r_i).

        The default is the stem-then-stages walk of models with `stem` and `stages` (every stage a map)."""
        return stage_outputs(self.stem(x), self.stages)

    def forward_features(self, x: torch.Tensor):
        """(B, C_in, H, W) -> the last map (B, C, H / r, W / r); the default runs `stem` then `stages`."""
        return self.stages(self.stem(x))

    def forward_head(self, x, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits (B, num_classes), or the pre-logits (B, num_features); default: `self.head`."""
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for `num_classes` (0: `forward` returns the pooled features)."""
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes), or pooled features when num_classes == 0."""
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        """Names of parameters to exempt from weight decay beyond norms and biases."""
        return set()


OUTPUT_STRIDES = (8, 16, 32)


def check_output_stride(output_stride: int, family: str, supported: Sequence[int] = OUTPUT_STRIDES,
                        why: str = "") -> None:
    """ValueError naming the accepted strides when a family cannot give maps at `output_stride`."""
    if output_stride not in supported:
        raise ValueError(f"output_stride {output_stride} is not supported by {family} models (use one of "
                         f"{tuple(supported)}){': ' + why if why else ''}")


def stride_or_dilate(stride: int, reduction: int, dilation: int, output_stride: int) -> tuple[int, int]:
    """(stride, dilation) of a layer that comes at `reduction`: a stride that would take the reduction past
    `output_stride` becomes 1 and multiplies the dilation instead (DeepLab, TF slim, timm)."""
    if stride > 1 and reduction * stride > output_stride:
        return 1, dilation * stride
    return stride, dilation


def stage_outputs(x: torch.Tensor, stages: Sequence[nn.Module]) -> list[torch.Tensor]:
    """Run `x` through `stages` in turn and keep every stage's output (the usual `forward_stages` body)."""
    out = []
    for stage in stages:
        x = stage(x)
        out.append(x)
    return out


class FeatureExtractor(CarriesDataConfig, nn.Module):
    """Wraps a classifier so that `forward(x)` returns a list of its feature maps (B, C_i, H / r_i, W / r_i).

    The maps are the `feature_info` stages chosen by `out_indices` (through `forward_stages`), or with
    `out_modules` the outputs of named blocks on the model's stem -> stages chain, in forward order:
    "blocks.2.0" is block 0 of stage 2 (torchvision's MobileNetV3 segmenters read it), "stages.3" the end of
    stage 3; the forward stops after the last of them, and `out_indices` then indexes `out_modules`.
    `head_conv=True` passes the last map on through the model's pre-pool head conv (`forward_head_conv`, e.g.
    MobileNetV2's 1280-wide conv, which SSDLite reads as C5).

    The model's children that no chosen map uses (the classifier, post-pool head convs, MobileViT's
    `final_conv` when no map reads it, ...) become Identity, so parameters and state dicts hold only what runs.
    `feature_info` lists the chosen maps; `channels()`, `reductions()` read it and `select()` narrows it.
    """

    def __init__(self, model: Classifier, out_indices: Sequence[int] | None = None, *,
                 out_modules: Sequence[str] | None = None, head_conv: bool = False) -> None:
        super().__init__()
        if getattr(model, "num_classes", 0):
            model.reset_classifier(0)
        self.model = model
        self.data_config = resolve_data_config(model)
        if head_conv and not hasattr(model, "forward_head_conv"):
            raise ValueError(f"head_conv=True needs a model with a pre-pool head conv (forward_head_conv); "
                             f"{type(model).__name__} has none")
        self.head_conv = head_conv
        self.taps = [self._resolve_tap(name) for name in out_modules] if out_modules else None
        names = ([".".join([self._container, str(s)] + ([] if b is None else [str(b)])) for s, b in self.taps]
                 if self.taps else [f["module"] for f in model.feature_info])
        n = len(names)
        indices = list(range(n)) if out_indices is None else [int(i) for i in out_indices]
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise ValueError(f"out_indices {bad} out of range: this model has {n} feature maps (0..{n - 1})")
        self.out_indices = [i % n for i in indices]
        shapes = self._probe_and_trim()
        info = [dict(f) for f in model.feature_info] if self.taps is None else [
            dict(num_chs=c, reduction=r, module=m) for (c, r), m in zip(shapes, names)]
        if head_conv:
            info[-1] = dict(num_chs=shapes[-1][0], reduction=shapes[-1][1], module="conv_head")
        self.feature_info = [info[i] for i in self.out_indices]

    def _resolve_tap(self, name: str) -> tuple[int, int | None]:
        """'blocks.S' / 'blocks.S.B' (or 'stages...'; negative S counts from the end) -> (S, B or None for the
        stage's end)."""
        parts = name.split(".")
        container = getattr(self.model, parts[0], None) if parts[0] in ("blocks", "stages") else None
        try:
            s, b = int(parts[1]), (int(parts[2]) if len(parts) == 3 else None)
            has_stem = hasattr(self.model, "forward_stem") or hasattr(self.model, "stem")
            ok = isinstance(container, nn.Sequential) and len(parts) in (2, 3) and has_stem
            stage = container[s]
            ok = ok and (b is None or (isinstance(stage, nn.Sequential) and 0 <= b < len(stage)))
        except (IndexError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"out_modules entry {name!r} is not a stage or block of the stem -> stages chain of "
                             f"{type(self.model).__name__}; name one like 'blocks.2' or 'blocks.2.0'")
        self._container = parts[0]
        return s % len(container), b

    @torch.no_grad()
    def _probe_and_trim(self) -> list[tuple[int, int]]:
        """One eval-mode forward at the model's input size: (channels, reduction) of every map, and every child
        of the model it did not run replaced by Identity."""
        ran: set[str] = set()
        hooks = [m.register_forward_pre_hook(lambda mod, args, n=name.split(".")[0]: ran.add(n))
                 for name, m in self.model.named_modules() if name]  # a container may only be iterated
        try:
            p = next(self.model.parameters())
            size = self.data_config.input_size
            with eval_mode(self):
                maps = self._maps(torch.zeros(1, *size, device=p.device, dtype=p.dtype))
        finally:
            for h in hooks:
                h.remove()
        for name, m in list(self.model.named_children()):
            if name not in ran and not isinstance(m, nn.Identity):
                setattr(self.model, name, nn.Identity())
        return [(int(m.shape[1]), round(size[-1] / m.shape[-1])) for m in maps]

    def _tapped(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps after the `out_modules` blocks, stopping after the last one."""
        model = self.model
        x = model.forward_stem(x) if hasattr(model, "forward_stem") else model.stem(x)
        last = max(self.taps, key=lambda t: (t[0], math.inf if t[1] is None else t[1]))
        found: dict[tuple[int, int | None], torch.Tensor] = {}
        for s, stage in enumerate(getattr(model, self._container)[: last[0] + 1]):
            if any(ts == s and b is not None for ts, b in self.taps):  # walk this stage block by block
                for b, block in enumerate(stage):
                    x = found[(s, b)] = block(x)
                    if (s, b) == last:
                        return [found[t] for t in self.taps]
            else:
                x = stage(x)
            found[(s, None)] = x
        return [found[t] for t in self.taps]

    def _maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.model.forward_stages(x) if self.taps is None else self._tapped(x)
        if self.head_conv:
            maps[-1] = self.model.forward_head_conv(maps[-1])
        return maps

    def select(self, indices: Sequence[int]) -> FeatureExtractor:
        """Keep only the maps at these positions of the current `feature_info` (in place; returns self)."""
        self.out_indices = [self.out_indices[i] for i in indices]
        self.feature_info = [self.feature_info[i] for i in indices]
        return self

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    def reductions(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self._maps(x)
        return [maps[i] for i in self.out_indices]
