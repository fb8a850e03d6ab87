"""The detection task of the one training loop: SSDLite presets or SSDLite on any backbone, COCO mAP.

`DetectTask(NAME)`: NAME is a registered `ssdlite*` / `mobileformer_detr_*` preset or any backbone name (then
`create_detector("ssdlite", backbone=NAME)`). Batches are `(images (B, 3, S, S) in [0, 1], targets)` from
`data.detection.collate`; `evaluate` returns the twelve COCO numbers (`map_50` picks best/) plus
`ap/<class>` per class, computed on boxes scaled back to each file's own size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilevision.layers.helpers import eval_mode
from mobilevision.models.factory import create_model
from mobilevision.models.registry import get_config
from mobilevision.tasks.base import Task, TaskData
from .metrics import COCO_KEYS, coco_map, mean_box_baseline
from .ssdlite import create_detector

PRESET_FAMILIES = ("ssdlite", "mobileformer_detr")  # registered detectors: create_model builds them


@dataclass
class DetectOptions:
    """`task_options` of a detection recipe. photometric: SSD's photometric distortion (None = the data set's
    default: on for COCO data, off for digits-detect); iou_crop: SSD's random IoU crop; zoom_out: SSD's zoom-out
    up to this factor (1 = off); detector: extra `create_detector` arguments; redraw: digits-detect's train scenes
    drawn anew on every read (a new layout of the same train scans each epoch, see `DigitsScenes`)."""

    iou_crop: bool = True
    photometric: bool | None = None
    zoom_out: float = 1.0
    detector: dict = field(default_factory=dict)
    redraw: bool = False


class DetectTask(Task):
    name = "detect"
    metric = "map_50"
    Options = DetectOptions

    def __init__(self, model_name: str | None = None, options: dict | None = None, **keywords: Any) -> None:
        """`DetectTask(NAME, iou_crop=False)` is `DetectTask(NAME, {"iou_crop": False})`; keywords that are not
        options go to the detector."""
        known = set(DetectOptions.__dataclass_fields__)
        opts = {**(options or {}), **{k: v for k, v in keywords.items() if k in known}}
        extra = {k: v for k, v in keywords.items() if k not in known}
        if extra:
            opts["detector"] = {**opts.get("detector", {}), **extra}
        super().__init__(model_name, opts)

    # -- data
    def build_data(self, data: str, recipe: Any) -> TaskData:
        from mobilevision.data.detection import collate, open_detection

        size, o = self._size(recipe), self.options
        augment = {"iou_crop": o.iou_crop, "photometric": o.photometric, "zoom_out": o.zoom_out}
        hflip = getattr(recipe, "hflip", None)
        if hflip is not None and data != "digits-detect":
            augment["hflip"] = hflip > 0
        if o.redraw and data != "digits-detect":
            raise ValueError("task_options.redraw applies to the built-in digits-detect scenes only; drop it")
        train, val, classes, skipped = open_detection(data, size, augment=augment, redraw=bool(o.redraw),
                                                      verify_images=getattr(recipe, "verify_images", True))
        info = {"num_classes": len(classes) + 1, "labels": list(classes), "input_size": size}
        if val is not None:  # the trivial detector, written to summary.json beside the model's numbers
            base = mean_box_baseline(train, val, len(classes) + 1)
            info.update(baseline_map=float(base["map"]), baseline_map_50=float(base["map_50"]))
        return TaskData(train, val, collate, skipped, info)

    def _size(self, recipe: Any) -> int:
        size = getattr(recipe, "input_size", None)
        if size:
            return int(size)
        if self.model_name:
            cfg = get_config(self.model_name)
            if cfg.family in PRESET_FAMILIES:
                return cfg.input_size[1]
        return 320

    # -- model
    def build_model(self, recipe: Any, data: TaskData) -> nn.Module:
        name = self.model_name or getattr(recipe, "model", None)
        if not name:
            raise ValueError("the detect task needs a model: an ssdlite* preset (mobilevision models 'ssdlite*') "
                             "or any backbone name")
        num_classes = int(data.info["num_classes"])
        kw = {**dict(getattr(recipe, "model_kwargs", None) or {}), **self.options.detector}
        dpr = float(getattr(recipe, "drop_path_rate", 0.0) or 0.0)
        if get_config(name).family in PRESET_FAMILIES:
            model = create_model(name, num_classes=num_classes, drop_path_rate=dpr, **kw)
        else:
            size = int(data.info.get("input_size", 320))
            model = create_detector("ssdlite", backbone=name, num_classes=num_classes, image_size=size,
                                    backbone_kwargs={"drop_path_rate": dpr} if dpr else None, **kw)
        model.labels = list(data.info.get("labels", []))
        # the resolution it trains and is evaluated at is the one config.json keeps (eval / predict / export)
        size = int(data.info.get("input_size", model.data_config.size[0]))
        model.data_config = model.data_config.replace(input_size=(3, size, size))
        return model

    # -- steps
    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        images, targets = batch
        images = images.to(device, non_blocking=True)
        targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
        losses = model(images, targets)
        return {"loss": losses["bbox_regression"] + losses["classification"], **losses}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        preds, gts = [], []
        with eval_mode(model):
            for images, targets in loader:
                out = model(images.to(device))
                h, w = images.shape[-2:]
                for p, t in zip(out, targets):
                    h0, w0 = t.get("orig_size", (h, w))
                    scale = torch.tensor([w0 / w, h0 / h, w0 / w, h0 / h])
                    preds.append({"boxes": p["boxes"].cpu() * scale, "scores": p["scores"].cpu(),
                                  "labels": p["labels"].cpu()})
                    gts.append({"boxes": t["boxes"].cpu() * scale, "labels": t["labels"].cpu()})
        preds, gts = _gather(preds), _gather(gts)
        labels = getattr(model, "labels", None) or None
        num_classes = int(getattr(model, "num_classes", 0))
        cats = list(range(1, num_classes)) if num_classes > 1 else None
        res = coco_map(preds, gts, labels=cats, class_names=labels)
        out = {k: float(res[k]) for k in COCO_KEYS}
        out.update({f"ap/{k}": float(v) for k, v in res["ap_per_class"].items()})
        return out

    def save(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        detector = getattr(getattr(model, "module", model), "detector_config", None)
        self.save_with_info(model, directory, {**(extra or {}), "task": "detect"}, detector=detector or None)


def _gather(items: list) -> list:
    """All ranks' items, in rank order (a no-op without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]
