"""INT8 / FP32 latency ratio per runtime: onnxruntime (static QDQ), OpenVINO (NNCF; FP32 with the f32 precision
hint, plus its bf16 as a row of its own) and ExecuTorch / XNNPACK (PT2E + XNNPACKQuantizer).

    python benchmarks/bench_runtimes_int8.py [--models mobilenetv2_100,...] [--runtimes onnxruntime,openvino,executorch]
        [--threads 2] [--runs 30] [--num-calibration 64] [--runs-dir runs/int8] [--out bench_runtimes_int8.csv]

Each model is exported fused at its default size (static H / W, dynamic batch); INT8 calibrates on digits train
images at that size. FP32 and INT8 of one runtime are timed alternately, call by call, in one run (batch 1, the
given thread count for every runtime), so load on a shared machine hits both sides alike; the CPU model and flags
are recorded. Fidelity: top-1 agreement with FP32 and max |logit error| / max(1, |logit|) on 96 digits val images. Weights: RUNS_DIR/<model>/best (a digits-trained checkpoint, adds top-1 on the digits val split)
when it exists, else random init (speed does not depend on the weights).
Goals (issue 15): INT8 <= 0.6 x FP32 for the MobileNets on a VNNI / AMX CPU; faster than FP32 at all for
EfficientNet-B0 and ConvNeXt V2 atto.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from machine import cpu_info, timing_parser

import mobilevision
from mobilevision.deploy.bench import paired_times, print_rows, write_csv
from mobilevision.deploy.export import export_model, file_bytes, ort_session
from mobilevision.deploy.fusion import fuse
from mobilevision.deploy.quantize import calibration_data, quantize_file
from mobilevision.deploy.runtime import load_exported

DEFAULT_MODELS = "mobilenetv2_100,mobilenetv3_large_100,efficientnet_b0,convnextv2_atto"
SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml", "executorch": ".pte"}
FORMAT = {"onnxruntime": "onnx", "openvino": "openvino", "executorch": "executorch"}


def runner_fn(runtime: str, path: Path, x: np.ndarray, threads: int, precision: str = "fp32"):
    """A no-argument callable running `x` through `path` on `runtime` with `threads` threads."""
    if runtime == "onnxruntime":
        sess = ort_session(path, threads, spin=False)
        feed = {sess.get_inputs()[0].name: x}
        return lambda: sess.run(None, feed)
    kw = {"precision": precision} if runtime == "openvino" else {}
    runner = load_exported(path, threads=threads, **kw)
    return lambda: runner._run(x)


def logits(runtime: str, path: Path, x_eval: np.ndarray, precision: str = "fp32") -> np.ndarray:
    kw = {"precision": precision} if runtime == "openvino" else {}
    return load_exported(path, **kw).run(x_eval, batch=16)


def top1(out: np.ndarray, y_eval) -> float | None:
    return None if y_eval is None else float((out.argmax(-1) == y_eval).mean())


def main() -> None:
    p = timing_parser(__doc__, "bench_runtimes_int8.csv", runs=30)
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--runtimes", default="onnxruntime,openvino,executorch")
    p.add_argument("--num-calibration", type=int, default=64)
    p.add_argument("--runs-dir", default="runs/int8", help="digits checkpoints RUNS_DIR/<model>/best, if any")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    info = cpu_info()
    print(f"CPU: {info['cpu']} [{info['cpu_flags']}], torch {torch.__version__}, {args.threads} threads, batch 1",
          flush=True)
    rows = []
    for name in args.models.split(","):
        ckpt = Path(args.runs_dir) / name / "best"
        trained = (ckpt / "model.safetensors").is_file()
        model = mobilevision.create_model(name, checkpoint_path=ckpt if trained else None).eval()
        model = fuse(model)
        c, h, w = model.default_cfg["input_size"]
        calib, x_eval, y_eval = calibration_data(model, "digits", args.num_calibration)
        if not trained:
            y_eval = None
        x = np.random.default_rng(0).standard_normal((1, c, h, w), dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for rt in args.runtimes.split(","):
                fmt, suf = FORMAT[rt], SUFFIX[rt]
                fp32, int8 = tmp / f"fp32{suf}", tmp / f"int8{suf}"
                export_model(model, fp32, fmt, fuse_first=False)
                if fmt == "executorch":
                    export_model(model, int8, fmt, fuse_first=False, calibration=calib)
                else:
                    quantize_file(fp32, int8, calib)
                pairs = [("int8", int8, "fp32")] + ([("bf16", fp32, "bf16")] if rt == "openvino" else [])
                base = runner_fn(rt, fp32, x, args.threads)
                for prec, path, hint in pairs:
                    other = runner_fn(rt, path, x, args.threads, hint)
                    t32, tq = paired_times(base, other, args.runs, args.warmup)
                    # fidelity on digits val images: top-1 agreement with FP32 and the logits' error
                    l32, lq = logits(rt, fp32, x_eval[:96]), logits(rt, path, x_eval[:96], hint)
                    rel_err = float(np.abs(lq - l32).max() / max(1.0, np.abs(l32).max()))
                    row = {"model": name, "runtime": rt, "precision": prec, "size": h, "threads": args.threads,
                           "fp32_ms": t32["median_ms"], "other_ms": tq["median_ms"],
                           "ratio": tq["median_ms"] / t32["median_ms"], "fp32_p90_ms": t32["p90_ms"],
                           "other_p90_ms": tq["p90_ms"], "size_ratio": file_bytes(path) / file_bytes(fp32),
                           "agreement": float((l32.argmax(-1) == lq.argmax(-1)).mean()), "rel_err": rel_err,
                           "fp32_top1": top1(l32, y_eval[:96] if y_eval is not None else None),
                           "other_top1": top1(lq, y_eval[:96] if y_eval is not None else None), **info}
                    rows.append(row)
                    print(f"{name:<24} {rt:<12} {prec}/fp32  fp32 {row['fp32_ms']:8.2f} ms  {prec} "
                          f"{row['other_ms']:8.2f} ms  ratio {row['ratio']:.3f}  agreement {row['agreement']:.2f}",
                          flush=True)
    print()
    print_rows(rows, ["model", "runtime", "precision", "fp32_ms", "other_ms", "ratio", "size_ratio", "agreement",
                      "rel_err", "fp32_top1", "other_top1"])
    write_csv(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
