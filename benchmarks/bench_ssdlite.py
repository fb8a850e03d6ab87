"""Eager CPU latency of our SSDLite-MobileNetV3 vs torchvision's ssdlite320_mobilenet_v3_large, same weights.

    python benchmarks/bench_ssdlite.py [--threads 2] [--runs 30] [--out bench_ssdlite.csv]

One process, batch 1 at 320 px, no_grad, torch.set_num_threads fixed, the two models timed alternately call by
call (machine load hits both alike). Rows: "full" (a [0, 1] image -> detections after NMS, each model's own
pre- and post-processing) and "core" (normalised image -> head outputs). Ratio = ours / torchvision (goal
<= 1.0). The CPU model and its SIMD flags are recorded with the rows.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision

import mobilevision
from mobilevision.deploy.bench import paired_times, print_rows, write_csv

from machine import cpu_info, timing_parser

def twins() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ref = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tv.pth"
        torch.save(ref.state_dict(), path)
        ours = mobilevision.create_model("ssdlite320_mobilenetv3_large_100", checkpoint_path=path).eval()
    return ours, ref


def photo() -> torch.Tensor:
    try:
        import skimage.data
        from PIL import Image

        img = Image.fromarray(skimage.data.astronaut()).resize((320, 320), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()[None] / 255
    except ImportError:
        return torch.rand(1, 3, 320, 320)


def main() -> None:
    args = timing_parser(__doc__, "bench_ssdlite.csv", runs=30).parse_args()
    torch.set_num_threads(args.threads)
    ours, ref = twins()
    x = photo()
    info = cpu_info()
    cpu, flags = info["cpu"], info["cpu_flags"]
    norm = (x - 0.5) / 0.5
    rows = []
    with torch.no_grad():
        cases = {
            "full": (lambda: ours(x), lambda: ref(list(x))),
            "core": (lambda: ours.head(ours.feature_maps(x)),
                     lambda: ref.head(list(ref.backbone(norm).values()))),
        }
        for case, (fa, fb) in cases.items():
            ta, tb = paired_times(fa, fb, args.runs, args.warmup)
            row = {"model": "ssdlite320_mobilenetv3_large_100", "case": case, "size": 320, "threads": args.threads,
                   "ours_ms": ta["median_ms"], "torchvision_ms": tb["median_ms"], "ours_p90_ms": ta["p90_ms"],
                   "torchvision_p90_ms": tb["p90_ms"], "ratio": ta["median_ms"] / tb["median_ms"],
                   "torch": torch.__version__, "torchvision": torchvision.__version__, "cpu": cpu, "cpu_flags": flags}
            print(f"{case:<5} ours {row['ours_ms']:8.2f} ms  torchvision {row['torchvision_ms']:8.2f} ms  "
                  f"ratio {row['ratio']:.3f}", flush=True)
            rows.append(row)
    print(f"\nCPU: {cpu} [{flags}]")
    print_rows(rows, ["model", "case", "ours_ms", "torchvision_ms", "ratio"])
    write_csv(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
