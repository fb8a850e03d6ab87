"""COCO box mAP from predictions and targets held in memory (pycocotools' COCOeval; no temp files).

`coco_map(predictions, targets)` -> the twelve COCO numbers (`map`, `map_50`, `map_75`, `map_small`,
`map_medium`, `map_large`, `mar_1`, `mar_10`, `mar_100`, `mar_small`, `mar_medium`, `mar_large`) in [0, 1]
(-1 where COCO has no ground truth, e.g. no small boxes), plus `ap_per_class` {label: AP@[.5:.95]}.
"""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np
import torch

COCO_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
             "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def coco_map(predictions: Sequence[dict], targets: Sequence[dict], labels: Sequence[int] | None = None,
             class_names: Sequence[str] | None = None) -> dict:
    """predictions[i]: `boxes` (K, 4) xyxy px, `scores` (K,), `labels` (K,); targets[i]: `boxes` (N, 4) xyxy,
    `labels` (N,), for the same image i. `labels`: the category ids to evaluate (default: those of targets and
    predictions). `class_names[label - 1]` names `ap_per_class` keys when given."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise ModuleNotFoundError("COCO mAP needs pycocotools: pip install pycocotools", name="pycocotools") from err
    if len(predictions) != len(targets):
        raise ValueError(f"got {len(predictions)} predictions for {len(targets)} targets; one of each per image")
    images, gts, dts = [], [], []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        images.append({"id": i})
        for box, lab in zip(_np(t["boxes"]).reshape(-1, 4), _np(t["labels"]).reshape(-1)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": int(lab), "iscrowd": 0, "area": w * h,
                        "bbox": [float(box[0]), float(box[1]), w, h]})
        for box, score, lab in zip(_np(p["boxes"]).reshape(-1, 4), _np(p["scores"]).reshape(-1),
                                   _np(p["labels"]).reshape(-1)):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            dts.append({"id": len(dts) + 1, "image_id": i, "category_id": int(lab), "score": float(score),
                        "area": w * h, "bbox": [float(box[0]), float(box[1]), w, h], "iscrowd": 0})
    if labels is None:
        labels = {g["category_id"] for g in gts} | {d["category_id"] for d in dts}
    cat_ids = sorted(set(labels))
    result = {**dict.fromkeys(COCO_KEYS, 0.0), "ap_per_class": {}}
    if not gts:
        return {**result, **dict.fromkeys(COCO_KEYS, -1.0)}
    if not dts:
        return {**result, "ap_per_class": {_name(c, class_names): 0.0 for c in cat_ids}}
    with contextlib.redirect_stdout(io.StringIO()):
        gt, dt = COCO(), COCO()
        for coco, anns in ((gt, gts), (dt, dts)):
            coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cat_ids]}
            coco.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    result.update({k: float(v) for k, v in zip(COCO_KEYS, ev.stats)})
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T iou, R recall, K class), area all, maxDets 100
    for k, c in enumerate(cat_ids):
        p = precision[:, :, k]
        result["ap_per_class"][_name(c, class_names)] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return result


def _name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return str(label)


def mean_box_baseline(train, val, num_classes: int | None = None) -> dict:
    """The trivial detector every model must beat: the mean train box (xyxy px) with the most frequent train
    class, score 1, on every val image. `train` / `val` have `annotations(i) -> (boxes (N, 4), labels (N,))`
    and `len()`. Returns `coco_map`'s numbers."""
    from collections import Counter

    boxes, labels = [], []
    for i in range(len(train)):
        b, lab = train.annotations(i)
        boxes.append(np.asarray(b, np.float32).reshape(-1, 4))
        labels.extend(int(v) for v in lab)
    if not labels:
        raise ValueError("the training set has no boxes; a detector has nothing to learn")
    mean = torch.as_tensor(np.concatenate(boxes).mean(0))[None]
    top = Counter(labels).most_common(1)[0][0]
    preds, gts = [], []
    for i in range(len(val)):
        b, lab = val.annotations(i)
        gts.append({"boxes": torch.as_tensor(np.asarray(b, np.float32).reshape(-1, 4)), "labels": torch.as_tensor(lab)})
        preds.append({"boxes": mean, "scores": torch.ones(1), "labels": torch.tensor([top])})
    cats = list(range(1, num_classes)) if num_classes else None
    return coco_map(preds, gts, labels=cats)
