"""Dense backbones for the segmenters: `create_model(name, features_only=True)` plus output-stride dilation.

`dense_backbone(name, output_stride=16)` returns the library's `FeatureExtractor` with

- the classifier-only layers that the stage maps never use removed (MobileNet V2/EfficientNet `conv_head` /
  `bn2`, MobileNetV3's post-pool `conv_head`, MobileViT's `final_conv` when `drop_final_conv`), so counts
  and state dicts hold only what runs;
- every stride that would take the maps below `output_stride` turned into a dilation, as torchvision and
  ml-cvnets do (the converted conv and all later k x k convs get the grown dilation; padding keeps sizes).

NOTE(merge): the models helper is adding the same `output_stride` option to `create_model`; this module is
the segmentation issue's stand-in and can call that once it lands.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mobilevision.models.factory import create_model
from mobilevision.models.features import FeatureExtractor

OUTPUT_STRIDES = (8, 16, 32)


def dilate_(model: nn.Module, output_stride: int, name: str = "backbone") -> nn.Module:
    """Turn the strides of `model` (in module order) that would exceed `output_stride` into dilations.

    Works on backbones whose strided convs sit on one path in registration order (the inverted-residual
    family, MobileViT, MetaFormer); raises ValueError where a strided conv has an even kernel (ConvNeXt's
    2x2 patchify convs), which a dilation cannot stand in for.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    stride, dilation = 1, 1
    for mod_name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        s, k = m.stride[0], m.kernel_size[0]
        if s > 1:
            if stride * s <= output_stride:
                stride *= s
                continue
            if k % 2 == 0:
                raise ValueError(
                    f"{name} cannot run at output_stride {output_stride}: its strided conv {mod_name} has an even "
                    f"kernel ({k}x{k}); use output_stride=32 (e.g. with the 'fpn' head)")
            dilation *= s
            m.stride = (1, 1)
            m._native_stride = s
        if dilation > 1 and k > 1:
            m.dilation = (dilation, dilation)
            m.padding = ((k - 1) // 2 * dilation, (k - 1) // 2 * dilation)
    return model


def _trim_classifier_tail(model: nn.Module, drop_final_conv: bool) -> None:
    """Replace layers `forward_stages` never runs (or that the head should not see) by Identity."""
    for attr in ("conv_head", "bn2", "act2"):
        if isinstance(getattr(model, attr, None), nn.Module):
            setattr(model, attr, nn.Identity())
    if drop_final_conv and isinstance(getattr(model, "final_conv", None), nn.Module):
        model.final_conv = nn.Identity()
        last_stage = model.stages[-1]
        chs = [m.out_channels for m in last_stage.modules() if isinstance(m, nn.Conv2d)][-1]
        model.feature_info[-1] = dict(model.feature_info[-1], num_chs=chs, module=f"stages.{len(model.stages) - 1}")


def dense_backbone(name: str, *, output_stride: int = 32, out_indices: Sequence[int] | None = None,
                   drop_final_conv: bool = False, in_chans: int | None = None, drop_path_rate: float = 0.0,
                   **overrides) -> FeatureExtractor:
    """A registered classifier as a feature extractor at `output_stride` (8, 16 or 32).

    forward: (B, C, H, W) -> list of (B, C_i, ~H / r_i, ~W / r_i), r_i = min(native reduction, output_stride),
    as listed in `.feature_info`.
    """
    model = create_model(name, num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate, **overrides)
    if not hasattr(model, "forward_stages") or not getattr(model, "feature_info", None):
        raise ValueError(f"model {name!r} has no stage maps (feature_info) to build a segmenter on")
    _trim_classifier_tail(model, drop_final_conv)
    if output_stride != 32:
        dilate_(model, output_stride, name)
    model.feature_info = [dict(f, reduction=min(f["reduction"], output_stride)) for f in model.feature_info]
    extractor = FeatureExtractor(model, out_indices)
    if isinstance(getattr(model, "head", None), nn.Module):  # after reset_classifier, which may reach into it
        model.head = nn.Identity()
    extractor.output_stride = output_stride
    return extractor


def check_reductions(backbone: FeatureExtractor, size: int = 64) -> None:
    """Raise ValueError when the maps' sizes do not follow `feature_info`'s reductions (a dilation that did not
    take)."""
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        maps = backbone(torch.zeros(1, backbone.data_config.input_size[0], size, size))
    backbone.train(was)
    for f, m in zip(backbone.feature_info, maps):
        want = -(-size // f["reduction"])
        if abs(m.shape[-1] - want) > 1:
            raise ValueError(f"backbone map {f['module']} is {m.shape[-1]} px for a {size} px input, expected "
                             f"~{want} (reduction {f['reduction']}): this backbone does not support that output_stride")


class BlockTaps(FeatureExtractor):
    """An inverted-residual backbone (`forward_stem` + `blocks` of stages) tapped after chosen blocks.

    torchvision's MobileNetV3 segmenters read the stride-8 map right after the first stride-8 block
    (`features[4]`, i.e. our `blocks.2.0`), not at the end of that stage. `taps`: (stage, block) pairs in
    forward order. forward: (B, C, H, W) -> one map per tap.
    """

    def __init__(self, extractor: FeatureExtractor, taps: Sequence[tuple[int, int]],
                 feature_info: list[dict]) -> None:
        nn.Module.__init__(self)
        self.model = extractor.model
        self.out_indices = list(range(len(taps)))
        self.taps = [tuple(t) for t in taps]
        self.feature_info = feature_info
        self.data_config = extractor.data_config
        self.output_stride = getattr(extractor, "output_stride", 32)
        self._last = max(self.taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.model.forward_stem(x)
        found: dict[tuple[int, int], torch.Tensor] = {}
        for s, stage in enumerate(self.model.blocks):
            for b, block in enumerate(stage):
                x = block(x)
                if (s, b) in self.taps:
                    found[(s, b)] = x
                if (s, b) == self._last:
                    return [found[self.taps[i]] for i in self.out_indices]
        raise RuntimeError("unreachable: every tap lies inside the backbone")


def tap_blocks(extractor: FeatureExtractor, modules: Sequence[str]) -> BlockTaps:
    """`BlockTaps` at module names like 'blocks.2.0' (a block) or 'blocks.6' (a stage's last block)."""
    model = extractor.model
    if not (hasattr(model, "forward_stem") and isinstance(getattr(model, "blocks", None), nn.Sequential)):
        raise ValueError(f"block taps {list(modules)} need an inverted-residual backbone (stem + blocks)")
    taps, info = [], []
    for name in modules:
        parts = name.split(".")
        if parts[0] != "blocks" or len(parts) not in (2, 3):
            raise ValueError(f"block tap {name!r} must look like 'blocks.S' or 'blocks.S.B'")
        s = int(parts[1])
        b = int(parts[2]) if len(parts) == 3 else len(model.blocks[s]) - 1
        block = model.blocks[s][b]
        chs = [m.out_channels for m in block.modules() if isinstance(m, nn.Conv2d)][-1]
        # reduction: the native stride up to that block, capped by the output stride
        red = 2
        for si, stage in enumerate(model.blocks):
            for bi, blk in enumerate(stage):
                strides = [getattr(m, "_native_stride", m.stride[0]) for m in blk.modules() if isinstance(m, nn.Conv2d)]
                red *= max(strides)
                if (si, bi) == (s, b):
                    break
            else:
                continue
            break
        info.append(dict(num_chs=chs, reduction=min(red, getattr(extractor, "output_stride", 32)), module=name))
        taps.append((s, b))
    return BlockTaps(extractor, taps, info)
