"""Low-label experiment: does FCMAE pre-training help ConvNeXt V2 when only 10% of the labels are known?

1. FCMAE-pretrain convnextv2_atto on all 1,437 digits *training* images, labels unused (the 360 val images are
   never seen before evaluation).
2. Take a stratified 10% of the training images with their labels (seed --split-seed).
3. Fine-tune the pre-trained encoder on that 10%, and train the same model from scratch on the same 10%, with the
   same recipe, resolution, epochs and seed. Report val top-1 (360 images) of both.

    python benchmarks/low_label_digits.py --output runs/low_label_digits [--seeds 0,1,2]
    python benchmarks/low_label_digits.py --output runs/more --encoder runs/low_label_digits/pretrain/last --seeds 1,2

Runs on CPU (2 threads): 30 pre-training epochs take about 8 minutes on 2 idle cores, each fine-tuning run
(30 epochs of 143 images) under 2 minutes. Results: OUTPUT/results.json and
a Markdown table on stdout. The pre-training cost is not charged to the pre-trained arm's fine-tuning budget.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def write_subset(out: Path, size: int, fraction: float, seed: int) -> dict:
    """ImageFolder copy of digits at `size` px: train/ = a stratified `fraction` of the train split, val/ = all val."""
    from sklearn.model_selection import train_test_split

    from mobilevision.data import DigitsSource

    counts = {}
    for split in ("train", "val"):
        src = DigitsSource(split, image_size=size)
        idx = np.arange(len(src))
        if split == "train":
            idx, _ = train_test_split(idx, train_size=fraction, stratify=src.targets, random_state=seed)
        for i in sorted(idx):
            img, label = src.load(int(i))
            d = out / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            img.save(d / f"{i:04d}.png")  # lossless: the same pixels the pre-training saw
        counts[split] = len(idx)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="runs/low_label_digits")
    ap.add_argument("--model", default="convnextv2_atto")
    ap.add_argument("--input-size", type=int, default=64, help="multiple of 32 (64 -> a 2x2 patch grid)")
    ap.add_argument("--pretrain-epochs", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=int, default=30)
    ap.add_argument("--encoder", default=None, help="reuse this pre-trained encoder (a pretrain run's last/)")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seeds", default="0", help="comma-separated fine-tuning seeds; each runs both arms")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from mobilevision.tasks.classify import ClassifyTask
    from mobilevision.tasks.fcmae import FCMAETask
    from mobilevision.train import apply_overrides, fit, load_recipe

    torch.set_num_threads(args.threads)
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose another --output")
    seeds = [int(v) for v in args.seeds.split(",")]
    times: dict[str, float] = {}
    pre = {}
    encoder = Path(args.encoder) if args.encoder else out / "pretrain" / "last"
    if not args.encoder:
        t = time.perf_counter()
        pre_recipe = apply_overrides(load_recipe("fcmae_digits"), epochs=args.pretrain_epochs,
                                     input_size=args.input_size, seed=seeds[0])
        pre = fit(FCMAETask(args.model, pre_recipe.task_options), pre_recipe, "digits", out / "pretrain", device="cpu")
        times["pretrain_s"] = time.perf_counter() - t

    data = out / "digits_10pct"
    counts = write_subset(data, args.input_size, args.fraction, args.split_seed)

    # the shipped digits recipe at the pre-training resolution; identical for both arms
    results: dict[str, list[dict]] = {"scratch": [], "fcmae": []}
    for seed in seeds:
        ft_recipe = apply_overrides(load_recipe("digits"), input_size=args.input_size, epochs=args.finetune_epochs,
                                    seed=seed)
        for arm, kwargs in (("scratch", {}), ("fcmae", {"checkpoint_path": str(encoder)})):
            t = time.perf_counter()
            recipe = apply_overrides(ft_recipe, model_kwargs=kwargs)
            s = fit(ClassifyTask(args.model), recipe, str(data), out / f"finetune_{arm}_seed{seed}", device="cpu")
            results[arm].append({"seed": seed, "best_top1": s["best_top1"], "final_top1": s["final_top1"],
                                 "best_epoch": s["best_epoch"], "seconds": time.perf_counter() - t})

    report = {"model": args.model, "input_size": args.input_size, "labelled_train_images": counts["train"],
              "val_images": counts["val"], "encoder": str(encoder), "pretrain_epochs": args.pretrain_epochs,
              "pretrain_final_loss": pre.get("final_train_loss"), "finetune_epochs": args.finetune_epochs,
              "seeds": seeds, "results": results, "seconds": times, "threads": args.threads}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\n{args.model} on digits, {counts['train']} labelled train images (of 1437, all used unlabelled by "
          f"the pre-training), {counts['val']} val, {args.input_size} px, fine-tuning seeds {seeds}\n")
    print("| init | val top-1 final, per seed | mean final | mean best |")
    print("|---|---|---|---|")
    for arm, name in (("scratch", "from scratch"), ("fcmae", f"FCMAE ({args.pretrain_epochs} ep)")):
        rows = results[arm]
        finals = ", ".join(f"{r['final_top1']:.2f}" for r in rows)
        mean_final = float(np.mean([r["final_top1"] for r in rows]))
        mean_best = float(np.mean([r["best_top1"] for r in rows]))
        print(f"| {name} | {finals} | {mean_final:.2f} | {mean_best:.2f} |")
    if pre:
        print(f"\npre-training: {times['pretrain_s']:.0f} s, final masked-patch loss {pre['final_train_loss']:.4f}")


if __name__ == "__main__":
    main()
