"""Local check that SegmentTask learns (a plain loop: AdamW + warm-up + cosine), while the engine is rewritten.

    PYTHONPATH=src python scripts/train_segment_local.py --model deeplabv3_mobilevit_xxs --minutes 12
Prints the all-background baseline, then val mIoU / pixel accuracy per epoch and the wall time.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch.utils.data import DataLoader

from mobilevision.tasks.segment.task import SegmentTask, baseline_miou
from mobilevision.train.recipe import load_recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--recipe", default="digits_segment")
    ap.add_argument("--data", default="digits-segment")
    ap.add_argument("--minutes", type=float, default=15.0, help="stop training after this much wall time")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="save the final model here (save_pretrained)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recipe = load_recipe(args.recipe)
    epochs = args.epochs or recipe.epochs
    task = SegmentTask(args.model)
    data = task.build_data(args.data, recipe)
    model = task.build_model(recipe, data)
    train = DataLoader(data.train, batch_size=recipe.batch_size, shuffle=True, drop_last=True,
                       collate_fn=data.collate, num_workers=0)
    val = DataLoader(data.val, batch_size=16, collate_fn=data.collate)
    base = baseline_miou(val, data.info["num_classes"])
    print(json.dumps({"baseline_all_background": base, "skipped": data.skipped}), flush=True)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    total = epochs * len(train)
    warm = int(recipe.warmup_epochs * len(train))

    def lr_at(step: int) -> float:
        if step < warm:
            return recipe.lr * (recipe.warmup_lr_ratio + (1 - recipe.warmup_lr_ratio) * step / max(1, warm))
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    start, step, dev = time.time(), 0, torch.device("cpu")
    for epoch in range(epochs):
        model.train()
        t0, losses = time.time(), []
        for batch in train:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            terms = task.train_step(model, batch, dev)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            losses.append(float(terms["loss"].detach()))
            step += 1
            if time.time() - start > args.minutes * 60:
                break
        metrics = task.evaluate(model, val, dev)
        print(json.dumps({"epoch": epoch, "loss": sum(losses) / len(losses), "miou": round(metrics["miou"], 4),
                          "pixel_acc": round(metrics["pixel_acc"], 4), "epoch_s": round(time.time() - t0, 1),
                          "elapsed_min": round((time.time() - start) / 60, 2)}), flush=True)
        if time.time() - start > args.minutes * 60:
            break
    print(json.dumps({"model": args.model, "final": {k: round(v, 4) for k, v in metrics.items()},
                      "minutes": round((time.time() - start) / 60, 2), "steps": step}), flush=True)
    if args.out:
        task.save(model, args.out, {"recipe": recipe.name})


if __name__ == "__main__":
    main()
