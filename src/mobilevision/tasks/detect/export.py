"""Export forms of an SSDLite detector (for `torch.export` / `torch.onnx.export(dynamo=True)`).

`RawDetector(model)`: images (B, 3, H, W) in [0, 1] -> boxes (B, A, 4) xyxy px, scores (B, A, C) softmax with
column 0 the background; no NMS (what TFLite / TensorRT users wire to their own NMS).
`NMSDetector(model)`: one image (1, 3, H, W) -> boxes (K, 4), scores (K,), labels (K,) after the same
per-class top-k, score threshold and class-wise NMS as `SSDLite.postprocess` (`torchvision.ops.nms`,
exported as ONNX NonMaxSuppression).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import nms

from .ssdlite import SSDLite


class RawDetector(nn.Module):
    """(B, 3, H, W) in [0, 1] -> decoded boxes (B, A, 4), per-class scores (B, A, C); carries the detector's
    `data_config` and `model_name` for the exporters' metadata."""

    def __init__(self, model: SSDLite) -> None:
        super().__init__()
        self.model = model
        self.data_config = model.data_config
        self.model_name = getattr(model, "model_name", None)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_raw(images)


class NMSDetector(RawDetector):
    """(1, 3, H, W) in [0, 1] -> boxes (K, 4), scores (K,), labels (K,) after `SSDLite.postprocess`'s selection."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        boxes, scores = super().forward(images)
        boxes, fg = boxes[0], scores[0, :, 1:]  # (A, 4), (A, C-1)
        k = min(m.topk_candidates, fg.shape[0])
        top_s, top_i = fg.topk(k, dim=0)  # (k, C-1)
        labels = torch.arange(1, fg.shape[1] + 1, device=fg.device).expand(k, -1).reshape(-1)
        top_s, top_i = top_s.reshape(-1), top_i.reshape(-1)
        # scores below the threshold sink to 0 and are cut after NMS (keeps shapes static until NMS)
        top_s = torch.where(top_s > m.score_thresh, top_s, torch.zeros_like(top_s))
        cand = boxes[top_i]  # (k * (C-1), 4)
        # class-wise NMS in one call: shift each class's boxes to its own region (torchvision's batched_nms trick)
        offsets = labels.to(cand) * (cand.max() + 1)
        keep = nms(cand + offsets[:, None], top_s, m.nms_thresh)[: m.detections_per_img]
        s = top_s[keep]
        valid = s > m.score_thresh
        return cand[keep][valid], s[valid], labels[keep][valid]
