"""SegmentTask: the segmentation task for the one training loop (`train.engine.fit`).

Data: 'digits-segment', a VOC folder or an images/ + masks/ folder (see `data.segmentation`). Model: a
registered segmenter preset (`deeplabv3_mobilevit_xxs`, ...) or 'HEAD:BACKBONE' (`deeplabv3:mobilenetv2_100`).
Loss: cross-entropy over pixels, label 255 ignored, plus `aux_weight` x the auxiliary head's loss where the
model has one. Metric: mIoU (confusion matrix summed over DDP ranks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mobilevision.layers.helpers import check_choice, eval_mode
from mobilevision.tasks.base import Task, TaskData

from .metrics import IGNORE_INDEX, ConfusionMatrix, stride_oracle


def _recipe_get(recipe: Any, name: str, default: Any = None) -> Any:
    value = getattr(recipe, name, None)  # recipe may be None
    return default if value is None else value


CLASS_WEIGHTS = ("none", "enet")


class SegmentTask(Task):
    """`--task segment`. `model`: preset name or 'HEAD:BACKBONE' (None: the recipe's `model`); `aux_weight`: weight
    of the aux head's loss (torchvision: 0.5 in its references, 0.4 in the DeepLab papers' PSP-style aux)."""

    name = "segment"
    metric = "miou"

    @dataclass
    class Options:
        """`task_options` of a segmentation recipe: aux_weight; num_classes (None = from the data); eval_size
        (None = full images); num_scenes ({"train": N, "val": M} for digits-segment); scene_size (digits-segment's
        side in px, digits scaled with it; None = the crop size): scenes larger than the crop train on crops of
        them and evaluate whole; class_weights: "none" or "enet" (each batch weights class k by
        1 / ln(1.1 + its pixel share), ENet's weighting as ml-cvnets has it, for rare classes such as strokes);
        redraw: digits-segment's train scenes drawn anew on every read (see `DigitsScenes`)."""

        aux_weight: float = 0.4
        num_classes: int | None = None
        eval_size: int | None = None
        num_scenes: dict = field(default_factory=dict)
        scene_size: int | None = None
        class_weights: str = "none"
        redraw: bool = False

        def validate(self) -> None:
            check_choice(self.class_weights, CLASS_WEIGHTS, "task_options.class_weights")

    def __init__(self, model_name: str | None = None, options: dict | None = None, **keywords: Any) -> None:
        """`SegmentTask(NAME, aux_weight=0.5)` is `SegmentTask(NAME, {"aux_weight": 0.5})`."""
        super().__init__(model_name, {**(options or {}), **keywords})
        self.num_classes = self.options.num_classes  # then the data's
        self.labels: list[str] = []

    # ------------------------------------------------------------------------------------------ data
    def _model_name(self, recipe: Any) -> str:
        name = self.model_name or _recipe_get(recipe, "model")
        if not name:
            raise ValueError("segment task needs a model: a preset (e.g. deeplabv3_mobilevit_xxs) or HEAD:BACKBONE")
        return name

    def build_data(self, data: str, recipe: Any) -> TaskData:
        from mobilevision.data.config import resolve_data_config
        from mobilevision.data.segmentation import (SegmentationView, open_segmentation, pad_collate,
                                                    segmentation_transform)

        cfg = resolve_data_config(self._model_name(recipe).split(":", 1)[-1])  # a preset or HEAD:BACKBONE's backbone
        o = self.options
        crop = int(_recipe_get(recipe, "input_size", cfg.size[0]))
        mean, std = cfg.channel_stats
        scale = tuple(_recipe_get(recipe, "scale", (0.5, 2.0)))
        if scale[0] < 0.25:  # a classification recipe's RandomResizedCrop area range, not a resize range
            scale = (0.5, 2.0)
        scene = int(o.scene_size or crop)
        if o.redraw and data != "digits-segment":
            raise ValueError("task_options.redraw applies to the built-in digits-segment scenes only; drop it")
        train_src = open_segmentation(data, "train", self.num_classes, image_size=scene,
                                      num_scenes=o.num_scenes.get("train"), redraw=bool(o.redraw))
        val_src = open_segmentation(data, "val", train_src.num_classes, image_size=scene,
                                    num_scenes=o.num_scenes.get("val"))
        train_tf = segmentation_transform(mean, std, train=True, crop_size=crop, scale=scale,
                                          hflip=float(_recipe_get(recipe, "hflip", 0.5)))
        eval_tf = segmentation_transform(mean, std, train=False, eval_size=o.eval_size)
        skipped = {f"{split}/{reason}": n for split, src in (("train", train_src), ("val", val_src))
                   for reason, n in (getattr(src, "skipped", None) or {}).items()}
        self.num_classes = train_src.num_classes
        self.labels = list(train_src.classes)
        self._val_source = val_src
        info = {"num_classes": train_src.num_classes, "labels": list(train_src.classes), "crop_size": crop,
                "eval_size": o.eval_size or (scene if data == "digits-segment" else crop)}
        if val_src is not None:  # the all-background predictor's mIoU on the masks as stored
            masks = (torch.as_tensor(val_src.load(i)[1], dtype=torch.int64) for i in range(len(val_src)))
            info["baseline_miou"] = baseline_miou(((None, m) for m in masks), train_src.num_classes)["miou"]
        val = SegmentationView(val_src, eval_tf) if val_src is not None else None
        return TaskData(train=SegmentationView(train_src, train_tf), val=val, collate=pad_collate, skipped=skipped,
                        info=info)

    # ----------------------------------------------------------------------------------------- model
    def build_model(self, recipe: Any, data: TaskData) -> nn.Module:
        from mobilevision.models.factory import create_model

        from .model import create_segmenter

        name = self._model_name(recipe)
        num_classes = int(data.info["num_classes"])
        kwargs = dict(_recipe_get(recipe, "model_kwargs", {}))
        dpr = float(_recipe_get(recipe, "drop_path_rate", 0.0))
        if ":" in name:
            head, backbone = name.split(":", 1)
            model = create_segmenter(head, backbone, num_classes, drop_path_rate=dpr, **kwargs)
        else:
            model = create_model(name, num_classes=num_classes, drop_path_rate=dpr, **kwargs)
        model.labels = list(data.info.get("labels") or [])
        # the size it evaluates digits-segment scenes at (else its crop) is the one config.json keeps
        size = int(data.info.get("eval_size") or data.info["crop_size"])
        model.data_config = model.data_config.replace(input_size=(model.data_config.input_size[0], size, size))
        stride = getattr(model, "logit_stride", None)
        val_src = getattr(self, "_val_source", None)
        if stride and val_src is not None:  # what this output stride allows on these masks (summary.json)
            masks = (val_src.load(i)[1] for i in range(len(val_src)))
            data.info["oracle_miou"] = stride_oracle(masks, num_classes, int(stride))["miou"]
            data.info["logit_stride"] = int(stride)
        return model

    # ------------------------------------------------------------------------------------------ steps
    def loss(self, out: dict[str, torch.Tensor], masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pixel cross-entropy (255 ignored) of `out` (+ aux_weight x aux): {'loss', 'loss_out'[, 'loss_aux']}."""
        weight = enet_weights(masks, out["out"].shape[1]) if self.options.class_weights == "enet" else None
        main = F.cross_entropy(out["out"].float(), masks, weight=weight, ignore_index=IGNORE_INDEX)
        terms = {"loss": main, "loss_out": main.detach()}
        if "aux" in out and self.options.aux_weight > 0:
            aux = F.cross_entropy(out["aux"].float(), masks, weight=weight, ignore_index=IGNORE_INDEX)
            terms["loss"] = main + float(self.options.aux_weight) * aux
            terms["loss_aux"] = aux.detach()
        return terms

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        images, masks = (t.to(device, non_blocking=True) for t in batch)
        return self.loss(model(images), masks)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        cm = None
        with eval_mode(model):
            for images, masks in loader:
                logits = model(images.to(device))["out"]
                if cm is None:
                    cm = ConfusionMatrix(logits.shape[1], device=device)
                cm.update(logits.argmax(1), masks.to(device))
        if cm is None:
            raise ValueError("the validation loader is empty; segment evaluation needs at least one image")
        cm.all_reduce()
        res = cm.compute()
        names = self.labels if len(self.labels) == cm.num_classes else [str(i) for i in range(cm.num_classes)]
        out = {"miou": res["miou"], "pixel_acc": res["pixel_acc"], "mean_acc": res["mean_acc"]}
        out.update({f"iou_{n}": v for n, v in zip(names, res["iou"])})
        return out

    # ------------------------------------------------------------------------------------------- save
    def save(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        config = getattr(getattr(model, "module", model), "segmenter_config", None)
        self.save_with_info(model, directory, {"segmenter": config, **(extra or {})}, labels=self.labels)


def enet_weights(masks: torch.Tensor, num_classes: int, c: float = 1.1) -> torch.Tensor:
    """(num_classes,) loss weights 1 / ln(c + p_k), p_k the share of class k among the labelled pixels of
    `masks` (ENet's weighting, Paszke et al. 2016, with ml-cvnets' c = 1.1; ENet's 1.02 weighs rare classes 4x
    more): about 1.4 for a class covering the image, 10.5 for a rare one."""
    labelled = masks[masks != IGNORE_INDEX]
    share = torch.bincount(labelled.flatten(), minlength=num_classes)[:num_classes].float() / max(1, labelled.numel())
    return 1.0 / torch.log(c + share)


def baseline_miou(loader: Any, num_classes: int) -> dict[str, float]:
    """The all-background predictor's metrics over `loader` (what a model must beat)."""
    cm = ConfusionMatrix(num_classes)
    for _, masks in loader:
        cm.update(torch.zeros_like(masks), masks)
    res = cm.compute()
    return {"miou": res["miou"], "pixel_acc": res["pixel_acc"]}
