"""Latency and throughput on this machine: eager / torch.compile / onnxruntime, with fixed thread counts."""
from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

BACKENDS = ("eager", "compile", "onnxruntime")


def _summary(times_ms: list[float], batch: int) -> dict:
    med = statistics.median(times_ms)
    return {"median_ms": med, "p90_ms": float(np.percentile(times_ms, 90)), "mean_ms": statistics.fmean(times_ms),
            "runs": len(times_ms), "throughput_ips": batch * 1e3 / med}


def time_torch(model: nn.Module, x: torch.Tensor, threads: int = 2, warmup: int = 5, runs: int = 30) -> dict:
    """Per-call latency of `model(x)` under no_grad with torch.utils.benchmark.Timer (`threads` threads).

    Each of the `runs` measurements times one call, so the p90 is a real tail; `warmup` calls come first.
    """
    # importing torch.utils.benchmark imports cpp_extension, which logs "No CUDA runtime is found" on a
    # CPU-only machine with a CUDA toolkit directory
    ext_log = logging.getLogger("torch.utils.cpp_extension")
    level = ext_log.level
    ext_log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        ext_log.setLevel(level)

    timer = Timer(stmt="model(x)", setup="", globals={"model": model, "x": x}, num_threads=threads)
    with torch.no_grad():
        timer.timeit(warmup)
        times = [timer.timeit(1).median * 1e3 for _ in range(runs)]
    return _summary(times, x.shape[0])


def time_onnxruntime(path: str | os.PathLike, x: np.ndarray, threads: int = 2, warmup: int = 5, runs: int = 30
                     ) -> dict:
    """Per-call latency of an onnxruntime CPU session (intra-op threads fixed to `threads`) on `x`."""
    from .export import ort_session

    sess = ort_session(path, threads=threads)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return _summary(times, x.shape[0])


def _parse_sizes(sizes: str | Sequence) -> list[tuple[int, int]]:
    """Sizes as (H, W): "224,256" (squares), ints (squares) or (H, W) pairs."""
    if isinstance(sizes, str):
        return [(v, v) for v in _parse_ints(sizes, "size")]
    out = []
    for s in sizes:
        h, w = (s, s) if isinstance(s, int) else tuple(s)
        if int(h) < 1 or int(w) < 1:
            raise ValueError(f"size must be positive integers, got {h}x{w}")
        out.append((int(h), int(w)))
    return list(dict.fromkeys(out))


def _parse_ints(text: str | Sequence[int], what: str) -> list[int]:
    if isinstance(text, str):
        try:
            vals = [int(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    else:
        vals = [int(v) for v in text]
    if not vals or any(v < 1 for v in vals):
        raise ValueError(f"{what} must be positive integers, got {text!r}")
    return vals


def benchmark(names: Sequence[str], backend: str = "eager", batches: Sequence[int] | str = (1,),
              sizes: Sequence | str | None = None, threads: int = 2, warmup: int = 5, runs: int = 30,
              fused: bool = True, log=print) -> list[dict]:
    """Latency (median, p90 ms) and throughput of each model x batch x size on `backend`.

    `sizes`: ints or "224,256" (squares) or (H, W) pairs; default each model's default input size. Models run fused (the inference form).
    ValueError for an unknown backend / model or a size a model cannot take.
    """
    import mobilevision
    from mobilevision.models.registry import get_config

    from .export import export_form, export_onnx
    from .fusion import fuse

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    batches = _parse_ints(batches, "batch")
    sizes = _parse_sizes(sizes) if sizes else None
    cfgs = {n: get_config(n) for n in names}  # unknown names fail before any work
    rows = []
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name in names:
            cfg = cfgs[name]
            model = mobilevision.create_model(name).eval()
            model = export_form(fuse(model) if fused else model)
            c = cfg.input_size[0]
            for h, w in sizes or [cfg.input_size[1:]]:
                _check_size(model, name, c, h, w)
                size = h if h == w else f"{h}x{w}"
                runner = model
                onnx_dir = None
                if backend == "compile":
                    runner = torch.compile(model)
                elif backend == "onnxruntime":
                    onnx_dir = tempfile.TemporaryDirectory()
                    path = Path(onnx_dir.name) / f"{name}.onnx"
                    export_onnx(model, path, input_size=(c, h, w), dynamic=True, fuse_first=False)
                for b in batches:
                    x = torch.randn(b, c, h, w)
                    if backend == "onnxruntime":
                        stats = time_onnxruntime(path, x.numpy(), threads, warmup, runs)
                    else:
                        stats = time_torch(runner, x, threads, warmup, runs)
                    row = {"model": name, "backend": backend, "batch": b, "size": size, "height": h, "width": w,
                           "threads": threads, **stats}
                    rows.append(row)
                    if log:
                        log(f"  {name:<28} {backend:<12} b={b:<3} {h}x{w}px  median {stats['median_ms']:8.2f} ms  "
                            f"p90 {stats['p90_ms']:8.2f} ms  {stats['throughput_ips']:8.1f} img/s")
                if onnx_dir is not None:
                    onnx_dir.cleanup()
    finally:
        torch.set_num_threads(prev_threads)
    return rows


def _check_size(model: nn.Module, name: str, c: int, h: int, w: int) -> None:
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, h, w))
    except Exception as err:  # noqa: BLE001 - any failure means the model cannot take this size
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model {name!r} cannot take input size {h}x{w}: {msg[:200]}") from None


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of benchmark rows."""
    w = max([30] + [len(str(r["model"])) + 2 for r in rows])
    head = f"{'model':<{w}}{'backend':<13}{'batch':>6}{'size':>6}{'median ms':>11}{'p90 ms':>10}{'img/s':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<{w}}{r['backend']:<13}{r['batch']:>6}{r['size']:>6}{r['median_ms']:>11.2f}"
                     f"{r['p90_ms']:>10.2f}{r['throughput_ips']:>10.1f}")
    return "\n".join(lines)


def write_results(rows: Sequence[dict], out_dir: str | os.PathLike, stem: str = "bench") -> dict[str, Path]:
    """Write `<stem>.csv`, `<stem>.json` and `<stem>.png` (latency against resolution, one line per model
    and batch) into `out_dir`; returns their paths."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
    write_csv(rows, paths["csv"])
    paths["json"].write_text(json.dumps(list(rows), indent=2))
    plot_latency(rows, paths["png"])
    return paths


def write_csv(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Rows as CSV with the union of their keys as header."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def plot_latency(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """PNG of median latency (ms) against input resolution, one line per (model, backend, batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["backend"], r["batch"]), []).append(r)
    for (model, backend, batch), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["height"] * r["width"])
        ax.plot([(r["height"] * r["width"]) ** 0.5 for r in rs], [r["median_ms"] for r in rs], marker="o",
                label=f"{model} ({backend}, batch {batch})")
    ax.set_xlabel("input resolution (px, sqrt(H x W))")
    ax.set_ylabel("median latency (ms)")
    threads = sorted({r["threads"] for r in rows})
    ax.set_title(f"CPU latency vs resolution ({', '.join(map(str, threads))} threads)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def paired_times(fn_a, fn_b, runs: int = 20, warmup: int = 5) -> tuple[dict, dict]:
    """Median / p90 ms of two callables timed alternately, call by call, so that drifting load on a shared
    machine hits both sides alike (the peer comparisons in benchmarks/)."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(runs):
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - t0) * 1e3)
    return _summary(ta, 1), _summary(tb, 1)


def print_rows(rows: Sequence[dict], cols: Sequence[str]) -> None:
    """Print rows as a left-aligned text table of the given columns (floats with 3 decimals)."""
    def fmt(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))

    widths = [max(len(c), *(len(fmt(r.get(c))) for r in rows)) if rows else len(c) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(w) for c, w in zip(cols, widths)))
