"""create_model: build a registered model, optionally with weights."""
from __future__ import annotations

import os
from typing import Sequence

from torch import nn

from .checkpoint import download_hf, download_url, load_checkpoint, read_config
from .features import FeatureExtractor
from .registry import get_config
from mobilevision.data.config import resolve_data_config


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **overrides,
) -> nn.Module:
    """Build a registered model, optionally with weights.

    `checkpoint_path` takes a file (.safetensors / .pth / .pt / .bin, in this library's, timm's or the
    official layout) or a directory written by `save_pretrained`; its `config.json` supplies num_classes,
    in_chans and overrides that were not given here. `features_only=True` returns a `FeatureExtractor`
    whose forward gives the stage maps chosen by `out_indices`.
    """
    cfg = get_config(name)
    saved = read_config(checkpoint_path) if checkpoint_path is not None else None
    if saved:
        saved_name = saved.get("model")
        if saved_name and saved_name != name:
            raise ValueError(
                f"checkpoint {checkpoint_path} was saved from model {saved_name!r}, not {name!r}; "
                f"use create_model({saved_name!r}, checkpoint_path=...)"
            )
        if num_classes is None:
            num_classes = saved.get("num_classes")
        if in_chans is None:
            in_chans = saved.get("in_chans")
        overrides = {**saved.get("overrides", {}), **overrides}
    # task presets (detectors) carry their own default class count in kwargs
    num_classes = int(cfg.kwargs.get("num_classes", 1000)) if num_classes is None else int(num_classes)
    in_chans = 3 if in_chans is None else int(in_chans)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 = pooled features), got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    for arg, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{arg} must be in [0, 1), got {value}")

    kwargs = {k: v for k, v in {**cfg.kwargs, **overrides}.items() if k != "num_classes"}
    try:
        model = cfg.builder(
            num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate, **kwargs
        )
    except TypeError as err:
        raise ValueError(f"bad argument for model {name!r}: {err}") from None
    model.model_name = name
    model.in_chans = in_chans
    model.creation_overrides = dict(overrides)
    model.checkpoint_filter = cfg.checkpoint_filter
    # the registry's preprocessing, then the one the weights were trained / evaluated with
    stored = (saved or {}).get("data_config") or (saved or {}).get("default_cfg")
    model.data_config = resolve_data_config(cfg.data_config(), saved=stored, in_chans=in_chans)
    if saved and saved.get("labels"):
        model.labels = list(saved["labels"])

    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    elif pretrained:
        load_checkpoint(model, _fetch_pretrained(name))

    if features_only:
        return FeatureExtractor(model, out_indices)
    return model


def _fetch_pretrained(name: str):
    """Path of the cached published weights of `name`, downloading them if needed."""
    src = get_config(name).weights
    if src.hf_hub_id:
        return download_hf(src.hf_hub_id, src.filename or "model.safetensors")
    if src.url:
        return download_url(src.url, src.sha256, src.filename)
    reason = src.note or "no public weights are known for it"
    raise ValueError(f"model {name!r} has no pretrained weights to fetch: {reason}. Pass checkpoint_path=PATH instead.")
