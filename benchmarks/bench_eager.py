"""Eager CPU latency of our fused model vs timm's eager model, same weights, batch 1, default size.

    python benchmarks/bench_eager.py [--models 'mobilenet*'] [--threads 2] [--out bench_eager.csv]

Both sides run in this process, timed alternately call by call (so machine load hits both alike), no_grad,
with torch.set_num_threads fixed.
Ratio = ours / timm (lower is better; goal <= 1.0, stretch 0.8).
"""
from __future__ import annotations

import torch

from peers import parse_args, timm_pairs, twins

from mobilevision.deploy.benchmark import paired_times, print_rows, write_csv
from mobilevision.deploy.fuse import fuse


def main() -> None:
    args = parse_args(__doc__, "bench_eager.csv")
    torch.set_num_threads(args.threads)
    rows = []
    for ours_name, timm_name in timm_pairs(args.models, args.max_params):
        try:
            ours, ref = twins(ours_name, timm_name)
        except ValueError as err:
            print(f"skip {ours_name}: {str(err)[:120]}")
            continue
        ours = fuse(ours)
        c, h, w = ours.default_cfg["input_size"]
        x = torch.randn(1, c, h, w)
        with torch.no_grad():
            diff = (ours(x) - ref(x)).abs().max().item()
        with torch.no_grad():
            t_ours, t_timm = paired_times(lambda: ours(x), lambda: ref(x), args.runs, args.warmup)
        row = {"model": ours_name, "timm": timm_name, "size": h, "threads": args.threads,
               "ours_ms": t_ours["median_ms"], "timm_ms": t_timm["median_ms"],
               "ours_p90_ms": t_ours["p90_ms"], "timm_p90_ms": t_timm["p90_ms"],
               "ratio": t_ours["median_ms"] / t_timm["median_ms"], "max_abs_diff": diff}
        rows.append(row)
        print(f"{ours_name:<26} ours {row['ours_ms']:8.2f} ms  timm {row['timm_ms']:8.2f} ms  ratio {row['ratio']:.3f}",
              flush=True)
    print()
    print_rows(rows, ["model", "size", "ours_ms", "timm_ms", "ratio", "max_abs_diff"])
    write_csv(rows, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
