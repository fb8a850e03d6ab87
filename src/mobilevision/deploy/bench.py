"""Latency and throughput on this machine: eager / torch.compile / onnxruntime, with fixed thread counts."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from mobilevision.layers.helpers import check_choice

from .machine import steady_allocator

BACKENDS = ("eager", "compile", "onnxruntime")


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to `threads` inside, restored after."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _summary(times_ms: list[float], batch: int) -> dict:
    med = statistics.median(times_ms)
    return {"median_ms": med, "p90_ms": float(np.percentile(times_ms, 90)), "mean_ms": statistics.fmean(times_ms),
            "runs": len(times_ms), "throughput_ips": batch * 1e3 / med}


def time_torch(model: nn.Module, x: torch.Tensor, threads: int = 2, warmup: int = 5, runs: int = 30) -> dict:
    """Per-call latency of `model(x)` under no_grad with `threads` threads (`time_callable`: each of the `runs`
    measurements times one call, so the p90 is a real tail; `warmup` calls come first)."""
    with torch_threads(threads), torch.no_grad():
        return time_callable(lambda: model(x), x.shape[0], warmup, runs)


def time_onnxruntime(path: str | os.PathLike, x: np.ndarray, threads: int = 2, warmup: int = 5, runs: int = 30
                     ) -> dict:
    """Per-call latency of an onnxruntime CPU session (intra-op threads fixed to `threads`) on `x`."""
    from .export import ort_session

    sess = ort_session(path, threads=threads)
    feed = {sess.get_inputs()[0].name: x}
    return time_callable(lambda: sess.run(None, feed), x.shape[0], warmup, runs)


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

    `sizes`: ints or "224,256" (squares) or (H, W) pairs; default each model's default input size. Models run
    fused (the inference form) unless `fused=False`. ValueError for an unknown backend / model or a size a
    model cannot take.
    """
    import mobilevision
    from mobilevision.models.registry import get_config

    from .export import export_form, export_onnx, trial_forward
    from .fusion import fuse

    check_choice(backend, BACKENDS, "backend")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    batches = _parse_ints(batches, "batch")
    sizes = _parse_sizes(sizes) if sizes else None
    cfgs = {n: get_config(n) for n in names}  # unknown names fail before any work
    rows = []
    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"  # the graph of the model and size being timed
        for name in names:
            cfg = cfgs[name]
            model = mobilevision.create_model(name).eval()
            model = export_form(fuse(model) if fused else model)
            c = cfg.input_size[0]
            for h, w in sizes or [cfg.input_size[1:]]:
                trial_forward(model, c, h, w, f"model {name!r}")
                size = h if h == w else f"{h}x{w}"
                runner = torch.compile(model) if backend == "compile" else model
                if backend == "onnxruntime":
                    export_onnx(model, path, input_size=(c, h, w), dynamic=True, fuse_first=False)
                for b in batches:
                    x = torch.randn(b, c, h, w)
                    if backend == "onnxruntime":
                        stats = time_onnxruntime(path, x.numpy(), threads, warmup, runs)
                    else:
                        stats = time_torch(runner, x, threads, warmup, runs)
                    rows.append({"model": name, "backend": backend, "batch": b, "size": size, "height": h, "width": w,
                                 "threads": threads, **stats})
                    if log:
                        log(f"  {name:<28} {backend:<12} b={b:<3} {h}x{w}px  median {stats['median_ms']:8.2f} ms  "
                            f"p90 {stats['p90_ms']:8.2f} ms  {stats['throughput_ips']:8.1f} img/s")
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of benchmark rows."""
    w = max([30] + [len(str(r["model"])) + 2 for r in rows])
    head = f"{'model':<{w}}{'backend':<13}{'batch':>6}{'size':>6}{'median ms':>11}{'p90 ms':>10}{'img/s':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<{w}}{r['backend']:<13}{r['batch']:>6}{r['size']:>6}{r['median_ms']:>11.2f}"
                     f"{r['p90_ms']:>10.2f}{r['throughput_ips']:>10.1f}")
    return "\n".join(lines)


def write_results(rows: Sequence[dict], out_dir: str | os.PathLike, stem: str = "bench",
                  plot=None) -> dict[str, Path]:
    """Write `<stem>.csv`, `<stem>.json` and `<stem>.png` (`plot(rows, path)`; default `plot_latency`: latency
    against resolution, one line per model and batch) into `out_dir`; returns their paths."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{stem}.csv", "json": out / f"{stem}.json", "png": out / f"{stem}.png"}
    write_csv(rows, paths["csv"])
    paths["json"].write_text(json.dumps(list(rows), indent=2))
    (plot or plot_latency)(rows, paths["png"])
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


@contextlib.contextmanager
def _figure(path: str | os.PathLike, figsize: tuple[float, float]) -> Iterator:
    """The axes of a new matplotlib figure (Agg), saved to `path` as a PNG and closed after the block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    yield ax
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """PNG of median latency (ms) against input resolution, one line per (model, backend, batch)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["backend"], r["batch"]), []).append(r)
    with _figure(path, (7, 4.5)) as ax:
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


def paired_times(fn_a, fn_b, runs: int = 20, warmup: int = 5, clock=time.perf_counter) -> tuple[dict, dict]:
    """Median / p90 ms of two callables timed alternately, call by call, so that drifting load on a shared
    machine hits both sides alike (the peer comparisons in benchmarks/). `clock=time.thread_time` counts the
    calling thread's CPU time instead (one-thread runs: preemption by other jobs is not counted)."""
    pair = paired_ratio(fn_a, fn_b, runs, warmup, clock)
    return pair["a"], pair["b"]


def paired_ratio(fn_a, fn_b, runs: int = 20, warmup: int = 5, clock=time.perf_counter) -> dict:
    """`paired_times` plus the ratio a / b taken pair by pair: its median and quartiles over the `runs` pairs.

    The pairs' order alternates (a b, b a, ...) so that neither side always runs right after the other (warm
    caches, a thread pool just woken). A pair's two calls run back to back, so a slow spell of the machine
    inflates both and cancels in their ratio; the median of the per-pair ratios is steadier than the ratio of
    the two medians. Returns {"a": summary, "b": summary, "ratio", "ratio_q1", "ratio_q3"}.
    """
    steady_allocator()
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs):
        for fn, acc in ((fn_a, ta), (fn_b, tb))[::1 if i % 2 == 0 else -1]:
            t0 = clock()
            fn()
            acc.append((clock() - t0) * 1e3)
    q1, med, q3 = np.percentile(np.divide(ta, tb), [25, 50, 75])
    return {"a": _summary(ta, 1), "b": _summary(tb, 1), "ratio": float(med), "ratio_q1": float(q1),
            "ratio_q3": float(q3)}


def print_rows(rows: Sequence[dict], cols: Sequence[str]) -> None:
    """Print rows as a left-aligned text table of the given columns (floats with 3 decimals)."""
    def fmt(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))

    widths = [max(len(c), *(len(fmt(r.get(c))) for r in rows)) if rows else len(c) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(w) for c, w in zip(cols, widths)))


# ---------------------------------------------------------------- one table across runtimes and precisions
# runtime -> (export format, precisions it is measured in). OpenVINO's bf16 is its own row: its CPU plugin
# computes in bf16 by default on AMX / AVX-512 BF16 CPUs, and the fp32 row sets the precision hint to f32.
RUNTIMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "eager": ("pytorch", ("fp32",)),
    "onnxruntime": ("onnx", ("fp32", "int8")),
    "openvino": ("openvino", ("fp32", "bf16", "int8")),
    "executorch": ("executorch", ("fp32", "int8")),
    "litert": ("tflite", ("fp32", "int8")),
}
# runtime -> the package whose absence skips it under `--backend all`
RUNTIME_PACKAGE = {"eager": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino",
                   "executorch": "executorch", "litert": "litert_torch"}


def parse_backends(text: str | Sequence[str]) -> list[str]:
    """"all" (every runtime whose package is installed) or a comma list of RUNTIMES names, in table order."""
    import importlib.util

    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if names == ["all"]:
        return [r for r in RUNTIMES if importlib.util.find_spec(RUNTIME_PACKAGE[r]) is not None]
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown or not names:
        raise ValueError(f"unknown backend {', '.join(unknown) or repr(text)}; accepted: all or a comma list of "
                         f"{', '.join(RUNTIMES)}")
    return list(dict.fromkeys(names))


def time_exported(path: str | os.PathLike, x: np.ndarray, threads: int = 2, warmup: int = 5, runs: int = 30,
                  **runner_kwargs) -> dict:
    """Per-call latency of an exported file (.onnx, .xml, .pte, .tflite) on its own runtime with `threads` threads."""
    from .runtime import load_exported

    if str(path).lower().endswith(".onnx"):
        return time_onnxruntime(path, x, threads, warmup, runs)
    runner = load_exported(path, threads=threads, **runner_kwargs)
    return time_callable(lambda: runner._run(x), x.shape[0], warmup, runs)


def time_callable(fn, batch: int, warmup: int = 5, runs: int = 30, clock: str = "wall", between=None) -> dict:
    """Per-call latency (ms) of `fn()` (`warmup` calls first), with `between()` run untimed before each call.

    `clock` "wall": time.perf_counter. "cpu": the calling thread's CPU time (`time.thread_time`); with one
    thread (torch.set_num_threads(1), onnxruntime intra-op 1: both compute on the caller) this is the latency
    the call would have on an idle core: time the scheduler gives to other jobs on a shared machine is not
    counted, as wall-clock time counts it.
    """
    now = time.thread_time if clock == "cpu" else time.perf_counter
    steady_allocator()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if between is not None:
            between()
        t0 = now()
        fn()
        times.append((now() - t0) * 1e3)
    return _summary(times, batch)


def export_runtime_files(model: nn.Module, out_dir: str | os.PathLike, runtimes: Sequence[str],
                         precisions: Sequence[str] | None = None, calibration: str = "digits",
                         num_calibration: int = 128, log=print) -> dict[tuple[str, str], Path]:
    """Export fused `model` for each runtime and precision into `out_dir`: {(runtime, precision): file}.

    FP32 files first; INT8 with the runtime's own quantizer calibrated on `calibration` ("digits" or a
    directory); OpenVINO's bf16 row reuses the FP32 IR. The eager runtime has no file."""
    from .export import FORMATS, export_model
    from .fusion import fuse
    from .quantize import calibration_data, quantize_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = fuse(model)
    name = getattr(model, "model_name", None) or "model"
    files: dict[tuple[str, str], Path] = {}
    calib = None
    for rt in runtimes:
        fmt, precs = RUNTIMES[rt]
        precs = [p for p in precs if precisions is None or p in precisions]
        if rt == "eager" or not precs:
            continue
        fp32 = out / f"{name}_fp32{FORMATS[fmt]}"
        export_model(model, fp32, fmt, fuse_first=False)
        for p in precs:
            if p in ("fp32", "bf16"):
                files[(rt, p)] = fp32
                continue
            int8 = out / f"{name}_int8{FORMATS[fmt]}"
            if calib is None:
                calib = calibration_data(model, calibration, num_calibration, getattr(model, "labels", None),
                                         getattr(model, "num_classes", None))[0]
            if fmt in ("executorch", "tflite"):  # PT2E: quantized from the model, not from the file
                export_model(model, int8, fmt, fuse_first=False, calibration=calib)
            else:
                quantize_file(fp32, int8, calib)
            files[(rt, p)] = int8
        if log:
            log(f"  exported {name} for {rt}: {', '.join(precs)}")
    return files


def benchmark_runtimes(name: str, backends: str | Sequence[str] = "all", checkpoint: str | None = None,
                       num_classes: int | None = None, data: str | None = None, calibration: str | None = None,
                       num_calibration: int = 128, precisions: Sequence[str] | None = None, batch: int = 1,
                       input_size: tuple[int, int] | None = None, threads: int = 2, warmup: int = 5,
                       runs: int = 30, out_dir: str | os.PathLike | None = None, log=print) -> list[dict]:
    """One table of `name` across runtimes and precisions: rows {model, runtime, format, precision, file,
    file_bytes, batch, size, threads, median_ms, p90_ms, throughput_ips, top1, vs_fp32}.

    `backends`: "all" or a comma list of RUNTIMES. `data` ("digits" or an ImageFolder directory) adds top-1 on
    it (a digits-trained `checkpoint` for digits); INT8 calibrates on `calibration` (default: `data`, else
    digits). `vs_fp32` is the median latency over the same runtime's FP32 median. Exported files go to
    `out_dir` (default: a temporary directory).
    """
    import mobilevision
    from mobilevision.data.config import resolve_data_config

    from .export import export_form, file_bytes
    from .fusion import fuse
    from .quantize import calibration_data
    from .runtime import load_exported

    runtimes = parse_backends(backends)
    if precisions is not None:
        bad = [p for p in precisions if p not in ("fp32", "bf16", "int8")]
        if bad:
            raise ValueError(f"unknown precision {', '.join(bad)}; accepted: fp32, bf16, int8")
    if threads < 1 or batch < 1:
        raise ValueError(f"threads and batch must be >= 1, got {threads} / {batch}")
    model = mobilevision.create_model(name, checkpoint_path=checkpoint, num_classes=num_classes).eval()
    model.data_config = resolve_data_config(model, input_size=input_size)
    if data == "digits" and getattr(model, "num_classes", None) != 10:
        raise ValueError(f"--data digits needs a digits-trained checkpoint (10 classes); {name} has "
                         f"{getattr(model, 'num_classes', None)}: pass --checkpoint from "
                         "`mobilevision train --data digits`")
    model = export_form(fuse(model))
    cfg = model.data_config
    c, h, w = cfg.input_size
    x_eval = y_eval = None
    if data is not None:
        _, x_eval, y_eval = calibration_data(cfg, data, 1, getattr(model, "labels", None),
                                             getattr(model, "num_classes", None))
    work_dir = tempfile.TemporaryDirectory() if out_dir is None else contextlib.nullcontext(out_dir)
    rows: list[dict] = []
    with torch_threads(threads), work_dir as work:
        files = export_runtime_files(model, Path(work), runtimes, precisions, calibration or data or "digits",
                                     num_calibration, log)
        x = torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(0))
        for rt in runtimes:
            fmt, precs = RUNTIMES[rt]
            for p in [prec for prec in precs if precisions is None or prec in precisions]:
                if rt == "eager":
                    stats = time_torch(model, x, threads, warmup, runs)
                    runner, path, size_bytes = model, None, sum(t.numel() * t.element_size() for t in
                                                              list(model.parameters()) + list(model.buffers()))
                else:
                    path = files[(rt, p)]
                    kw = {"precision": p if p != "int8" else "fp32"} if rt == "openvino" else {}
                    stats = time_exported(path, x.numpy(), threads, warmup, runs, **kw)
                    runner, size_bytes = load_exported(path, threads=threads, **kw), file_bytes(path)
                top1 = None
                if x_eval is not None and y_eval is not None:
                    if rt == "eager":
                        with torch.no_grad():
                            logits = torch.cat([model(torch.from_numpy(x_eval[i:i + 64]))
                                                for i in range(0, len(x_eval), 64)]).numpy()
                    else:
                        logits = runner.run(x_eval, batch=64)
                    top1 = float((logits.argmax(-1) == y_eval).mean())
                rows.append({"model": name, "runtime": rt, "format": fmt, "precision": p,
                             "file": str(path) if path and out_dir is not None else None, "file_bytes": size_bytes,
                             "batch": batch, "size": h if h == w else f"{h}x{w}", "height": h, "width": w,
                             "threads": threads, **stats, "top1": top1})
                if log:
                    log(f"  {name:<24} {rt:<12} {p:<5} median {stats['median_ms']:8.2f} ms  p90 {stats['p90_ms']:8.2f}"
                        f" ms" + (f"  top-1 {top1 * 100:.2f} %" if top1 is not None else ""))
    fp32 = {(r["model"], r["runtime"]): r["median_ms"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        base = fp32.get((r["model"], r["runtime"]))
        r["vs_fp32"] = r["median_ms"] / base if base else None
    return rows


def format_runtime_table(rows: Sequence[dict]) -> str:
    """The runtime table as fixed-width text: format, precision, file size, latency, top-1, ratio to FP32."""
    w = max([24] + [len(str(r["model"])) + 2 for r in rows])
    head = (f"{'model':<{w}}{'runtime':<13}{'format':<12}{'prec':<6}{'MiB':>8}{'median ms':>11}{'p90 ms':>9}"
            f"{'img/s':>9}{'top-1 %':>9}{'x fp32':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        top1 = f"{r['top1'] * 100:.2f}" if r.get("top1") is not None else "-"
        ratio = f"{r['vs_fp32']:.2f}" if r.get("vs_fp32") is not None else "-"
        lines.append(f"{r['model']:<{w}}{r['runtime']:<13}{r['format']:<12}{r['precision']:<6}"
                     f"{r['file_bytes'] / 2**20:>8.2f}{r['median_ms']:>11.2f}{r['p90_ms']:>9.2f}"
                     f"{r['throughput_ips']:>9.1f}{top1:>9}{ratio:>8}")
    return "\n".join(lines)


def plot_runtimes(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """PNG: median latency (bars, p90 as whiskers) per runtime and precision, one group per model, with the
    top-1 over each bar where measured."""
    labels = [f"{r['runtime']}\n{r['precision']}" for r in rows]
    colors = {"fp32": "tab:blue", "bf16": "tab:green", "int8": "tab:orange"}
    med = [r["median_ms"] for r in rows]
    err = [max(0.0, r["p90_ms"] - r["median_ms"]) for r in rows]
    models = sorted({r["model"] for r in rows})
    with _figure(path, (max(6.0, 0.9 * len(rows) + 2), 4.5)) as ax:
        bars = ax.bar(range(len(rows)), med, yerr=[[0] * len(rows), err], capsize=3,
                      color=[colors.get(r["precision"], "grey") for r in rows])
        for b, r in zip(bars, rows):
            if r.get("top1") is not None:
                ax.annotate(f"{r['top1'] * 100:.1f}%", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("median latency (ms), whisker: p90")
        ax.set_title(f"{', '.join(models)}: batch {rows[0]['batch']}, {rows[0]['threads']} threads" if rows else "")
        ax.grid(axis="y", alpha=0.3)


def write_runtime_results(rows: Sequence[dict], out_dir: str | os.PathLike, stem: str = "bench_runtimes"
                          ) -> dict[str, Path]:
    """`<stem>.csv`, `<stem>.json` and `<stem>.png` (`plot_runtimes`) in `out_dir`; returns their paths."""
    return write_results(rows, out_dir, stem, plot=plot_runtimes)
