"""`mobilevision predict` and `mobilevision eval`: a checkpoint (PyTorch weights or an exported FP32 / INT8
ONNX graph, run with onnxruntime) on images or a labelled data set."""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path

from . import common

logger = logging.getLogger("mobilevision.cli")

CHECKPOINT_HELP = ("weights file or directory (its config.json gives classes, labels and preprocessing), or an "
                   "exported .onnx / .int8.onnx graph (run with onnxruntime)")


def _add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    common.add_model(p, required=False, help="registered model name (optional for an .onnx checkpoint)")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    common.add_num_classes(p)


# ---------------------------------------------------------------- predict
def configure_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="[NAME] IMAGE",
                   help="the model name (optional for an .onnx checkpoint, or give --model), then image files "
                        "or folders (searched recursively)")
    p.add_argument("--model", dest="model", metavar="NAME", help="the same as NAME")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    common.add_num_classes(p)
    p.add_argument("--labels", default=None, help="class names: text file (one per line) or JSON list")
    p.add_argument("--topk", type=int, default=5)
    common.add_batch_size(p, default=32, help="images per forward pass (default 32)")
    common.add_input_size(p, help="input size (default: the checkpoint's)")
    common.add_output(p, help="also write the results to this .json or .csv file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(_finalize=_split_predict_inputs)


def _split_predict_inputs(args: argparse.Namespace) -> None:
    """`predict NAME IMG...`, `predict IMG... --model NAME` and, for a graph, `predict IMG...`: sets
    `args.model` and `args.images`. The first input is the model unless --model is given, or it is no
    registered name and the checkpoint is a graph or the input is an existing path."""
    from mobilevision.deploy.runtime import is_onnx
    from mobilevision.models.registry import list_models

    inputs = list(args.inputs)
    del args.inputs
    args.images = inputs
    if args.model or not inputs:
        return
    first = inputs[0]
    if first not in list_models() and (is_onnx(args.checkpoint) or Path(first).exists()):
        return
    args.model, args.images = first, inputs[1:]


def run_predict(args: argparse.Namespace) -> int:
    from mobilevision.data.config import resolve_data_config
    from mobilevision.deploy.inference import image_files, load_classifier, load_image, predict, read_labels

    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    if not args.images:
        raise ValueError("give at least one image file or folder")
    files = image_files(args.images)
    model = load_classifier(args.model, args.checkpoint, num_classes=args.num_classes)
    cfg = resolve_data_config(model, input_size=args.input_size)
    labels = read_labels(args.labels) if args.labels else getattr(model, "labels", None)

    good, images, failed = [], [], []
    for f in files:
        try:
            images.append(load_image(f))
            good.append(f)
        except (ValueError, FileNotFoundError) as err:
            failed.append((f, str(err)))
    if not images:
        first = failed[0][1]
        raise ValueError(first if len(failed) == 1 else f"none of the {len(failed)} images is readable; first: {first}")
    for _, reason in failed:
        logger.warning("%s; skipped", reason)
    results = predict(model, images, topk=args.topk, labels=labels, cfg=cfg, batch_size=args.batch_size)
    rows = [{"image": str(f), "top": [{"label": lab, "prob": prob} for lab, prob in top]}
            for f, top in zip(good, results)]
    rows += [{"image": str(f), "error": reason} for f, reason in failed]
    if args.output:
        _write_predictions(rows, Path(args.output), args.topk)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows[: len(good)]:
        print(row["image"])
        for t in row["top"]:
            print(f"  {t['prob'] * 100:6.2f} %  {t['label']}")
    return 0


def _write_predictions(rows: list[dict], path: Path, topk: int) -> None:
    """JSON (the printed rows) or CSV (timm's inference layout: image, label_0..k-1, prob_0..k-1, error)."""
    if path.suffix.lower() == ".json":
        text = json.dumps(rows, indent=2)
    elif path.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["image", *(f"label_{i}" for i in range(topk)), *(f"prob_{i}" for i in range(topk)), "error"])
        for r in rows:
            top = r.get("top", [])
            labels = [t["label"] for t in top] + [""] * (topk - len(top))
            probs = [f"{t['prob']:.6f}" for t in top] + [""] * (topk - len(top))
            w.writerow([r["image"], *labels, *probs, r.get("error", "")])
        text = buf.getvalue()
    else:
        raise ValueError(f"--output {path}: give a .json or .csv file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---------------------------------------------------------------- eval
def configure_eval(p: argparse.ArgumentParser) -> None:
    _add_checkpoint_args(p)
    p.add_argument("--data", required=True, help="'digits' or a directory with val/ (or class folders)")
    p.add_argument("--split", default="val", help="sub-directory / split to evaluate (default: val)")
    common.add_batch_size(p, default=64, help="evaluation batch size (default 64)")
    common.add_input_size(p, help="input size (default: the training size saved with the checkpoint)")
    common.add_output(p, default="eval.json", help="JSON result file (default: eval.json)")
    common.add_device(p)


def run_eval(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from mobilevision.data import EvalView, open_split
    from mobilevision.tasks.classify import evaluate_classifier
    from mobilevision.data.config import create_transform, resolve_data_config
    from mobilevision.data.datasets import CheckedImageFolder
    from mobilevision.deploy.inference import load_classifier

    model = load_classifier(args.model, args.checkpoint, num_classes=args.num_classes)
    cfg = resolve_data_config(model, input_size=args.input_size)
    size = max(cfg.size)
    if args.data == "digits":
        source = open_split("digits", args.split, image_size=size)
    else:
        root = Path(args.data).expanduser()
        source = open_split(args.data, args.split, size) if (root / args.split).is_dir() else CheckedImageFolder(root)
    labels = getattr(model, "labels", None)
    if labels and list(source.classes) != list(labels):
        raise ValueError(f"the data's classes {source.classes[:5]}... differ from the checkpoint's {labels[:5]}...")
    if model.num_classes != len(source.classes):
        raise ValueError(f"checkpoint has {model.num_classes} classes, the data has {len(source.classes)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    loader = DataLoader(EvalView(source, create_transform(cfg)), batch_size=args.batch_size)
    m = evaluate_classifier(model, loader, device)
    result = {"model": args.model or getattr(model, "model_name", None), "checkpoint": str(args.checkpoint),
              "data": args.data, "split": args.split, "images": len(source),
              "skipped_images": len(getattr(source, "skipped", [])), "input_size": list(cfg.size), **m}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"top-1 {m['top1']:.2f}  top-5 {m['top5']:.2f}  ({len(source)} images) -> {out}")
    return 0
