"""`mobilevision train` and `mobilevision eval`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model name (see `mobilevision models`)")
    p.add_argument("--data", required=True, help="'digits' (built-in) or a directory with train/ and val/")
    p.add_argument("--recipe", default="digits", help="shipped recipe name or a YAML file (default: digits)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="per-process batch size (at the base resolution)")
    p.add_argument("--lr", type=float, help="learning rate (at lr_base_batch if the recipe sets it)")
    p.add_argument("--output", help="run directory (default: runs/<model>-<data name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from last/")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from these weights (fine-tuning), e.g. an FCMAE encoder or a run's best/; a "
                        "classifier of another class count is re-initialised")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-exact resume)")
    p.add_argument("--seed", type=int, help="seed for weights, data order and augmentation")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set mixup=0.2 --set scales=[160,192]")


def run_train(args: argparse.Namespace) -> int:
    from mobilevision.models.registry import get_config
    from mobilevision.train import apply_overrides, fit, load_recipe

    get_config(args.model)  # unknown model -> error before any work
    recipe = load_recipe(args.recipe)
    recipe = apply_overrides(recipe, args.overrides, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, deterministic=True if args.deterministic else None)
    if args.init:
        if not Path(args.init).expanduser().exists():
            raise FileNotFoundError(f"--init {args.init}: checkpoint not found")
        recipe = apply_overrides(recipe, model_kwargs={**recipe.model_kwargs, "checkpoint_path": str(args.init)})
    if args.data != "digits" and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data!r}: not 'digits' and not a directory")
    out = Path(args.output) if args.output else Path("runs") / f"{args.model}-{Path(args.data).name or 'data'}"
    summary = fit(args.model, args.data, out, recipe, resume=args.resume, device=args.device)
    if summary.get("world_size", 1) == 1 or _is_rank0():
        print(f"best top-1 {summary['best_top1']:.2f}  final top-1 {summary['final_top1']:.2f}  "
              f"skipped {summary['skipped_images']}  {summary['seconds']:.1f} s  -> {out}")
    return 0


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--checkpoint", required=True, help="weights file or directory (e.g. a run's best/)")
    p.add_argument("--data", required=True, help="'digits' or a directory with val/ (or class folders)")
    p.add_argument("--split", default="val", help="sub-directory / split to evaluate (default: val)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--input-size", type=int, help="default: the training size saved with the checkpoint")
    p.add_argument("--output", default="eval.json", help="JSON result file (default: eval.json)")
    p.add_argument("--device", choices=("cpu", "cuda"))


def run_eval(args: argparse.Namespace) -> int:
    import contextlib

    import torch
    from torch.utils.data import DataLoader

    import mobilevision
    from mobilevision.models.checkpoint import read_config
    from mobilevision.data import EvalView, eval_transform, open_split
    from mobilevision.data.datasets import CheckedImageFolder
    from mobilevision.train.distributed import DistInfo
    from mobilevision.train.loop import evaluate

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    saved = read_config(args.checkpoint) or {}
    model = mobilevision.create_model(args.model, checkpoint_path=args.checkpoint)
    trained = saved.get("train", {})
    cfg = {**model.default_cfg, **{k: v for k, v in trained.items() if k in ("mean", "std", "crop_pct", "interpolation")}}
    size = args.input_size or trained.get("input_size") or int(model.default_cfg["input_size"][-1])
    if args.data == "digits":
        source = open_split("digits", args.split, image_size=size)
    else:
        root = Path(args.data)
        source = open_split(args.data, args.split, size) if (root / args.split).is_dir() else CheckedImageFolder(root)
    labels = getattr(model, "labels", None)
    if labels and list(source.classes) != list(labels):
        raise ValueError(f"the data's classes {source.classes[:5]}... differ from the checkpoint's {labels[:5]}...")
    if model.num_classes != len(source.classes):
        raise ValueError(f"checkpoint has {model.num_classes} classes, the data has {len(source.classes)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    tf = eval_transform((size, size), cfg["mean"], cfg["std"], crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"])
    loader = DataLoader(EvalView(source, tf), batch_size=args.batch_size)
    m = evaluate(model, loader, device, contextlib.nullcontext, DistInfo(device=device))
    result = {"model": args.model, "checkpoint": str(args.checkpoint), "data": args.data, "split": args.split,
              "images": len(source), "skipped_images": len(source.skipped), "input_size": size, **m}
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"top-1 {m['top1']:.2f}  top-5 {m['top5']:.2f}  ({len(source)} images) -> {args.output}")
    return 0
