"""The machine a benchmark ran on, recorded with its figures."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_info() -> dict:
    """CPU model name and its SIMD flags of interest (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = sorted(f for f in have if f.startswith(("avx", "amx", "fma", "sse4")))
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": " ".join(flags)}


def machine_load() -> dict:
    """The 1 / 5 / 15-minute load averages and the core count, recorded next to latency figures on a shared machine."""
    import os

    try:
        l1, l5, l15 = os.getloadavg()
    except OSError:
        l1 = l5 = l15 = float("nan")
    return {"load_1m": round(l1, 2), "load_5m": round(l5, 2), "load_15m": round(l15, 2), "cores": os.cpu_count()}
