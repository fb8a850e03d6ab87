"""Eager CPU latency of our DeepLabv3-MobileNetV3 and LR-ASPP vs torchvision's, same weights, batch 1.

    python benchmarks/bench_segment.py [--threads 2] [--size 520] [--runs 20] [--out bench_segment.csv]

torchvision's `deeplabv3_mobilenet_v3_large(aux_loss=True)` / `lraspp_mobilenet_v3_large` at random init are
loaded into our presets (their state dict, our key mapping); both run eager (train form, no fusing), no_grad,
in eval mode (DeepLabv3 without its aux head on both sides), timed alternately call by call in this process.
Three layouts (the `memory` column):
- `nchw`: both called on an NCHW tensor, as a user calls them; ours computes in channels_last inside
  (`Segmenter.channels_last_inference`), torchvision's in NCHW;
- `nchw_same`: the same with ours kept in NCHW too (`channels_last_inference = False`): what our layers do
  alone (ASPP's tap-by-tap dilated branches, `layers.AtrousConv2d`; LR-ASPP classifying before upsampling);
- `channels_last`: both models and the input in channels_last.
Ratio = ours / torchvision, the median over call pairs of the pair's ratio, with its quartiles (lower is better;
goal <= 1.0); each side's median ms as well. The CPU model and flags go in the CSV.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import mobilevision
from mobilevision.deploy.bench import paired_ratio, print_rows, write_csv

from machine import cpu_info, timing_parser


def pairs():
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large

    for ours_name, fn, kw in (("deeplabv3_mobilenetv3_large_100", deeplabv3_mobilenet_v3_large, {"aux_loss": True}),
                              ("lraspp_mobilenetv3_large_100", lraspp_mobilenet_v3_large, {})):
        ref = fn(weights=None, weights_backbone=None, **kw).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tv.pth"
            torch.save(ref.state_dict(), path)
            ours = mobilevision.create_model(ours_name, checkpoint_path=path).eval()
        if kw.get("aux_loss"):
            ref.aux_classifier = None  # eval-time output only, as ours gives in eval mode
        yield ours_name, fn.__name__, ours, ref


def main() -> None:
    p = timing_parser(__doc__, "bench_segment.csv")
    p.add_argument("--size", type=int, default=520)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = cpu_info()
    print(f"CPU: {info['cpu']} [{info['cpu_flags']}], torch {torch.__version__}, {args.threads} threads", flush=True)
    x = torch.randn(1, 3, args.size, args.size)
    rows = []
    for ours_name, ref_name, ours, ref in pairs():
        for memory in ("nchw", "nchw_same", "channels_last"):
            fmt = torch.channels_last if memory == "channels_last" else torch.contiguous_format
            ours, ref, xm = ours.to(memory_format=fmt), ref.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            ours.channels_last_inference = memory == "nchw"
            with torch.no_grad():
                diff = (ours(xm)["out"] - ref(xm)["out"]).abs().max().item()
                t = paired_ratio(lambda: ours(xm), lambda: ref(xm), args.runs, args.warmup)
            row = {"model": ours_name, "torchvision": ref_name, "memory": memory, "size": args.size,
                   "threads": args.threads, "ours_ms": t["a"]["median_ms"], "torchvision_ms": t["b"]["median_ms"],
                   "ours_p90_ms": t["a"]["p90_ms"], "torchvision_p90_ms": t["b"]["p90_ms"], "ratio": t["ratio"],
                   "ratio_q1": t["ratio_q1"], "ratio_q3": t["ratio_q3"], "max_abs_diff": diff, **info}
            print(f"{ours_name:<32} {memory:<13} ours {row['ours_ms']:7.2f} ms  torchvision "
                  f"{row['torchvision_ms']:7.2f} ms  ratio {t['ratio']:.3f} [{t['ratio_q1']:.3f}, "
                  f"{t['ratio_q3']:.3f}]", flush=True)
            rows.append(row)
    print()
    print_rows(rows, ["model", "memory", "size", "ours_ms", "torchvision_ms", "ratio", "ratio_q1", "ratio_q3",
                      "max_abs_diff"])
    write_csv(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
