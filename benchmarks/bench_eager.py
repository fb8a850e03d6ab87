"""Eager CPU latency of our fused model vs timm's eager model, same weights, batch 1, default size.

    python benchmarks/bench_eager.py [--models 'mobilenet*'] [--threads 2] [--out bench_eager.csv]

Both sides run in this process, timed alternately call by call (so machine load hits both alike), no_grad,
with torch.set_num_threads fixed.
Ratio = ours / timm (lower is better; goal <= 1.0, stretch 0.8).
"""
from __future__ import annotations

import torch

from peers import each_twin, parse_args, ratio_row, report

from mobilevision.deploy.bench import paired_times
from mobilevision.deploy.fusion import fuse


def main() -> None:
    args = parse_args(__doc__, "bench_eager.csv")
    torch.set_num_threads(args.threads)
    rows = []
    for ours_name, timm_name, ours, ref in each_twin(args):
        ours = fuse(ours)
        c, h, w = ours.default_cfg["input_size"]
        x = torch.randn(1, c, h, w)
        with torch.no_grad():
            diff = (ours(x) - ref(x)).abs().max().item()
        with torch.no_grad():
            t_ours, t_timm = paired_times(lambda: ours(x), lambda: ref(x), args.runs, args.warmup)
        rows.append(ratio_row(ours_name, timm_name, h, args.threads, t_ours, t_timm, max_abs_diff=diff))
    report(rows, ["max_abs_diff"], args.out)


if __name__ == "__main__":
    main()
