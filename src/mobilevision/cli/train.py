"""`mobilevision train` and `mobilevision pretrain` (the same engine with the FCMAE task); `eval` is in cli/infer.py."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import common


def _recipe_help() -> str:
    import dataclasses

    from mobilevision.train.recipe import Recipe, recipe_names

    keys = ", ".join(f.name for f in dataclasses.fields(Recipe) if f.name not in ("name", "description", "source"))
    return f"shipped recipes: {', '.join(recipe_names())}. --set keys: {keys}, task_options.KEY"


def configure_train(p: argparse.ArgumentParser, task: str = "classify") -> None:
    pre = task == "fcmae"
    p.epilog = _recipe_help()
    common.add_model(p, help="registered model name (see `mobilevision models`)"
                     + ("; a ConvNeXt V2 model, e.g. convnextv2_atto" if pre else ""))
    p.add_argument("--data", required=True,
                   help="'digits' (built-in) or a directory of images (DIR/train/<folder>/... or DIR/<folder>/...; "
                        "labels are ignored, DIR/val/ if present gives a validation loss)" if pre else
                        "classify: 'digits' or 'digits-photos' (built-in; the digits on photo crops) or a directory "
                        "with train/<class>/ and val/<class>/; detect: 'digits-detect' or COCO data (annotations "
                        "JSON, or a folder with annotations/instances_{train,val}.json and train/, val/); segment: "
                        "'digits-segment', a VOC folder or images/ + masks/")
    if not pre:
        p.add_argument("--task", choices=("classify", "detect", "segment"),
                       help="default: the model's (detector / segmenter presets), else the built-in data set's, "
                            "else classify")
    p.add_argument("--recipe", help="shipped recipe name or a YAML file (default: "
                   + ("fcmae_digits on digits, else fcmae)" if pre else
                      "digits on digits, else the model's paper recipe or generic, at the model's input size)"))
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (with --resume: extend the run)")
    common.add_batch_size(p, help="per-process batch size (at the base resolution)")
    p.add_argument("--lr", "--blr", dest="lr", type=float,
                   help="learning rate (at lr_base_batch images per step if the recipe sets it)")
    common.add_input_size(p, help="training / eval resolution in pixels, square"
                          + (", a multiple of 32" if pre else ""))
    if pre:
        p.add_argument("--mask-ratio", type=float, help="fraction of 32x32 patches masked (task_options.mask_ratio)")
    common.add_output(p, kind="dir",
                      help=f"run directory (default: runs/{'fcmae-' if pre else ''}<model>-<data name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from last/ (a finished run "
                                                         "with a larger --epochs is extended)")
    if not pre:
        p.add_argument("--init", metavar="CHECKPOINT",
                       help="start from these weights (fine-tuning), e.g. a pretrain run's last/ or a run's best/; a "
                            "classifier of another class count is re-initialised")
        p.add_argument("--init-backbone", metavar="CHECKPOINT",
                       help="detect / segment: start the backbone from a classifier checkpoint of it (a digits "
                            "run's best/, timm's or the official ImageNet weights)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-exact resume)")
    p.add_argument("--seed", type=int, help="seed for weights, data order and augmentation")
    common.add_device(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set mixup=0.2 --set scales=[160,192] "
                        "--set task_options.mask_ratio=0.75")
    p.set_defaults(task=task if pre else None)


def configure_pretrain(p: argparse.ArgumentParser) -> None:
    configure_train(p, task="fcmae")


def _choose_recipe(args: argparse.Namespace, out: Path):
    """The recipe to run and a sentence saying where it came from."""
    from mobilevision.train import apply_overrides, default_recipe, load_recipe
    from mobilevision.train.recipe import BUILTIN_DATA

    if args.resume and (out / "recipe.yaml").is_file():
        return load_recipe(out / "recipe.yaml"), f"the run's own recipe ({out / 'recipe.yaml'})"
    if args.recipe:
        return load_recipe(args.recipe), f"recipe {args.recipe}"
    name, why = default_recipe(args.model, args.data, args.task)
    recipe = load_recipe(name)
    if args.data not in BUILTIN_DATA and args.input_size is None:
        recipe = apply_overrides(recipe, ["input_size=null"])  # the model's own resolution
    return recipe, f"recipe {name}: {why}"


def run_train(args: argparse.Namespace) -> int:
    from mobilevision.models.registry import get_config
    from mobilevision.tasks import create_task
    from mobilevision.train import apply_overrides, fit
    from mobilevision.train.recipe import BUILTIN_DATA, infer_task

    get_config(args.model)  # unknown model -> error before any work
    args.input_size = common.square(args.input_size, "pretrain" if args.task == "fcmae" else "train")
    if args.task is None:
        args.task = infer_task(args.model, args.data)
    if args.data not in BUILTIN_DATA and not Path(args.data).expanduser().exists():
        raise FileNotFoundError(f"--data {args.data!r}: not a built-in set ({', '.join(BUILTIN_DATA)}), not a "
                                "directory and not a COCO annotations file")
    prefix = "fcmae-" if args.task == "fcmae" else ""
    out = common.check_output(args.output or f"runs/{prefix}{args.model}-{Path(args.data).name or 'data'}", "dir")
    recipe, origin = _choose_recipe(args, out)
    pairs = list(args.overrides)
    if getattr(args, "mask_ratio", None) is not None:
        pairs.append(f"task_options.mask_ratio={args.mask_ratio}")
    recipe = apply_overrides(recipe, pairs, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             input_size=args.input_size, seed=args.seed,
                             deterministic=True if args.deterministic else None)
    if getattr(args, "init", None):
        if not Path(args.init).expanduser().exists():
            raise FileNotFoundError(f"--init {args.init}: checkpoint not found")
        recipe = apply_overrides(recipe, model_kwargs={**recipe.model_kwargs, "checkpoint_path": str(args.init)})
    if getattr(args, "init_backbone", None):
        if not Path(args.init_backbone).expanduser().exists():
            raise FileNotFoundError(f"--init-backbone {args.init_backbone}: checkpoint not found")
        recipe = apply_overrides(recipe, init_backbone=str(args.init_backbone))
    if recipe.task != args.task:
        command = "pretrain" if recipe.task == "fcmae" else f"train --task {recipe.task}"
        raise ValueError(f"recipe {recipe.name!r} is for task {recipe.task!r}: run it with `mobilevision {command}`")
    task = create_task(recipe.task, args.model, recipe.task_options)
    summary = fit(task, recipe, args.data, out, resume=args.resume, device=args.device, origin=origin)
    if os.environ.get("RANK", "0") == "0":  # one result line from a torchrun job
        print(_result_line(summary, out))
    return 0


def _result_line(s: dict, out: Path) -> str:
    if s.get("task") == "fcmae":
        val = s.get("final_loss")
        return (f"final train loss {s['final_train_loss']:.4f}" + (f"  val loss {val:.4f}" if val is not None else "")
                + f"  {s['seconds']:.1f} s  encoder -> {out / 'last'}")
    if "best_top1" in s:
        return (f"best top-1 {s['best_top1']:.2f} (epoch {s['best_epoch']})  final top-1 {s['final_top1']:.2f}  "
                f"skipped {s['skipped_images']}  {s['seconds']:.1f} s  -> {out}")
    metric = next((k[5:] for k in s if k.startswith("best_") and k not in ("best_epoch", "best_source")), None)
    if metric is None:
        return f"{s['seconds']:.1f} s  -> {out}"
    return (f"best {metric} {s['best_' + metric]:.4f} (epoch {s['best_epoch']})  final {metric} "
            f"{s.get('final_' + metric, float('nan')):.4f}  {s['seconds']:.1f} s  -> {out}")


run_pretrain = run_train
