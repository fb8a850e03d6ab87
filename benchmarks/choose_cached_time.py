"""Wall time of a cached `mobilevision choose` (issue 17: under 2 s) and of `mobilevision --help`.

The cache is `--cache-dir` as a measuring `choose` left it, or (default) a temporary one that choose's own
measuring path fills with stand-in latencies (the hit path reads the file the same way whatever the numbers).
Each figure is the median of `--runs` fresh processes, alternated; the load averages are printed beside them
since the machine may be shared. "PNG unchanged": the output folder already holds this result's choose.png;
"PNG drawn": a new output folder each run (matplotlib imported and the figure drawn).

    PYTHONPATH=src python benchmarks/choose_cached_time.py [--cache-dir DIR] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _wall(argv: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mobilevision", *argv], cwd=cwd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"mobilevision {' '.join(argv)} failed: {proc.stderr.strip()[-300:]}")
    return dt


def _fill(cache: str, budget_ms: float) -> None:
    from mobilevision.deploy import choose as ch

    figs = ch.classifiers()

    def stand_in(name, *args, **kwargs):  # 1 ms + 20 ms per GMAC: a plausible spread of latencies
        ms = 1.0 + 20.0 * figs[name]["gmacs"]
        return {"median_ms": ms, "p90_ms": ms * 1.1, "spread": 0.01, "load_1m": 0.0}

    ch.choose(budget_ms, cache=cache, measure=stand_in, progress=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=None, help="a filled latency cache (default: a stand-in one)")
    p.add_argument("--budget-ms", type=float, default=8.0)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    env_src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join([env_src, os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        if args.cache_dir is None:
            _fill(cache, args.budget_ms)
        base = ["choose", "--budget-ms", f"{args.budget_ms:g}", "--cache-dir", cache, "--no-progress"]
        kept = str(Path(tmp) / "kept")
        _wall(base + ["--output", kept], tmp)  # leaves this result's PNG in `kept`
        load0 = os.getloadavg()
        times: dict[str, list[float]] = {"choose (PNG unchanged)": [], "choose (PNG drawn)": [], "--help": [],
                                         "choose --help": []}
        for i in range(args.runs):
            times["choose (PNG unchanged)"].append(_wall(base + ["--output", kept], tmp))
            times["choose (PNG drawn)"].append(_wall(base + ["--output", str(Path(tmp) / f"new{i}")], tmp))
            times["--help"].append(_wall(["--help"], tmp))
            times["choose --help"].append(_wall(["choose", "--help"], tmp))
        load1 = os.getloadavg()
    print(f"python -m mobilevision ..., median of {args.runs} runs; load average (1/5/15 min) "
          f"{' '.join(f'{v:.2f}' for v in load0)} before, {' '.join(f'{v:.2f}' for v in load1)} after, "
          f"{os.cpu_count()} cores")
    for name, ts in times.items():
        print(f"  {name:<24}{statistics.median(ts):7.2f} s   ({', '.join(f'{t:.2f}' for t in ts)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
