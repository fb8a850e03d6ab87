"""Is `mobilevision choose`'s Pareto front in the same latency order when its members are benchmarked directly?

Reads a `choose.json` (from `mobilevision choose --output DIR`), rebuilds the front's models and times them
round-robin in one run (round r times every model once, so drifting load hits all alike), with the runtime,
threads and clock the front was measured with, and prints both orders and Kendall's tau. Each model's turn
starts with `--warmup` untimed calls: choose times a model in a steady state, not the first calls after another
model evicted its weights.

    PYTHONPATH=src python benchmarks/choose_front_check.py choose_results/choose.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile

import torch

import mobilevision
from mobilevision.deploy.choose import runner_for
from mobilevision.deploy.export import export_form
from mobilevision.deploy.fusion import fuse
from mobilevision.deploy.machine import machine_load


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("choose_json")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls at the start of each model's turn")
    p.add_argument("--max-ms", type=float, default=None, help="check only the front members at most this slow")
    args = p.parse_args(argv)
    d = json.loads(open(args.choose_json).read())
    key, front = d["key"], d["front"]
    rows = {r["model"]: r for r in d["rows"]}
    if args.max_ms is not None:
        front = [n for n in front if rows[n]["latency_ms"] <= args.max_ms]
    torch.set_num_threads(key["threads"])
    x = torch.randn(key["batch"], 3, key["size"], key["size"], generator=torch.Generator().manual_seed(0))
    timers, tmp = {}, tempfile.TemporaryDirectory()
    for i, n in enumerate(front):
        m = export_form(fuse(mobilevision.create_model(n).eval()))
        work = f"{tmp.name}/{i}"
        import os

        os.makedirs(work)
        timers[n] = runner_for(m, key["runtime"], x, key["threads"], work, key.get("clock", "wall"))
        timers[n](1, 1)
    meds: dict[str, list[float]] = {n: [] for n in front}
    load = machine_load()
    with torch.no_grad():
        for _ in range(args.rounds):
            for n in front:
                meds[n].append(timers[n](args.warmup, args.runs)["median_ms"])
    direct = {n: statistics.median(v) for n, v in meds.items()}
    order = sorted(front, key=direct.get)
    from scipy.stats import kendalltau

    tau = kendalltau([rows[n]["latency_ms"] for n in front], [direct[n] for n in front]).statistic
    print(f"load {load['load_1m']} -> {machine_load()['load_1m']}; {key['runtime']}, {key['threads']} thread(s), "
          f"{key.get('clock', 'wall')} clock; {args.rounds} rounds of {args.warmup} untimed + {args.runs} timed calls")
    print(f"{'model':<30}{'choose ms':>10}{'direct ms':>10}")
    for n in front:
        print(f"{n:<30}{rows[n]['latency_ms']:>10.2f}{direct[n]:>10.2f}")
    print(f"same order: {order == front}; Kendall tau {tau:.3f}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
