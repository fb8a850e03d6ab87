"""INT8 (onnxruntime static QDQ, per-channel) vs FP32 onnxruntime: latency ratio and digits top-1 drop.

    python benchmarks/bench_int8.py --runs-dir runs/int8 [--models mobilenetv3_small_100,mobilevit_xxs]

Each model is a digits-trained checkpoint: RUNS_DIR/<model>/best from `mobilevision train --data digits
--model <model> --output RUNS_DIR/<model>` (trained here with the shipped digits recipe when missing). It is
exported fused with dynamic H/W, quantized with `quantize_onnx` (calibration: 128 digits train images;
evaluation: the 360-image digits val split at the trained size), and both graphs are timed at batch 1 on the
model's default ImageNet size with a fixed thread count, alternating FP32 and INT8 runs.
Goals: latency ratio <= 0.6, top-1 drop <= 1 point.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import mobilevision
from mobilevision.deploy.bench import paired_times, print_rows, write_csv
from mobilevision.deploy.export import export_onnx, ort_session
from mobilevision.deploy.quantize import quantize_onnx
from mobilevision.models.registry import get_config

DEFAULT_MODELS = "mobilenetv3_small_100,mobilevit_xxs,convnextv2_atto,poolformer_s12"


def digits_checkpoint(name: str, runs_dir: Path, epochs: int | None) -> Path:
    """RUNS_DIR/<name>/best, training it with the digits recipe first if it is not there."""
    best = runs_dir / name / "best"
    if not (best / "model.safetensors").is_file():
        from mobilevision.tasks.classify import ClassifyTask
        from mobilevision.train import apply_overrides, fit, load_recipe

        print(f"training {name} on digits -> {runs_dir / name}", flush=True)
        fit(ClassifyTask(name), apply_overrides(load_recipe("digits"), epochs=epochs), "digits", runs_dir / name)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated model names")
    p.add_argument("--runs-dir", default="runs/int8", help="digits runs, one directory per model")
    p.add_argument("--epochs", type=int, default=None, help="epochs when a model must be trained (default: recipe)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--out", default="bench_int8.csv")
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        ckpt = digits_checkpoint(name, Path(args.runs_dir), args.epochs)
        model = mobilevision.create_model(name, checkpoint_path=ckpt).eval()
        c, h, w = get_config(name).input_size  # latency at the deployment size, not the digits size
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            export_onnx(model, tmp / "fp32.onnx", dynamic=True)
            rep = quantize_onnx(tmp / "fp32.onnx", tmp / "int8.onnx", "digits", threads=args.threads)
            fp32 = ort_session(tmp / "fp32.onnx", args.threads, spin=False)
            int8 = ort_session(tmp / "int8.onnx", args.threads, spin=False)
            x = np.random.default_rng(0).standard_normal((1, c, h, w), dtype=np.float32)
            feed = {fp32.get_inputs()[0].name: x}
            t32, t8 = paired_times(lambda: fp32.run(None, feed), lambda: int8.run(None, feed), args.runs)
        row = {"model": name, "size": h, "threads": args.threads, "fp32_ms": t32["median_ms"],
               "int8_ms": t8["median_ms"], "ratio": t8["median_ms"] / t32["median_ms"],
               "fp32_top1": rep.fp32_top1 * 100, "int8_top1": rep.int8_top1 * 100,
               "drop_points": (rep.fp32_top1 - rep.int8_top1) * 100, "size_ratio": rep.int8_bytes / rep.fp32_bytes}
        rows.append(row)
        print(f"{name:<26} fp32 {row['fp32_ms']:8.2f} ms  int8 {row['int8_ms']:8.2f} ms  ratio {row['ratio']:.3f}  "
              f"top-1 {row['fp32_top1']:.2f} -> {row['int8_top1']:.2f}", flush=True)
    print()
    print_rows(rows, ["model", "size", "fp32_ms", "int8_ms", "ratio", "fp32_top1", "int8_top1", "drop_points",
                      "size_ratio"])
    write_csv(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
