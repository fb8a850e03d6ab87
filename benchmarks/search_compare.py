"""A searched `moga_searched` model vs mobilenetv3_large_100: digits top-1 of their `train` runs and latency here.

Latency: both fused models at 224 px, batch 1, one thread, timed alternately call by call in one run on the
calling thread's CPU clock (eager and onnxruntime). Top-1: the best val top-1 (model or EMA) of each run's
metrics.jsonl (`mobilevision train --data digits`, the shipped digits recipe).

    PYTHONPATH=src python benchmarks/search_compare.py search_results/model_kwargs.json runs/searched runs/mnv3
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import mobilevision
from mobilevision.deploy.bench import paired_times
from mobilevision.deploy.export import OPSET, _export_legacy, ort_session
from mobilevision.deploy.fusion import fuse
from mobilevision.deploy.machine import cpu_info, machine_load


def best_top1(run: Path) -> tuple[float, int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    best = max(max(r.get("val_top1") or 0, r.get("ema_top1") or 0) for r in rows)
    return best, max(r["epoch"] for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_kwargs")
    p.add_argument("searched_run")
    p.add_argument("reference_run")
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    kwargs = json.loads(Path(args.model_kwargs).read_text())
    models = {"moga_searched": fuse(mobilevision.create_model("moga_searched", **kwargs).eval()),
              "mobilenetv3_large_100": fuse(mobilevision.create_model("mobilenetv3_large_100").eval())}
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    load = machine_load()
    out = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        eager = [lambda m=m: m(x) for m in models.values()]
        a, b = paired_times(*eager, runs=args.runs, warmup=3, clock=time.thread_time)
        out["eager"] = (a["median_ms"], b["median_ms"])
        fns = []
        for n, m in models.items():
            path = Path(tmp) / f"{n}.onnx"
            _export_legacy(m, x, path, False, OPSET)
            sess = ort_session(path, threads=1)
            feed = {sess.get_inputs()[0].name: x.numpy()}
            fns.append(lambda sess=sess, feed=feed: sess.run(None, feed))
        a, b = paired_times(*fns, runs=args.runs, warmup=3, clock=time.thread_time)
        out["onnxruntime"] = (a["median_ms"], b["median_ms"])
    params = {n: sum(p.numel() for p in mobilevision.create_model(n, **(kwargs if n == "moga_searched" else {}))
                     .parameters()) for n in models}
    top1 = {"moga_searched": best_top1(Path(args.searched_run)),
            "mobilenetv3_large_100": best_top1(Path(args.reference_run))}
    print(f"{cpu_info()['cpu']}, 1 thread, CPU clock, 224 px, load {load['load_1m']} -> {machine_load()['load_1m']}")
    print("| model | params M | digits top-1 % (epochs) | eager ms | onnxruntime ms |")
    print("|---|---|---|---|---|")
    for i, n in enumerate(models):
        print(f"| {n} | {params[n] / 1e6:.2f} | {top1[n][0]:.2f} ({top1[n][1]}) | {out['eager'][i]:.2f} | "
              f"{out['onnxruntime'][i]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
