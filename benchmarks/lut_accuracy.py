"""How well the per-block latency table predicts whole inverted-residual models on this machine.

For each runtime (eager, onnxruntime): build the table of every part kind of the models (each kind measured
once, `mobilevision.deploy.latency_table`), then measure each whole model, all in this one run, and report
predicted vs measured latency per model and the median absolute relative error. Writes CSV and markdown.

Default is one thread on the CPU clock (the calling thread's CPU time): on a shared 2-core machine wall time
of a 2-thread run mostly measures the other jobs (see the README's "Choosing a backbone").

    PYTHONPATH=src python benchmarks/lut_accuracy.py --out lut_accuracy
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from mobilevision.deploy.latency_table import LatencyTable, fused_model, time_part
from mobilevision.deploy.machine import cpu_info, machine_load

# the 20: MobileNetV2 (5), MobileNetV3 (6), MoGA (3), EfficientNet B0-B5 (6); MobileNetV1 has no inverted
# residual, B6 / B7 are left out for time (they are B0's blocks, wider)
MODELS = ([f"mobilenetv2_{w}" for w in ("140", "100", "075", "050", "035")]
          + [f"mobilenetv3_{v}" for v in ("large_100", "large_075", "small_100", "small_075", "large_minimal_100",
                                          "small_minimal_100")]
          + ["moga_a", "moga_b", "moga_c"] + [f"efficientnet_b{i}" for i in range(6)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--runtimes", default="eager,onnxruntime")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--no-flush", action="store_true", help="time parts from a hot cache")
    p.add_argument("--out", default="lut_accuracy")
    args = p.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    models = {n: fused_model(n) for n in names}
    rows, tables, t0 = [], {}, time.time()
    load_before = machine_load()
    for rt in args.runtimes.split(","):
        table = LatencyTable(rt, args.threads, 1, clock=args.clock, flush=not args.no_flush)
        tb = time.time()
        n_kinds = table.measure(models.values(), args.size, progress=True)
        table.meta = {"models": names, "size": args.size, "build_s": round(time.time() - tb, 1)}
        table.save(out / f"lut_{rt}.json")
        tables[rt] = table
        coef = table.cache_model["coef"] if table.cache_model else None
        print(f"{rt}: {n_kinds} part kinds measured in {time.time() - tb:.0f} s, overhead {table.overhead_ms:.4f} ms"
              + (f", cold fraction f = {coef[0]:.3f} + {coef[1]:.3f} P + {coef[2]:.3f} A" if coef else ""),
              file=sys.stderr)
        for n, m in models.items():
            pred = table.predict(m, args.size)
            warm, cold = table._sums(m, args.size)
            meas = time_part(m, (1, 3, args.size, args.size), rt, args.threads, args.clock)
            err = pred / meas["median_ms"] - 1
            rows.append({"model": n, "runtime": rt, "predicted_ms": round(pred, 3),
                         "measured_ms": round(meas["median_ms"], 3), "rel_error": round(err, 4),
                         "warm_ms": round(warm, 3), "cold_ms": round(cold, 3),
                         "cold_fraction": round(table.cold_fraction(m, args.size), 3),
                         "spread": round(meas["spread"], 4), "parts": len(table.predict(m, args.size, True)[1]),
                         **machine_load()})
            print(f"  {n:<30}{rt:<12} predicted {pred:8.2f} ms  measured {meas['median_ms']:8.2f} ms  "
                  f"error {err * 100:+6.1f} %  (warm {warm:.2f}, cold {cold:.2f}, f {rows[-1]['cold_fraction']})",
                  file=sys.stderr)
    summary = {}
    for rt in tables:
        errs = [abs(r["rel_error"]) for r in rows if r["runtime"] == rt]
        summary[rt] = {"median_abs_rel_error": statistics.median(errs), "max_abs_rel_error": max(errs),
                       "models": len(errs), "part_kinds": len(tables[rt].entries),
                       "cache_model": tables[rt].cache_model}
    info = {**cpu_info(), "threads": args.threads, "clock": args.clock, "size": args.size,
            "flush": not args.no_flush, "load_before": load_before, "load_after": machine_load(),
            "total_s": round(time.time() - t0, 1), "summary": summary}
    import csv

    with open(out / "lut_accuracy.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "lut_accuracy.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    md = [f"LUT accuracy on {info['cpu']} ({info['cpu_flags']}), {args.threads} thread(s), {args.clock} clock, "
          f"{args.size}px, batch 1; load {load_before['load_1m']} -> {info['load_after']['load_1m']} (1-min avg, "
          f"{load_before['cores']} cores)", "",
          "| model | " + " | ".join(f"{rt} pred / meas ms (err) [warm, cold, f]" for rt in tables) + " |",
          "|---|" + "---|" * len(tables)]
    for n in names:
        cells = []
        for rt in tables:
            r = next(r for r in rows if r["model"] == n and r["runtime"] == rt)
            cells.append(f"{r['predicted_ms']:.2f} / {r['measured_ms']:.2f} ({r['rel_error'] * 100:+.1f} %) "
                         f"[{r['warm_ms']:.2f}, {r['cold_ms']:.2f}, {r['cold_fraction']:.2f}]")
        md.append(f"| {n} | " + " | ".join(cells) + " |")
    md.append("| **median abs. error** | " + " | ".join(
        f"**{summary[rt]['median_abs_rel_error'] * 100:.1f} %** (max {summary[rt]['max_abs_rel_error'] * 100:.1f} %, "
        f"{summary[rt]['part_kinds']} part kinds)" for rt in tables) + " |")
    for rt in tables:
        cm = tables[rt].cache_model
        if cm:
            md.append(f"\n{rt}: cold fraction f = {cm['coef'][0]:.3f} + {cm['coef'][1]:.3f} P + {cm['coef'][2]:.3f} A "
                      f"(P, A: weight / activation bytes over the {cm['llc_bytes'] / 2**20:.0f} MiB last-level cache), "
                      f"fitted on {len(cm['rows'])} calibration models (uniform search-space models, not zoo models)")
    (out / "lut_accuracy.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
