"""The machine a benchmark ran on, recorded with its figures."""
from __future__ import annotations

import functools
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


def last_level_cache_bytes(default: int = 32 * 2**20,
                           cache_dir: str | Path = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """Size in bytes of the CPU's largest cache (Linux sysfs: `cache_dir`/index*/size, e.g. "32768K"), or
    `default` where it is not known."""
    sizes = []
    for f in Path(cache_dir).glob("index*/size"):
        try:
            text = f.read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KM")) * scale)
        except (OSError, ValueError):
            continue
    return max(sizes, default=default)


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def steady_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Keep freed memory in the process's heap for reuse (glibc: static mmap and trim thresholds of
    `threshold_bytes`); True where it took effect, False on another C library. Once per process, for timing.

    glibc serves a block above its mmap threshold with a fresh mapping and unmaps it on free, and moves that
    threshold with the process's history of frees, so an eager forward pass allocating its large activations that
    way may touch new pages every call (thousands of page faults; identical models timed up to 25 % apart
    depending on the process). With fixed thresholds the faults go and the times repeat.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold_bytes))
