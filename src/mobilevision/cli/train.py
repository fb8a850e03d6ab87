"""`mobilevision train` (`eval` lives in cli/infer.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import common


def configure_train(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    p.add_argument("--data", required=True, help="'digits' (built-in) or a directory with train/ and val/")
    p.add_argument("--recipe", default="digits", help="shipped recipe name or a YAML file (default: digits)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    common.add_batch_size(p, help="per-process batch size (at the base resolution)")
    common.add_input_size(p, help="training / eval resolution (square; default: the recipe's or the model's)")
    p.add_argument("--lr", type=float, help="learning rate (at lr_base_batch if the recipe sets it)")
    common.add_output(p, kind="dir", help="run directory (default: runs/<model>-<data name>)")
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
                             input_size=common.square(args.input_size, "train"), seed=args.seed,
                             deterministic=True if args.deterministic else None)
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
