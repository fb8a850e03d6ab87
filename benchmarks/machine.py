"""What the timing scripts share: the machine a benchmark ran on, recorded with its figures (the helper lives in
the package now), and the timing options."""
from __future__ import annotations

import argparse

from mobilevision.deploy.machine import cpu_info

__all__ = ["cpu_info", "timing_parser"]


def timing_parser(doc: str, out: str, runs: int = 20) -> argparse.ArgumentParser:
    """A parser (description: `doc`'s first line) with the options every timing script takes: --threads, --runs,
    --warmup and --out (the CSV file, default `out`); a script adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=runs)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default=out, help="CSV file")
    return p
