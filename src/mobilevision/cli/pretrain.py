"""`mobilevision pretrain`: FCMAE masked-autoencoder pre-training of a ConvNeXt V2 encoder."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import common


def configure_pretrain(p: argparse.ArgumentParser) -> None:
    common.add_model(p, help="a ConvNeXt V2 model, e.g. convnextv2_atto")
    p.add_argument("--data", required=True,
                   help="'digits' (built-in) or a directory of images (DIR/train/<folder>/... or DIR/<folder>/...; "
                        "labels are ignored, DIR/val/ if present gives a validation loss)")
    p.add_argument("--recipe", help="fcmae (paper, ImageNet), fcmae_digits, or a YAML file "
                                    "(default: fcmae_digits for digits, else fcmae)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    common.add_batch_size(p, help="per-process batch size")
    p.add_argument("--blr", type=float, help="base learning rate: lr = blr * global batch / 256")
    p.add_argument("--lr", type=float, help="absolute learning rate (overrides --blr)")
    p.add_argument("--mask-ratio", type=float, help="fraction of 32x32 patches masked (default 0.6)")
    common.add_input_size(p, help="training resolution (square), a multiple of 32")
    common.add_output(p, kind="dir", help="run directory (default: runs/fcmae-<model>-<data name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from last/")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms")
    p.add_argument("--seed", type=int, help="seed for weights, data order, augmentation and masks")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any pre-training recipe field, e.g. --set decoder_dim=256")


def run_pretrain(args: argparse.Namespace) -> int:
    from mobilevision.models.registry import get_config
    from mobilevision.ssl.pretrain import apply_pretrain_overrides, load_pretrain_recipe, pretrain

    get_config(args.model)
    if args.data != "digits" and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data!r}: not 'digits' and not a directory")
    recipe = load_pretrain_recipe(args.recipe or ("fcmae_digits" if args.data == "digits" else "fcmae"))
    recipe = apply_pretrain_overrides(recipe, args.overrides, epochs=args.epochs, batch_size=args.batch_size,
                                      blr=args.blr, lr=args.lr, mask_ratio=args.mask_ratio,
                                      input_size=common.square(args.input_size, "pretrain"), seed=args.seed,
                                      deterministic=True if args.deterministic else None)
    out = Path(args.output) if args.output else Path("runs") / f"fcmae-{args.model}-{Path(args.data).name or 'data'}"
    summary = pretrain(args.model, args.data, out, recipe, resume=args.resume, device=args.device)
    if os.environ.get("RANK", "0") == "0":
        val = summary["final_val_loss"]
        print(f"final train loss {summary['final_train_loss']:.4f}"
              + (f"  val loss {val:.4f}" if val is not None else "")
              + f"  {summary['seconds']:.1f} s  encoder -> {summary['encoder']}")
    return 0
