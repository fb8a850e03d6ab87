"""DetectTask through the Task protocol: train steps learn, evaluate gives COCO numbers, save restores.

Run as a script it is the local driver that trains DetectTask with a plain loop (AdamW, warm-up + cosine)
on digits-detect and logs mAP over time (used until train.engine.fit drives tasks):
    PYTHONPATH=src python tests/test_tasks_detect_train.py --model ssdlite_mobilevit_xxs --minutes 15
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

import mobilevision
from mobilevision.tasks.detect.metrics import coco_map
from mobilevision.tasks.detect.task import DetectTask


def _recipe(**kw):
    base = dict(input_size=128, hflip=0.0, verify_images=True, model_kwargs={}, drop_path_rate=0.0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_task_learns_evaluates_and_saves(tmp_path):
    torch.manual_seed(0)
    task = DetectTask("ssdlite_mobilevit_xxs", iou_crop=False, photometric=False)
    recipe = _recipe()
    data = task.build_data("digits-detect", recipe)
    assert data.info["num_classes"] == 11 and data.info["labels"][0] == "0"
    model = task.build_model(recipe, data)
    batch = data.collate([data.val[i] for i in range(4)])  # val: no random augmentation, a fixed batch
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    first = None
    for _ in range(25):
        out = task.train_step(model, batch, torch.device("cpu"))
        assert set(out) == {"loss", "bbox_regression", "classification"}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["loss"])
    assert float(out["loss"]) < 0.5 * first
    loader = DataLoader(Subset(data.val, range(4)), batch_size=2, collate_fn=data.collate)
    metrics = task.evaluate(model, loader, torch.device("cpu"))
    assert task.metric in metrics and 0 <= metrics["map_50"] <= 1 and "ap/7" in metrics
    task.save(model, tmp_path / "best", {"epoch": 1})
    cfg = json.loads((tmp_path / "best" / "config.json").read_text())
    assert cfg["task"] == "detect" and cfg["num_classes"] == 11 and cfg["labels"][:2] == ["0", "1"]
    restored = mobilevision.create_model("ssdlite_mobilevit_xxs", checkpoint_path=tmp_path / "best").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored.forward_raw(batch[0])[1], model.forward_raw(batch[0])[1])
    # `mobilevision eval` restores the run's checkpoint and gives the numbers the task computes on the val split
    from mobilevision.cli import main

    assert main(["eval", "--model", "ssdlite_mobilevit_xxs", "--checkpoint", str(tmp_path / "best"), "--data",
                 "digits-detect", "--input-size", "128", "--batch-size", "50", "--output", str(tmp_path / "e.json")]) == 0
    got = json.loads((tmp_path / "e.json").read_text())
    full = task.evaluate(model, DataLoader(data.val, batch_size=50, collate_fn=data.collate), torch.device("cpu"))
    assert got["images"] == 200 and got["map_50"] == pytest.approx(full["map_50"]) and got["map"] == pytest.approx(full["map"])
    assert full["map_50"] > 0.0  # the 25 steps on four val scenes find some of their digits


def test_task_on_any_backbone_and_coco_folder(tmp_path):
    from test_data_detection import make_coco

    make_coco(tmp_path, "train")
    make_coco(tmp_path, "val", broken=False)
    task = DetectTask("mobilenetv3_large_100")
    recipe = _recipe(input_size=96, hflip=0.5)
    data = task.build_data(str(tmp_path), recipe)
    assert data.skipped == {"train_box_clipped_to_image": 1, "train_zero_area_box_dropped": 1,
                            "train_missing_image": 1, "train_unreadable_image": 1}
    model = task.build_model(recipe, data)
    assert model.num_classes == 3 and model.detector_config["backbone"] == "mobilenetv3_large_100"
    loader = DataLoader(data.train, batch_size=3, collate_fn=data.collate)
    for batch in loader:  # one epoch
        task.train_step(model, batch, torch.device("cpu"))["loss"].backward()
    assert "map" in task.evaluate(model, DataLoader(data.val, batch_size=3, collate_fn=data.collate), torch.device("cpu"))


# ------------------------------------------------------------------------------------------------ driver
def mean_box_baseline(train, val) -> dict:
    """The mean train box with the most frequent train class, score 1, on every val image."""
    boxes, labels = [], []
    for i in range(len(train)):
        b, lab = train.annotations(i)
        boxes.append(b)
        labels.extend(lab.tolist())
    mean = np.concatenate(boxes).mean(0)
    top = Counter(labels).most_common(1)[0][0]
    preds, gts = [], []
    for i in range(len(val)):
        b, lab = val.annotations(i)
        gts.append({"boxes": torch.as_tensor(b), "labels": torch.as_tensor(lab)})
        preds.append({"boxes": torch.as_tensor(mean)[None], "scores": torch.ones(1), "labels": torch.tensor([top])})
    return coco_map(preds, gts, labels=list(range(1, 11)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ssdlite_mobilevit_xxs")
    ap.add_argument("--recipe", default="digits_detect")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--eval-every", type=float, default=5.0, help="minutes between val evaluations")
    ap.add_argument("--val-images", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--input-size", type=int, default=None, help="override the recipe's input_size")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mobilevision.train.recipe import load_recipe

    recipe = load_recipe(Path(__file__).parents[1] / "src/mobilevision/train/recipes" / f"{args.recipe}.yaml")
    if args.input_size:
        recipe.input_size = args.input_size
    if args.epochs:
        recipe.epochs = args.epochs
    torch.manual_seed(recipe.seed)
    task = DetectTask(args.model)
    data = task.build_data("digits-detect", recipe)
    if args.baseline:
        print(json.dumps({k: v for k, v in mean_box_baseline(data.train, data.val).items() if k != "ap_per_class"}))
        return
    model = task.build_model(recipe, data)
    loader = DataLoader(data.train, batch_size=recipe.batch_size, shuffle=True, collate_fn=data.collate,
                        num_workers=recipe.workers, drop_last=True)
    val = DataLoader(Subset(data.val, range(args.val_images)), batch_size=32, collate_fn=data.collate)
    steps = recipe.epochs * len(loader)
    warm = recipe.warmup_steps or int(recipe.warmup_epochs * len(loader))
    opt = torch.optim.AdamW(model.parameters(), recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / max(1, warm) if s < warm else
                                              0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    t0, next_eval, step, log = time.time(), args.eval_every * 60, 0, []
    dev = torch.device("cpu")
    done = False
    for epoch in range(recipe.epochs):
        for batch in loader:
            out = task.train_step(model, batch, dev)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            if recipe.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
            opt.step()
            sched.step()
            step += 1
            el = time.time() - t0
            if step % 10 == 0:
                print(f"step {step}/{steps} ep {epoch} {el:.0f}s loss {float(out['loss'].detach()):.3f}", flush=True)
            last = step == steps or el > args.minutes * 60
            if el > next_eval or last:
                m = task.evaluate(model, val, dev)
                row = {"step": step, "epoch": epoch, "seconds": round(time.time() - t0), "map_50": m["map_50"],
                       "map": m["map"]}
                log.append(row)
                print(json.dumps(row), flush=True)
                next_eval = time.time() - t0 + args.eval_every * 60
            if last:
                done = True
                break
        if done:
            break
    if args.out:
        Path(args.out).write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
