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


def configure_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="[NAME] IMAGE",
                   help="the model name (optional when the checkpoint records it: an .onnx graph or a saved "
                        "config.json; or give --model), then image files or folders (searched recursively)")
    p.add_argument("--model", dest="model", metavar="NAME", help="the same as NAME")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    common.add_num_classes(p)
    p.add_argument("--labels", default=None, help="class names: text file (one per line) or JSON list")
    p.add_argument("--topk", type=int, default=5)
    common.add_batch_size(p, default=32, help="images per forward pass (default 32)")
    common.add_input_size(p, help="input size (default: the checkpoint's)")
    common.add_output(p, help="also write the results to this .json or .csv file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--save-dir", default="predictions",
                   help="detectors and segmenters: where the drawn images (<stem>.boxes.png) or the palette masks "
                        "(<stem>.mask.png) and overlays (<stem>.overlay.png) go (default: predictions/)")
    p.add_argument("--score-thresh", type=float, default=0.3, help="detectors: lowest score drawn / listed")
    p.set_defaults(_finalize=_split_predict_inputs)


def _split_predict_inputs(args: argparse.Namespace) -> None:
    """`predict NAME IMG...`, `predict IMG... --model NAME` and, for a graph, `predict IMG...`: sets
    `args.model` and `args.images`. The first input is the model unless --model is given, or it is no
    registered name and the checkpoint is a graph or the input is an existing path."""
    from mobilevision.deploy.runtime import is_onnx
    from mobilevision.models.registry import list_models

    args.images = list(args.inputs)
    del args.inputs
    if args.model or not args.images:
        return
    first = args.images[0]
    if first in list_models() or not (is_onnx(args.checkpoint) or Path(first).exists()):
        args.model, args.images = first, args.images[1:]


def run_predict(args: argparse.Namespace) -> int:
    from mobilevision.data.config import resolve_data_config
    from mobilevision.deploy.inference import image_files, load_classifier, load_image, predict, read_labels

    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    if not args.images:
        raise ValueError("give at least one image file or folder")
    files = image_files(args.images)
    if args.model and _task_of(args.model) in ("detect", "segment"):
        return _predict_dense(args, files)
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
        raise ValueError(first if len(failed) == 1 else
                         f"none of the {len(failed)} images is readable; first: {first}")
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


def _task_of(name: str) -> str:
    from mobilevision.models.registry import get_config
    from mobilevision.train.recipe import TASK_OF_FAMILY

    return TASK_OF_FAMILY.get(get_config(name).family, "classify")


def _predict_dense(args: argparse.Namespace, files: list[Path]) -> int:
    """Detections (boxes drawn on the image) or masks (palette PNG + overlay) of a task model, one per image."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torchvision.transforms.v2 import functional as TF
    from torchvision.utils import draw_bounding_boxes

    import mobilevision
    from mobilevision.data.config import resolve_data_config
    from mobilevision.data.segmentation import overlay_mask, save_mask
    from mobilevision.deploy.inference import load_image

    task = _task_of(args.model)
    model = mobilevision.create_model(args.model, checkpoint_path=args.checkpoint, num_classes=args.num_classes).eval()
    cfg = resolve_data_config(model, input_size=args.input_size)
    labels = getattr(model, "labels", None) or []
    out_dir = common.check_output(args.save_dir, "dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for f in files:
        try:
            img = load_image(f)
        except (ValueError, FileNotFoundError) as err:
            logger.warning("%s; skipped", err)
            rows.append({"image": str(f), "error": str(err)})
            continue
        x = TF.to_dtype(TF.to_image(img), torch.float32, scale=True)  # (3, H0, W0) in [0, 1]
        h0, w0 = x.shape[-2:]
        x = TF.resize(x, list(cfg.size), antialias=True)[None]
        with torch.no_grad():
            if task == "detect":
                det = model(x)[0]
                keep = det["scores"] >= args.score_thresh
                scale = torch.tensor([w0 / cfg.size[1], h0 / cfg.size[0]] * 2)
                boxes, scores, ids = det["boxes"][keep] * scale, det["scores"][keep], det["labels"][keep]
                # labels count the background as 0 (torchvision's habit); names are for classes 1..N
                names = [labels[i - 1] if 0 < i <= len(labels) else str(int(i)) for i in ids.tolist()]
                drawn = draw_bounding_boxes(TF.to_image(img), boxes, [f"{n} {s:.2f}" for n, s in zip(names, scores)],
                                            colors="red", width=2)
                path = out_dir / f"{f.stem}.boxes.png"
                TF.to_pil_image(drawn).save(path)
                rows.append({"image": str(f), "drawn": str(path), "detections": [
                    {"label": n, "score": float(s), "box_xyxy": [round(float(v), 2) for v in b]}
                    for n, s, b in zip(names, scores, boxes)]})
            else:
                mean, std = cfg.channel_stats
                logits = model(TF.normalize(x, list(mean), list(std)))["out"]
                logits = F.interpolate(logits, size=(h0, w0), mode="bilinear", align_corners=False)
                mask = logits.argmax(1)[0].to(torch.uint8).numpy()
                mask_path, overlay_path = out_dir / f"{f.stem}.mask.png", out_dir / f"{f.stem}.overlay.png"
                save_mask(mask, mask_path)
                overlay_mask(img, mask).save(overlay_path)
                present = np.bincount(mask.ravel(), minlength=1)
                rows.append({"image": str(f), "mask": str(mask_path), "overlay": str(overlay_path),
                             "pixels": {(labels[c] if c < len(labels) else str(c)): int(n)
                                        for c, n in enumerate(present) if n}})
    if args.output:
        common.write_text(args.output, json.dumps(rows, indent=2))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in (r for r in rows if "error" not in r):
        if task == "detect":
            print(f"{r['image']}: {len(r['detections'])} detections -> {r['drawn']}")
            for d in r["detections"]:
                print(f"  {d['score']:.2f}  {d['label']}  {d['box_xyxy']}")
        else:
            print(f"{r['image']}: mask -> {r['mask']}, overlay -> {r['overlay']}")
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
    common.write_text(path, text)


def configure_eval(p: argparse.ArgumentParser) -> None:
    common.add_model(p, required=False, help="registered model name (optional when the checkpoint records it: "
                                             "an .onnx graph or a saved config.json)")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    common.add_num_classes(p)
    p.add_argument("--data", required=True, help="'digits' or a directory with val/ (or class folders); detectors / "
                                                 "segmenters: 'digits-detect', 'digits-segment', COCO or VOC data")
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

    if args.model and _task_of(args.model) in ("detect", "segment"):
        return _eval_task(args, _task_of(args.model))
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
    out = common.write_text(args.output, json.dumps(result, indent=2))
    print(f"top-1 {m['top1']:.2f}  top-5 {m['top5']:.2f}  ({len(source)} images) -> {out}")
    return 0


def _eval_task(args: argparse.Namespace, task_name: str) -> int:
    """COCO mAP (detectors) or mIoU (segmenters) on the val split of `--data`, through the task's own data and
    metric (the numbers a training run logs each epoch)."""
    import torch
    from torch.utils.data import DataLoader

    import mobilevision
    from mobilevision.tasks import create_task
    from mobilevision.train.recipe import Recipe

    if args.split != "val":
        raise ValueError(f"--split {args.split!r}: detectors and segmenters are evaluated on the data's val split")
    model = mobilevision.create_model(args.model, checkpoint_path=args.checkpoint, num_classes=args.num_classes).eval()
    size = int(args.input_size[0]) if args.input_size else int(model.data_config.size[0])
    task = create_task(task_name, args.model, {})
    data = task.build_data(args.data, Recipe(task=task_name, input_size=size, hflip=0.0))
    if data.info.get("num_classes") != model.num_classes:
        raise ValueError(f"checkpoint has {model.num_classes} classes (background included), the data "
                         f"{data.info.get('num_classes')}: evaluate on the data it was trained on")
    labels = getattr(model, "labels", None)
    if labels and data.info.get("labels") and list(labels) != list(data.info["labels"]):
        raise ValueError(f"the data's classes {data.info['labels'][:5]}... differ from the checkpoint's "
                         f"{labels[:5]}...")
    split = data.val
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    metrics = task.evaluate(model, DataLoader(split, batch_size=args.batch_size, collate_fn=data.collate), device)
    result = {"model": args.model, "checkpoint": str(args.checkpoint), "data": args.data, "split": args.split,
              "images": len(split), "input_size": size, "skipped": data.skipped, **metrics}
    out = common.write_text(args.output, json.dumps(result, indent=2))
    if task_name == "detect":
        print(f"mAP@[.5:.95] {metrics['map']:.4f}  mAP@0.5 {metrics['map_50']:.4f}  ({len(split)} images) -> {out}")
    else:
        print(f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_acc']:.4f}  ({len(split)} images) -> {out}")
    return 0
