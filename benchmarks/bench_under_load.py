"""The main job under load: `mobilevision train --data digits --model mobilevit_xxs` (one epoch) alone and
next to another CPU-heavy training process, for several thread settings; reports the slowdown ratio.

A fair share of 2 cores between 2 busy processes makes a job about 2x slower; OpenMP threads that spin while
waiting for a descheduled sibling make it far worse (issue 11: 246 -> 4.5 images/s). Each setting runs
idle / loaded alternately, `--rounds` times; the medians of the training images/s (metrics.jsonl) are compared.

    python benchmarks/bench_under_load.py                       # the default settings below
    python benchmarks/bench_under_load.py --settings "0:lib,1:lib,0:gomp" --rounds 3

A setting is THREADS:POLICY, threads as the recipe field (0 = one per core) and POLICY one of `lib` (the
CLI's default: `mobilevision train` sets OMP_WAIT_POLICY=PASSIVE unless it is set), `gomp` (GNU OpenMP's own
default, spin then sleep: the behaviour before issue 11), ACTIVE or PASSIVE. The competitor is the same
command with the library's defaults, looping, started before the loaded run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

JOB = ["-m", "mobilevision", "train", "--model", "mobilevit_xxs", "--data", "digits"]


def _env(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if policy == "gomp":
        env["OMP_WAIT_POLICY"] = ""  # set but empty: libgomp keeps its default, mobilevision does not override
    elif policy != "lib":
        env["OMP_WAIT_POLICY"] = policy
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(src)
    return env


def run_job(out: Path, threads: int, policy: str, epochs: int = 1) -> float:
    """Training images/s of one short main job."""
    cmd = [sys.executable, *JOB, "--epochs", str(epochs), "--output", str(out), "--set", f"threads={threads}",
           "--set", "checkpoint_every=0"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(policy))
    if done.returncode != 0:
        raise SystemExit(f"main job failed: {done.stderr[-1500:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["images_per_s"] for r in rows)


def start_competitor(out: Path) -> subprocess.Popen:
    """The same job with the library's defaults (threads from the recipe), many epochs, in the background."""
    cmd = [sys.executable, *JOB, "--epochs", "1000", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env("lib"))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait until it trains (its first progress line)
        line = proc.stderr.readline()
        if "step" in line:
            break
    # keep draining its log so that a full pipe never blocks it
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="0:lib,1:lib,0:gomp",
                   help="comma-separated THREADS:OMP_WAIT_POLICY settings of the main job")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    settings = [(int(s.split(":")[0]), s.split(":")[1] if ":" in s else "lib") for s in args.settings.split(",")]
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        k = 0
        for r in range(args.rounds):
            for threads, policy in settings:
                key = f"threads={threads} wait policy {policy}"
                res = results.setdefault(key, {"idle": [], "loaded": []})
                res["idle"].append(run_job(tmp / f"idle{k}", threads, policy))
                comp = start_competitor(tmp / f"comp{k}")
                try:
                    res["loaded"].append(run_job(tmp / f"loaded{k}", threads, policy))
                finally:
                    comp.terminate()
                    comp.wait()
                k += 1
                print(f"round {r + 1} {key}: idle {res['idle'][-1]:.1f} img/s, loaded {res['loaded'][-1]:.1f} img/s",
                      flush=True)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"\nCPU: {cpu}, {os.cpu_count()} logical cores; load average at the end {os.getloadavg()[0]:.1f}")
    print("| main job setting | idle img/s | next to 1 training img/s | slowdown |")
    print("|---|---|---|---|")
    for key, res in results.items():
        idle, loaded = statistics.median(res["idle"]), statistics.median(res["loaded"])
        print(f"| {key} | {idle:.1f} | {loaded:.1f} | {idle / loaded:.2f}x |")


if __name__ == "__main__":
    main()
