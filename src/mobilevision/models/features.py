"""The classifier protocol every model follows, and the one multi-scale feature wrapper."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mobilevision.data.config import DataConfig, resolve_data_config


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


def check_output_stride(output_stride: int, family: str, supported: Sequence[int] = OUTPUT_STRIDES, why: str = "") -> None:
    """ValueError naming the accepted strides when a family cannot give maps at `output_stride`."""
    if output_stride not in supported:
        raise ValueError(f"output_stride {output_stride} is not supported by {family} models (use one of "
                         f"{tuple(supported)}){': ' + why if why else ''}")


def stage_outputs(x: torch.Tensor, stages: Sequence[nn.Module]) -> list[torch.Tensor]:
    """Run `x` through `stages` in turn and keep every stage's output (the usual `forward_stages` body)."""
    out = []
    for stage in stages:
        x = stage(x)
        out.append(x)
    return out


class FeatureExtractor(CarriesDataConfig, nn.Module):
    """Wraps a classifier so that `forward(x)` returns the stage maps selected by `out_indices`.

    `feature_info` keeps the selected entries; `channels()` and `reductions()` read them.
    """

    def __init__(self, model: Classifier, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        n = len(model.feature_info)
        indices = list(range(n)) if out_indices is None else [int(i) for i in out_indices]
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise ValueError(f"out_indices {bad} out of range: this model has {n} stages (0..{n - 1})")
        self.out_indices = [i % n for i in indices]
        model.reset_classifier(0)
        self.model = model
        self.feature_info = [model.feature_info[i] for i in self.out_indices]
        self.data_config = resolve_data_config(model)

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    def reductions(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.model.forward_stages(x)
        return [maps[i] for i in self.out_indices]
