"""`mobilevision explain attention|collapse|activations`: the seed papers' analyses as PNGs (+ raw numbers).

- attention MOBILE_FORMER_MODEL IMAGE: Mobile->Former and Mobile<-Former attention of every block (PNG + .npz);
- collapse MODEL --checkpoint A [--checkpoint B ...] --data digits|DIR: ConvNeXt V2's feature-collapse curve
  (PNG + CSV), several checkpoints on one figure;
- activations MODEL IMAGE...: the channel-mean map of every stage over each image (PNG).
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

from . import common

logger = logging.getLogger("mobilevision.cli")

WHAT = ("attention", "collapse", "activations")
CHECKPOINT_HELP = ("weights file or run directory (best/, last/); its config.json gives the preprocessing. "
                   "Without it the model has random weights")


def configure_explain(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="explain", metavar="{attention,collapse,activations}", parser_class=type(p))
    a = sub.add_parser("attention", help="Mobile-Former: which pixels each token reads (Mobile->Former) and which "
                                         "token each pixel reads (Mobile<-Former), per block, over the image",
                       description="Mobile->Former and Mobile<-Former attention of every block of a Mobile-Former, "
                                   "drawn over the image (tokens x blocks, heads averaged), raw maps in a .npz")
    _image_args(a, "[NAME] IMAGE", "the Mobile-Former model name (or --model), then one image file")
    common.add_output(a, help="PNG path (default explain/attention_<image>.png); the .npz goes beside it")

    c = sub.add_parser("collapse", help="ConvNeXt V2 feature collapse: per block, the average pairwise cosine "
                                        "distance between channels, for one or more checkpoints",
                       description="average pairwise cosine distance between the channels of each block's maps "
                                   "over a sample of images, against depth; one line per checkpoint (PNG + CSV)")
    common.add_model(c, help="registered model name (a checkpoint whose config.json names another model is built "
                             "as that one)")
    c.add_argument("--checkpoint", action="append", default=[], help=CHECKPOINT_HELP + "; repeat to compare")
    c.add_argument("--label", action="append", default=[], help="legend name of each --checkpoint, in order "
                                                                 "(default: its path)")
    c.add_argument("--data", required=True, help="'digits' (its val split) or a directory of images (searched "
                                                 "recursively)")
    c.add_argument("--num-images", type=int, default=64, help="images sampled evenly from the data (default 64)")
    c.add_argument("--features", choices=("output", "mlp"), default="output",
                   help="output: each block's output map (default); mlp: the dimension-expansion features inside "
                        "each ConvNeXt block (after GELU and GRN), the layers the ConvNeXt V2 paper plots")
    common.add_batch_size(c, default=16, help="images per forward pass (default 16)")
    common.add_input_size(c, help="input size (default: the checkpoint's; an FCMAE encoder's pre-training size)")
    common.add_num_classes(c)
    common.add_output(c, default="explain/collapse.png", help="PNG path (default explain/collapse.png); the CSV "
                                                                "goes beside it")

    v = sub.add_parser("activations", help="the channel-mean activation map of every stage over the image(s)",
                       description="the mean activation map (over channels) of each stage of a backbone, drawn "
                                   "over each image: one row per image")
    _image_args(v, "[NAME] IMAGE...", "the model name (or --model), then image files or folders")
    common.add_output(v, help="PNG path (default explain/activations_<first image>.png)")


def _image_args(p: argparse.ArgumentParser, metavar: str, help: str) -> None:
    p.add_argument("inputs", nargs="*", metavar=metavar, help=help)
    p.add_argument("--model", dest="model", metavar="NAME", help="the same as NAME")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    common.add_num_classes(p)
    common.add_input_size(p, help="input size (default: the checkpoint's)")
    p.set_defaults(_finalize=_split_inputs)


def _split_inputs(args: argparse.Namespace) -> None:
    """`NAME IMAGE...` or `IMAGE... --model NAME`: sets `args.model` and `args.images`."""
    inputs = list(args.inputs)
    del args.inputs
    if not args.model:
        if not inputs:
            raise ValueError("give a model: NAME or --model NAME, then an image")
        args.model, inputs = inputs[0], inputs[1:]
    if not inputs:
        raise ValueError("give an image file after the model name")
    if args.explain == "attention" and len(inputs) != 1:
        raise ValueError(f"explain attention draws one image; got {len(inputs)}: {' '.join(inputs[:3])}")
    args.images = inputs


def run_explain(args: argparse.Namespace) -> int:
    what = getattr(args, "explain", None)
    if what not in WHAT:
        raise ValueError(f"give what to explain: {', '.join(WHAT)} (e.g. mobilevision explain attention "
                         "mobileformer_26m photo.jpg)")
    return {"attention": _attention, "collapse": _collapse, "activations": _activations}[what](args)


def _model_and_inputs(args: argparse.Namespace):
    """The model of NAME / --checkpoint, its data config, the images as (B, C, H, W) and their files."""
    from mobilevision.deploy.inference import image_files
    from mobilevision.explain.inputs import data_config, image_batch, load_model, read_images

    files = image_files(args.images)
    model = load_model(args.model, args.checkpoint, args.num_classes)
    cfg = data_config(model, args.checkpoint, args.input_size)
    return model, cfg, image_batch(read_images(files), cfg), files


def _png_output(output: str | None, default: Path) -> Path:
    out = Path(output).expanduser() if output else default  # finalize checked --output
    if out.suffix.lower() != ".png":
        raise ValueError(f"--output {output}: give a .png file name (companion files go beside it)")
    return out


def _attention(args: argparse.Namespace) -> int:
    import numpy as np

    from mobilevision.explain.attention import attention_arrays, capture_mobile_former_attention, plot_attention
    from mobilevision.explain.plotting import display_image
    from mobilevision.models.checkpoint import atomic_write_bytes

    out = _png_output(args.output, Path("explain") / f"attention_{Path(args.images[0]).stem}.png")
    model, cfg, x, files = _model_and_inputs(args)
    blocks, _ = capture_mobile_former_attention(model, x)
    _warn_random(args.checkpoint, args.model)
    image = display_image(x[0], cfg)
    title = (f"{args.model} attention on {files[0].name} ({x.shape[-2]}x{x.shape[-1]} px, heads "
             f"averaged){'' if args.checkpoint else ', random weights'}")
    plot_attention(blocks, image, out, title=title)
    arrays = {**attention_arrays(blocks), "image": image.astype(np.float32)}
    npz = out.with_suffix(".npz")

    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez_compressed(f, **arrays)

    atomic_write_bytes(npz, write_npz)
    t = blocks[0].mobile_to_former.shape[2]
    print(f"{len(blocks)} Mobile->Former maps ({t} tokens) and {sum(b.former_to_mobile is not None for b in blocks)} "
          f"Mobile<-Former maps -> {out}, {npz}")
    return 0


def _activations(args: argparse.Namespace) -> int:
    from mobilevision.explain.activations import plot_activations, stage_activation_maps
    from mobilevision.explain.plotting import display_image

    out = _png_output(args.output, Path("explain") / f"activations_{Path(args.images[0]).stem}.png")
    model, cfg, x, files = _model_and_inputs(args)
    maps = stage_activation_maps(model, x)
    _warn_random(args.checkpoint, args.model)
    titles = [f"{e['module']}\n{e['num_chs']} ch, 1/{e['reduction']}" for e in model.feature_info]
    plot_activations([[m[i].numpy() for m in maps] for i in range(len(x))], [display_image(v, cfg) for v in x],
                     titles, out, row_titles=[f.name for f in files],
                     title=f"{args.model}: mean activation per stage ({x.shape[-2]}x{x.shape[-1]} px)"
                           + ("" if args.checkpoint else ", random weights"))
    print(f"{len(maps)} stages x {len(x)} image(s) -> {out}")
    return 0


def _collapse(args: argparse.Namespace) -> int:
    from mobilevision.explain.collapse import collapse_rows, feature_collapse, plot_collapse
    from mobilevision.explain.inputs import data_batches, data_config, load_model
    from mobilevision.models.checkpoint import read_config

    checkpoints = list(args.checkpoint) or [None]
    if args.label and len(args.label) != len(checkpoints):
        raise ValueError(f"{len(args.label)} --label for {len(checkpoints)} --checkpoint; give one per checkpoint")
    for ck in checkpoints:
        if ck is not None and not Path(ck).expanduser().exists():
            raise FileNotFoundError(f"checkpoint not found: {ck}")
    out = _png_output(args.output, Path("explain/collapse.png"))
    results, rows = [], []
    for k, ck in enumerate(checkpoints):
        name = ((read_config(ck) or {}).get("model") if ck else None) or args.model
        model = load_model(name, ck, args.num_classes)
        cfg = data_config(model, ck, args.input_size)
        batches, n = data_batches(args.data, cfg, args.num_images, args.batch_size)
        res = feature_collapse(model, batches, args.features)
        _warn_random(ck, name)
        label = args.label[k] if args.label else (_short(ck) if ck else f"{name} (random weights)")
        results.append((label, res))
        rows += collapse_rows(label, res, {"model": name, "checkpoint": str(ck or ""), "input_size": cfg.size[0]})
        print(f"{label}: mean {res.mean.mean():.4f}  per block " + " ".join(f"{v:.3f}" for v in res.mean)
              + f"  ({n} images, {cfg.size[0]} px)")
    data_name = "digits val" if args.data == "digits" else Path(args.data).name
    plot_collapse(results, out, title=f"Feature collapse on {data_name} ({results[0][1].values.shape[0]} images)"
                                      f": higher = more diverse channels")
    csv_path = out.with_suffix(".csv")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    common.write_text(csv_path, buf.getvalue())
    print(f"-> {out}, {csv_path}")
    return 0


def _short(path: str) -> str:
    """A run's `.../NAME/last` reads better as `NAME/last`."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.name in ("best", "last") else p.name


def _warn_random(checkpoint, name: str) -> None:
    if checkpoint is None:
        logger.warning("no --checkpoint: %s has random weights, so its maps show no learned structure", name)
