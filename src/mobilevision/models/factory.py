"""create_model: build a registered model, optionally with weights."""
from __future__ import annotations

import os
from typing import Sequence

from torch import nn

from mobilevision.data.config import resolve_data_config

from .checkpoint import load_checkpoint, read_config
from .features import FeatureExtractor
from .hub import download_hf, download_url
from .registry import get_config


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    out_modules: Sequence[str] | None = None,
    head_conv: bool = False,
    output_stride: int = 32,
    feature_location: str = "",
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **overrides,
) -> nn.Module:
    """Build a registered model, optionally with weights.

    `checkpoint_path` takes a file (.safetensors / .pth / .pt / .bin, in this library's, timm's or the
    official layout) or a directory written by `save_pretrained`; its `config.json` supplies num_classes,
    in_chans and overrides that were not given here. Weights whose classifier has another class count than
    the model are an error unless `num_classes` is given here (then the head is new: fine-tuning).
    `features_only=True` returns a `FeatureExtractor` whose forward gives the stage maps chosen by
    `out_indices` (or the blocks named by `out_modules`; `head_conv`: the last map after the pre-pool head
    conv), with the layers none of them uses removed. `output_stride` (8 | 16 | 32) dilates the last stages
    instead of striding them; `feature_location="expansion"` taps the inverted-residual families' expansion
    convs (SSDLite); both reach the family's builder only when not the default, so families without them raise
    a clear ValueError.
    """
    cfg = get_config(name)
    if (out_modules or head_conv) and not features_only:
        raise ValueError("out_modules and head_conv choose feature maps: pass features_only=True with them")
    new_head = num_classes is not None  # the caller asked for this head, whatever the weights hold
    saved = read_config(checkpoint_path) if checkpoint_path is not None else None
    if saved:
        saved_name = saved.get("model")
        if saved_name and saved_name != name:
            raise ValueError(
                f"checkpoint {checkpoint_path} was saved from model {saved_name!r}, not {name!r}; "
                f"use create_model({saved_name!r}, checkpoint_path=...)"
            )
        num_classes = saved.get("num_classes") if num_classes is None else num_classes
        in_chans = saved.get("in_chans") if in_chans is None else in_chans
        overrides = {**saved.get("overrides", {}), **overrides}
    num_classes = cfg.num_classes if num_classes is None else int(num_classes)  # 1000, or a task preset's (21, 91)
    in_chans = 3 if in_chans is None else int(in_chans)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 = pooled features), got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    for arg, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{arg} must be in [0, 1), got {value}")

    if output_stride != 32:
        overrides["output_stride"] = output_stride
    if feature_location:
        overrides["feature_location"] = feature_location
    kwargs = {**cfg.kwargs, **overrides}
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
        load_checkpoint(model, checkpoint_path, new_head=new_head)
    elif pretrained:
        load_checkpoint(model, _fetch_pretrained(name), new_head=new_head)

    if features_only:
        return FeatureExtractor(model, out_indices, out_modules=out_modules, head_conv=head_conv)

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
