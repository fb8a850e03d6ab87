"""The one preprocessing config: `DataConfig`, resolved once, built into transforms once.

A model carries its `DataConfig` as `model.data_config` (and the timm-style dict view `model.default_cfg`);
`config.json` and exported graphs store `DataConfig.to_dict()`. Train, eval, predict, export and quantize all
go through `resolve_data_config` and `create_transform`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class DataConfig:
    """How to feed a model: input size (C, H, W) in pixels, per-channel mean / std (of [0, 1] values),
    the eval centre-crop fraction and the resize interpolation."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    def __post_init__(self):
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"input_size must be (C, H, W) with positive entries, got {self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(f"mean and std need one entry per channel and std > 0, got {self.mean} / {self.std}")
        if not 0 < float(self.crop_pct) <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.input_size[1], self.input_size[2]

    @property
    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """mean and std cut to the input's channel count (grey models use the first entry)."""
        c = self.input_size[0]
        return self.mean[:c], self.std[:c]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) [0, 1] images -> (images - mean) / std, in the images' dtype and device (the detectors
        normalise inside, as torchvision's do)."""
        mean, std = self.channel_stats
        mean_t = images.new_tensor(mean).view(1, -1, 1, 1)
        std_t = images.new_tensor(std).view(1, -1, 1, 1)
        return (images - mean_t) / std_t

    def to_dict(self) -> dict:
        """Plain JSON-able form (lists for tuples), as `config.json` and graph metadata store it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> "DataConfig":
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name for f in dataclasses.fields(DataConfig)}


def resolve_data_config(source: Any = None, saved: Mapping | None = None, **overrides: Any) -> DataConfig:
    """The one merge: defaults < `source` (a model, a registered name, a DataConfig or a dict) < `saved`
    (a checkpoint's or graph's stored config) < explicit `overrides` (None values ignored).

    `input_size` may be given as an int (square), (H, W) or (C, H, W); `in_chans` sets C.
    """
    base = _as_dict(source)
    merged: dict[str, Any] = {**base, **_clean(saved or {})}
    base_size = merged.get("input_size")
    wanted = {k: v for k, v in overrides.items() if v is not None}
    in_chans = wanted.pop("in_chans", None)
    unknown = set(wanted) - _FIELDS
    if unknown:
        raise ValueError(f"unknown data config field(s) {sorted(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    merged.update(wanted)
    # channels: in_chans, else a (C, H, W) override's own, else the base's (an N or (H, W) override has none)
    sized = [v for v in (wanted.get("input_size"), base_size) if v is not None and not isinstance(v, int)]
    sized = [tuple(v) for v in sized if len(tuple(v)) == 3]
    c = int(in_chans) if in_chans is not None else int(sized[0][0]) if sized else 3
    merged["input_size"] = _chw(merged.get("input_size", DataConfig.input_size), c)
    return DataConfig(**{k: v for k, v in merged.items() if k in _FIELDS})


def _chw(value: Any, channels: int) -> tuple[int, int, int]:
    value = (value,) if isinstance(value, int) else tuple(int(v) for v in value)
    if not 1 <= len(value) <= 3:
        raise ValueError(f"input size must be N, (H, W) or (C, H, W), got {value!r}")
    h, w = value[-2:] if len(value) > 1 else value * 2  # N -> (N, N); (C, H, W) -> (H, W)
    return channels, h, w


def _clean(d: Mapping) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in _FIELDS and v is not None}


def _as_dict(source: Any) -> dict:
    if source is None:
        return {}
    if isinstance(source, DataConfig):
        return dataclasses.asdict(source)
    if isinstance(source, Mapping):
        return _clean(source)
    if isinstance(source, str):
        from mobilevision.models.registry import get_config

        return _as_dict(get_config(source).data_config())
    cfg = getattr(source, "data_config", None)
    if isinstance(cfg, DataConfig):
        return dataclasses.asdict(cfg)
    return _clean(getattr(source, "default_cfg", None) or {})


def create_transform(cfg: DataConfig, train: bool = False, **augment: Any):
    """PIL image -> normalised float tensor (C, H, W) at `cfg.size`.

    Eval: resize the short side to size / crop_pct, centre crop, scale to [0, 1], normalise. Train: the
    RandomResizedCrop preset of `data.transforms.train_transform`, with `augment` (scale, ratio, hflip,
    rand_augment, ...) passed on; its interpolation defaults to cfg's.
    """
    from .transforms import eval_transform, train_transform

    mean, std = cfg.channel_stats
    if train:
        if augment.get("interpolation") is None:
            augment["interpolation"] = cfg.interpolation
        return train_transform(cfg.size, mean, std, **augment)
    if augment:
        raise ValueError(f"eval transforms take no augmentation options, got {sorted(augment)}")
    return eval_transform(cfg.size, mean, std, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation)
