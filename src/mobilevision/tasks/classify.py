"""Image classification: the built-in digits set or an ImageFolder (DIR/train/<class>/..., DIR/val/<class>/...),
the multi-scale variable-batch sampler, MixUp / CutMix, label smoothing; top-1 / top-5."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import EvalView, TrainView, build_mixing, open_datasets
from ..data.config import create_transform, resolve_data_config
from ..models.checkpoint import save_pretrained
from ..train.distributed import all_reduce_sum
from .base import Task, TaskData

logger = logging.getLogger("mobilevision.train")


@torch.no_grad()
def evaluate_classifier(model: Callable, loader, device: torch.device | str = "cpu") -> dict[str, float]:
    """top-1 / top-5 (%) and mean cross-entropy over every (images (B, C, H, W), labels (B,)) batch of `loader`,
    summed over DDP ranks when a process group is up. `model` is any callable returning logits (B, K): an
    nn.Module (put in eval mode here), a compiled model or an onnxruntime wrapper (numpy outputs are fine)."""
    if isinstance(model, nn.Module):
        model.eval()
    device = torch.device(device)
    c1 = c5 = loss = n = 0.0
    for x, y in loader:
        x, y = x.to(device), torch.as_tensor(y).to(device)
        out = torch.as_tensor(model(x)).to(device).float()  # (B, K)
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        top = out.topk(min(5, out.shape[1]), dim=1).indices  # (B, k)
        hit = top.eq(y[:, None])
        c1 += float(hit[:, 0].sum())
        c5 += float(hit.any(dim=1).sum())
        n += len(y)
    c1, c5, loss, n = all_reduce_sum([c1, c5, loss, n])
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "loss": loss / max(n, 1)}


class ClassifyTask(Task):
    """Supervised classification of `model_name` (any registered classifier)."""

    name = "classify"
    metric = "top1"

    def build_data(self, data: str, recipe: Any) -> TaskData:
        # the model's preprocessing, with the recipe's input_size / crop_pct when set
        cfg = resolve_data_config(self.model_name, input_size=recipe.input_size, crop_pct=recipe.crop_pct)
        size = cfg.size[0]
        sizes = [int(s) for s in recipe.scales] if recipe.multi_scale else [size]
        train_src, val_src = open_datasets(data, image_size=max(sizes + [size]), verify=recipe.verify_images)
        classes = list(train_src.classes)
        if len(classes) == 1:
            logger.warning("%s has a single class (%s): every prediction is that class and top-1 is 100 %% by "
                           "construction; add at least one more class folder", data, classes[0])
        self.cfg, self.classes = cfg, classes
        self.saved_info = {"data": data, "recipe": recipe.name, **cfg.to_dict(), "input_size": size}
        augment = dict(scale=recipe.scale, ratio=recipe.ratio, hflip=recipe.hflip,
                       interpolation=recipe.train_interpolation, rand_augment=recipe.rand_augment,
                       auto_augment=recipe.auto_augment, color_jitter=recipe.color_jitter,
                       random_erase=recipe.random_erase)

        def transform_for(h: int, w: int):
            return create_transform(cfg.replace(input_size=(cfg.input_size[0], h, w)), train=True, **augment)

        skipped = len(train_src.skipped) + len(val_src.skipped)
        return TaskData(TrainView(train_src, transform_for), EvalView(val_src, create_transform(cfg)),
                        skipped={"unreadable": skipped} if skipped else {},
                        info={"classes": len(classes), "labels": classes, "input_size": size},
                        sizes=sizes, base_size=recipe.base_scale if recipe.multi_scale else size)

    def build_model(self, recipe: Any, data: TaskData) -> nn.Module:
        import mobilevision

        model = mobilevision.create_model(self.model_name, num_classes=len(self.classes), drop_rate=recipe.drop_rate,
                                          drop_path_rate=recipe.drop_path_rate, **recipe.model_kwargs)
        # saved with the weights, so eval / predict / export preprocess as this run evaluated
        model.data_config = self.cfg.replace(input_size=(model.in_chans, *self.cfg.size))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.mixing = build_mixing(recipe.mixup, recipe.cutmix, len(self.classes), recipe.mix_prob,
                                   recipe.switch_prob)
        return model

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        x, y = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if self.mixing is not None:
            x, y = self.mixing(x, y)
        return {"loss": self.criterion(model(x), y)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        return evaluate_classifier(model, loader, device)

    def save(self, model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
        save_pretrained(model, directory, labels=self.classes, extra={"train": self.saved_info, **extra})
