"""Mobile-Former vs MobileNetV3 latency from 224 to 1024 px on this machine (eager and onnxruntime), alternating.

mobileformer_214m and mobilenetv3_large_100 have about the same MACs at 224 px (214 M / 217 M); the seed says
Mobile-Former is faster only above ~800 px (on a GPU). At every size the two models are timed call by call,
alternately (`bench.paired_times`), so drifting load hits both alike; the crossover is where the ratio
MobileFormer / MobileNetV3 crosses 1 (linear interpolation between sizes). Writes CSV, JSON and a PNG.

    PYTHONPATH=src python benchmarks/crossover.py --out crossover
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
from mobilevision.deploy.bench import paired_times, write_csv
from mobilevision.deploy.export import OPSET, _export_legacy, ort_session
from mobilevision.deploy.fusion import fuse
from mobilevision.deploy.machine import cpu_info, machine_load

PAIR = ("mobileformer_214m", "mobilenetv3_large_100")


def crossing(sizes: list[int], ratios: list[float]) -> float | None:
    """The first size where ratio (A / B latency) goes from above 1 to at most 1, interpolated; None if never."""
    for (s0, r0), (s1, r1) in zip(zip(sizes, ratios), zip(sizes[1:], ratios[1:])):
        if r0 > 1 >= r1:
            return s0 + (r0 - 1) / (r0 - r1) * (s1 - s0)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="224,384,512,640,768,896,1024")
    p.add_argument("--runtimes", default="eager,onnxruntime")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="cpu: thread CPU time, --threads 1")
    p.add_argument("--out", default="crossover")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.clock == "cpu" and args.threads != 1:
        p.error("--clock cpu needs --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    models = {n: fuse(mobilevision.create_model(n).eval()) for n in PAIR}
    rows, tmp, t0 = [], tempfile.TemporaryDirectory(), time.time()
    load_before = machine_load()
    for rt in args.runtimes.split(","):
        for s in sizes:
            x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(0))
            fns = []
            for n, m in models.items():
                if rt == "eager":
                    fns.append(lambda m=m: m(x))
                else:
                    path = Path(tmp.name) / f"{n}_{s}.onnx"
                    _export_legacy(m, x, path, False, OPSET)
                    sess = ort_session(path, threads=args.threads)
                    feed = {sess.get_inputs()[0].name: x.numpy()}
                    fns.append(lambda sess=sess, feed=feed: sess.run(None, feed))
            with torch.no_grad():
                a, b = paired_times(fns[0], fns[1], runs=args.runs, warmup=args.warmup, clock=clock)
            row = {"runtime": rt, "size": s, f"{PAIR[0]}_ms": a["median_ms"], f"{PAIR[1]}_ms": b["median_ms"],
                   "ratio": a["median_ms"] / b["median_ms"], "threads": args.threads, "clock": args.clock,
                   **machine_load()}
            rows.append(row)
            print(f"{rt:<12}{s:>5}px  {PAIR[0]} {a['median_ms']:8.1f} ms  {PAIR[1]} {b['median_ms']:8.1f} ms  "
                  f"ratio {row['ratio']:.2f}", file=sys.stderr)
    tmp.cleanup()
    summary = {}
    for rt in args.runtimes.split(","):
        rs = [r for r in rows if r["runtime"] == rt]
        summary[rt] = crossing([r["size"] for r in rs], [r["ratio"] for r in rs])
    info = {**cpu_info(), "threads": args.threads, "clock": args.clock, "load_before": load_before, "load_after": machine_load(),
            "total_s": round(time.time() - t0, 1), "crossover_px": summary}
    write_csv(rows, out / "crossover.csv")
    (out / "crossover.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rt, style in zip(args.runtimes.split(","), ("-", "--")):
        rs = [r for r in rows if r["runtime"] == rt]
        for n, color in zip(PAIR, ("tab:red", "tab:blue")):
            ax.plot([r["size"] for r in rs], [r[f"{n}_ms"] for r in rs], style, marker="o", color=color,
                    label=f"{n} ({rt})")
        if summary[rt]:
            ax.axvline(summary[rt], color="grey", ls=style, lw=0.8)
    ax.set_xlabel("input side (px)")
    ax.set_ylabel("median latency (ms, log)")
    ax.set_yscale("log")
    ax.set_title(f"{info['cpu'][:40]}, {args.threads} threads, {args.clock} clock, load {load_before['load_1m']}", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "crossover.png", dpi=120)
    plt.close(fig)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
