"""Dense backbones for SSDLite: a classifier of the zoo cut into the two maps the detector's heads start from.

`DetectionBackbone(body, kind)` returns `[C4, C5]`:
- "expansion" (inverted-residual families, MobileNetV2/V3 papers section 6.x): C4 = the 1x1 expansion output
  of the first stride-32 block (OS16), C5 = the last map before pooling (OS32).
- "stages" (MobileViT in cvnets' SSD): C4 = the stage-4 output (OS16), C5 = the stage-5 output before the
  final 1x1 expansion conv (dropped).
- "last2" (any other registered backbone): the last two maps of its `feature_info`.

`torchvision_mobilenet_v3_large` builds torchvision's detection form of MobileNetV3-Large from our
inverted-residual builder: BatchNorm eps 1e-3 and the "reduced tail" (last stage's channels halved).
NOTE: isolated here until `create_model(..., features_only=True, feature_location="expansion")` and the
models package's torchvision-form option land; the detector only needs `body` to be our `MobileNet`.
"""
from __future__ import annotations

import torch
from torch import nn

from mobilevision.models.features import FeatureExtractor
from mobilevision.models.mobilenet import (
    MOBILENET_V3_LARGE, Bneck, HeadSpec, MobileNet, _bneck_specs,
)
from mobilevision.models.inverted_residual import BlockSpec, InvertedResidual, SERule

BACKBONE_KINDS = ("expansion", "stages", "last2")


def torchvision_mobilenet_v3_large(reduced_tail: bool = True, bn_eps: float = 1e-3, in_chans: int = 3) -> MobileNet:
    """MobileNetV3-Large as torchvision builds it for SSDLite (no classifier)."""
    table = [list(stage) for stage in MOBILENET_V3_LARGE]
    last = 960
    if reduced_tail:  # MobileNetV3 paper Table 6 dagger: C4-C5 channels halved
        table[-1] = [Bneck(r.k, r.exp if i == 0 else r.exp // 2, r.out // 2, r.se, r.nl, r.s)
                     for i, r in enumerate(table[-1])]
        last = 480
    stages = _bneck_specs(table, 16, minimal=False) + [[BlockSpec("cn", 1, 1, last)]]
    return MobileNet(stages, stem_chs=16, head=HeadSpec("post_pool", 1280, bias=True), act="hard_swish",
                     se_rule=SERule("divisible", act="relu", gate="hard_sigmoid"), num_classes=0,
                     in_chans=in_chans, bn_eps=bn_eps)


def _strided_32_block(body: MobileNet) -> tuple[int, int]:
    """(stage, block) of the block that takes the net from stride 16 to 32."""
    reduction = 2
    for s, stage in enumerate(body.blocks):
        for b, block in enumerate(stage):
            conv = block.conv_dw if hasattr(block, "conv_dw") else block.conv
            reduction *= conv.stride[0]
            if reduction == 32:
                return s, b
    raise ValueError("backbone never reaches stride 32; SSDLite needs an OS16 and an OS32 map")


class DetectionBackbone(nn.Module):
    """(B, 3, H, W) normalised images -> [C4 (B, c4, H/16, W/16), C5 (B, c5, H/32, W/32)].

    `body` is a zoo classifier; its classifier (and what only feeds it) is removed so the parameter count is
    the detector's. `out_channels` lists the two maps' channels.
    """

    def __init__(self, body: nn.Module, kind: str) -> None:
        super().__init__()
        if kind not in BACKBONE_KINDS:
            raise ValueError(f"backbone kind {kind!r} not accepted; use one of {BACKBONE_KINDS}")
        self.kind = kind
        if kind == "expansion":
            if not isinstance(body, MobileNet):
                raise ValueError(f"feature_location='expansion' needs an inverted-residual backbone, "
                                 f"got {type(body).__name__}")
            body.reset_classifier(0)
            if body.head_kind == "post_pool":  # the conv after pooling only feeds the classifier
                body.conv_head, body.act2 = nn.Identity(), nn.Identity()
            self.tap = _strided_32_block(body)
        elif kind == "stages":
            body.reset_classifier(0)
            body.final_conv = nn.Identity()  # cvnets' SSD drops the 1x1 expansion before the classifier
            body.head = nn.Identity()
        else:
            n = len(body.feature_info)
            if n < 2:
                raise ValueError(f"{type(body).__name__} exposes {n} feature map(s); SSDLite needs two")
            body = FeatureExtractor(body, out_indices=[n - 2, n - 1])
            red = body.reductions()
            if red[1] != 2 * red[0]:
                raise ValueError(f"the last two maps of this backbone have reductions {red}; SSDLite needs OS16 + OS32")
            self.out_channels = body.channels()
        self.body = body
        if kind != "last2":
            self.out_channels = self._probe_channels()

    def _probe_channels(self) -> list[int]:
        """Channels of the two maps, read off one tiny forward (eval mode, so BN statistics stay)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            maps = self.forward(torch.zeros(1, 3, 64, 64))
        self.train(was_training)
        return [int(m.shape[1]) for m in maps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "last2":
            return self.body(x)
        if self.kind == "stages":
            x = self.body.stem(x)
            stages = self.body.stages
            for stage in stages[:-1]:
                x = stage(x)
            c4 = x  # (B, c4, H/16, W/16)
            return [c4, stages[-1](x)]  # C5: (B, c5, H/32, W/32)
        body = self.body
        x = body.forward_stem(x)
        c4 = x
        for s, stage in enumerate(body.blocks):
            for b, block in enumerate(stage):
                if (s, b) != self.tap:
                    x = block(x)
                elif isinstance(block, InvertedResidual):
                    c4 = block.act1(block.bn1(block.conv_pw(x)))  # (B, hidden, H/16, W/16)
                    x = block.act2(block.bn2(block.conv_dw(c4)))  # strided: no shortcut
                    x = block.bn3(block.conv_pwl(block.se(x)))
                else:
                    c4 = x
                    x = block(x)
        if body.head_kind == "pre_pool":
            x = body.act2(body.bn2(body.conv_head(x)))  # (B, head_width, H/32, W/32)
        return [c4, x]
