"""Pick a backbone for this machine and a latency budget: measured latency against published ImageNet top-1.

`choose(budget_ms, runtime=..., threads=..., size=..., batch=...)` measures every candidate classifier, keeps
the figures in a JSON cache keyed by the device fingerprint (CPU model + SIMD flags), runtime, threads, input
size, batch and library / runtime versions, and returns the Pareto front of (latency, top-1) and the best model
under the budget. A second call with the same key measures nothing; `refresh=True` measures again. The cache
also keeps the candidates' published figures (checked against a digest of the shipped published.csv), so a
cache hit imports neither torch nor the registry.

Latency is what this machine does now: on a shared machine other jobs add noise, so every figure carries the
load averages at the time it was taken.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .machine import cpu_info, machine_load

log = logging.getLogger("mobilevision.choose")

RUNTIMES = ("eager", "onnxruntime", "openvino", "executorch")
RUNTIME_PACKAGE = {"eager": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino", "executorch": "executorch"}
TASKS = ("classify", "detect", "segment")
CACHE_VERSION = 3  # 2: OpenMP's wait policy in the key; 3: eager calls timed back to back (no benchmark.Timer)
FIGURE_FIELDS = ("family", "top1", "params_m", "gmacs")


# ---------------------------------------------------------------- candidates
def catalog_digest() -> str:
    """sha256 of the shipped published.csv (where `classifiers()` reads from), read without the registry."""
    from importlib import resources

    return hashlib.sha256(resources.files("mobilevision.models").joinpath("published.csv").read_bytes()).hexdigest()


def classifiers() -> dict[str, dict]:
    """Every registered ImageNet classifier with its published figures: {name: {family, top1, params_m, gmacs}}."""
    from mobilevision.models.registry import published_figures

    return {n: {f: r[f] for f in FIGURE_FIELDS} for n, r in published_figures().items()}


def candidates(families: Sequence[str] | None = None, names: Sequence[str] | None = None,
               figures: dict[str, dict] | None = None) -> dict[str, dict]:
    """The classifiers to rank, restricted to `families` and / or `names`; ValueError naming unknown ones.
    `figures`: `classifiers()`'s result when the caller has it (from the cache)."""
    allc = figures or classifiers()
    out = dict(allc)
    if families:
        known = sorted({v["family"] for v in allc.values()})
        bad = [f for f in families if f not in known]
        if bad:
            raise ValueError(f"unknown family {', '.join(bad)}; accepted: {', '.join(known)}")
        out = {n: v for n, v in out.items() if v["family"] in families}
    if names:
        bad = [n for n in names if n not in allc]
        if bad:
            raise ValueError(f"{', '.join(bad)} is not a registered ImageNet classifier; run `mobilevision models`")
        out = {n: v for n, v in out.items() if n in names}
    if not out:
        raise ValueError("no candidate models left after --family / --model filtering")
    return out


# ---------------------------------------------------------------- the Pareto front
def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names not dominated in (latency: lower is better, top-1: higher is better), fastest first.

    A point is dominated when another is at least as fast and at least as accurate and better in one of them
    (so two models with equal figures are both on the front).
    """
    order = sorted(points, key=lambda n: (points[n][0], -points[n][1], n))
    front: list[str] = []
    best = float("-inf")
    for n in order:
        if points[n][1] > best or (front and tuple(points[n]) == tuple(points[front[-1]])):
            front.append(n)
            best = points[n][1]
    return front


def near_front(points: dict[str, tuple[float, float]], margin: float = 0.15) -> list[str]:
    """Names no other model beats by more than `margin` (relative) in latency at no loss of top-1, fastest first:
    the front and the models that a figure `margin` off could put on it."""
    return sorted((n for n, (lat, top1) in points.items()
                   if not any(o != n and t >= top1 and ol * (1 + margin) < lat for o, (ol, t) in points.items())),
                  key=lambda n: (points[n][0], n))


def best_under(points: dict[str, tuple[float, float]], budget_ms: float) -> str | None:
    """The most accurate model with latency <= `budget_ms` (the faster one on a tie), or None."""
    inside = [n for n, (lat, _) in points.items() if lat <= budget_ms]
    if not inside:
        return None
    return max(inside, key=lambda n: (points[n][1], -points[n][0]))


# ---------------------------------------------------------------- measuring
def relative_iqr(values: Sequence[float]) -> float:
    """(q3 - q1) / median of `values`: the spread of a set of round medians."""
    import numpy as np

    q1, q3 = np.percentile(values, [25, 75])
    return float((q3 - q1) / statistics.median(values))


def stable_time(round_fn: Callable[[int, int], dict], probe_ms: float | None = None, rel_spread: float = 0.05,
                min_rounds: int = 3, max_rounds: int = 12, round_ms: float = 300.0, max_s: float = 8.0,
                between_ms: float = 0.0) -> dict:
    """Repeat `round_fn(warmup, runs) -> {"median_ms", ...}` (one of bench.py's timers) until the median of
    the rounds is stable: the rounds' IQR / median <= `rel_spread` after `min_rounds`, or `max_rounds` /
    `max_s` seconds are reached. Each round has as many runs as fit in about `round_ms` (from `probe_ms`, a
    first single-call estimate, plus `between_ms` of untimed work before each call, such as a cache flush).
    Returns median_ms (median of round medians), p90_ms, spread (IQR / median), rounds, runs, stable."""
    t_start = time.perf_counter()
    first = round_fn(1, 1)
    probe = probe_ms if probe_ms is not None else first["median_ms"]
    runs = int(min(20, max(1, round(round_ms / max(probe + between_ms, 1e-3)))))
    meds, p90s, total = [], [], 0
    spread = float("inf")
    while True:
        r = round_fn(0, runs)
        meds.append(r["median_ms"])
        p90s.append(r["p90_ms"])
        total += runs
        if len(meds) >= min_rounds:
            spread = relative_iqr(meds)
            if spread <= rel_spread or len(meds) >= max_rounds or time.perf_counter() - t_start > max_s:
                break
    return {"median_ms": float(statistics.median(meds)), "p90_ms": float(statistics.median(p90s)),
            "spread": spread, "rounds": len(meds), "runs": total, "stable": spread <= rel_spread}


CLOCKS = ("wall", "cpu")


def check_clock(clock: str, threads: int) -> None:
    """ValueError unless `clock` is "wall", or "cpu" with one thread."""
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; accepted: {', '.join(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise ValueError(f"--clock cpu times the calling thread's CPU time, which is the latency only with one "
                         f"thread: pass --threads 1 (got {threads})")


def call_timer(fn: Callable[[], object], batch: int, clock: str = "wall",
               between: Callable[[], object] | None = None) -> Callable[[int, int], dict]:
    """A round timer `(warmup, runs) -> stats` of `fn` on `clock` (`bench.time_callable`)."""
    from .bench import time_callable

    return lambda warmup, runs: time_callable(fn, batch, warmup, runs, clock, between)


def runner_for(model, runtime: str, x, threads: int, work_dir: str | os.PathLike, clock: str = "wall",
               between: Callable[[], object] | None = None) -> Callable[[int, int], dict]:
    """A round timer `(warmup, runs) -> stats` of the fused `model` on `runtime` with `threads` threads;
    exported files go to `work_dir`. `clock` "cpu": the calling thread's CPU time (one thread only);
    `between`: run untimed before each call."""
    import torch

    from .bench import time_torch

    if runtime == "eager":
        if clock == "cpu" or between is not None:
            def run_eager():
                with torch.no_grad():
                    return model(x)
            return call_timer(run_eager, x.shape[0], clock, between)
        return lambda warmup, runs: time_torch(model, x, threads, warmup, runs)
    from .export import FORMATS, export_model

    fmt = {"onnxruntime": "onnx", "openvino": "openvino", "executorch": "executorch"}[runtime]
    path = Path(work_dir) / f"model{FORMATS[fmt]}"
    c, h, w = x.shape[1:]
    if fmt == "onnx":
        from .export import export_onnx, ort_session

        # the TorchScript exporter: a graph like the dynamo one for these models, and several times faster
        # to produce, which matters when a first `choose` exports 57 models
        export_onnx(model, path, input_size=(c, h, w), fuse_first=False, exporter="legacy")
        sess = ort_session(path, threads=threads)
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return call_timer(lambda: sess.run(None, feed), x.shape[0], clock, between)
    from .runtime import load_exported

    export_model(model, path, fmt, fuse_first=False, input_size=(c, h, w))
    rt = load_exported(path, threads=threads)
    xn = x.numpy()
    return call_timer(lambda: rt._run(xn), x.shape[0], clock, between)


def model_timer(name: str, runtime: str, threads: int, size: int, batch: int, clock: str,
                work_dir: str | os.PathLike) -> Callable[[int, int], dict]:
    """`runner_for` of the fused, export-form registered model `name` on a fixed random (batch, C, size, size)
    input; exported files go to `work_dir`."""
    import torch

    import mobilevision
    from mobilevision.models.registry import get_config

    from .export import export_form
    from .fusion import fuse

    c = get_config(name).input_size[0]
    x = torch.randn(batch, c, size, size, generator=torch.Generator().manual_seed(0))
    model = export_form(fuse(mobilevision.create_model(name).eval()))
    return runner_for(model, runtime, x, threads, work_dir, clock)


def measure_model(name: str, runtime: str = "eager", threads: int = 2, size: int = 224, batch: int = 1,
                  clock: str = "wall", **stable_kwargs) -> dict:
    """Latency of the fused registered model `name` at (batch, 3, size, size) on `runtime` with `threads`
    threads (`stable_time`'s repeat-until-stable figures) plus its measured load averages."""
    from .bench import torch_threads

    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp:
        stats = stable_time(model_timer(name, runtime, threads, size, batch, clock, tmp), **stable_kwargs)
    return {**stats, **machine_load(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def measure_round_robin(names: Sequence[str], probe_ms: dict[str, float], runtime: str = "eager", threads: int = 2,
                        size: int = 224, batch: int = 1, clock: str = "wall", rounds: int = 3, warmup: int = 2,
                        block_ms: float = 100.0, progress: bool = True) -> dict[str, dict]:
    """Latency of the registered models `names` timed in turn in one run: each of `rounds` rounds gives every
    model one block of `warmup` untimed calls and as many timed calls as fit in `block_ms` (1 to 20, from its
    `probe_ms`). Returns {name: {"median_ms" (median of its block medians), "p90_ms", "spread" (IQR / median
    of the block medians), "rounds", "runs", load averages}}. Every model stays in memory for the run.

    Figures taken minutes apart on a shared machine drift by more than the gaps between neighbours on a front;
    alternating blocks expose every model to the same drift."""
    import torch

    from .bench import torch_threads

    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        timers = {}
        for i, name in enumerate(_progress(list(names), progress, desc="preparing the re-timing")):
            work = Path(tmp) / str(i)
            work.mkdir()
            timers[name] = model_timer(name, runtime, threads, size, batch, clock, work)
        runs = {n: int(min(20, max(1, round(block_ms / max(probe_ms[n], 1e-3))))) for n in names}
        blocks: dict[str, list[dict]] = {n: [] for n in names}
        for _ in _progress(list(range(rounds)), progress, unit="round", desc="re-timing near the front"):
            for n in names:
                blocks[n].append(timers[n](warmup, runs[n]))
    load = machine_load()
    meds = {n: [b["median_ms"] for b in bs] for n, bs in blocks.items()}
    return {n: {"median_ms": float(statistics.median(meds[n])),
                "p90_ms": float(statistics.median(b["p90_ms"] for b in bs)), "spread": relative_iqr(meds[n]),
                "rounds": rounds, "runs": rounds * runs[n], **load}
            for n, bs in blocks.items()}


# ---------------------------------------------------------------- the cache
def cache_dir() -> Path:
    """`$MOBILEVISION_CACHE` or `~/.cache/mobilevision`."""
    return Path(os.environ.get("MOBILEVISION_CACHE") or Path.home() / ".cache" / "mobilevision").expanduser()


def _runtime_version(runtime: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(RUNTIME_PACKAGE[runtime])
    except PackageNotFoundError:
        return "missing"


def cache_key(runtime: str, threads: int, size: int, batch: int, clock: str = "wall") -> dict:
    """What a cached latency depends on: device fingerprint (CPU model + flags), runtime and its version,
    threads, size, batch, clock, library and torch versions, and OpenMP's wait policy (passive waits slow eager
    batch-1 calls at 2 threads several times)."""
    import mobilevision

    return {"version": CACHE_VERSION, **cpu_info(), "runtime": runtime, "runtime_version": _runtime_version(runtime),
            "torch": _runtime_version("eager"), "mobilevision": mobilevision.__version__, "threads": threads,
            "size": size, "batch": batch, "clock": clock,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "").upper()}


def cache_path(key: dict, directory: str | os.PathLike | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"choose_{key['runtime']}_t{key['threads']}_s{key['size']}_b{key['batch']}_{key.get('clock', 'wall')}"
    return Path(directory or cache_dir()) / f"{name}_{digest}.json"


def read_cache(path: Path, key: dict) -> dict:
    """The cache file at `path` for `key`: {"results": {model: latency figures}, "figures": {model: published
    figures} or None (none stored, or stored for another published.csv)}; empty results when there is no file.
    A file that is not this key's readable JSON is reported (one line) and ignored, so everything is measured
    again."""
    if not path.exists():
        return {"results": {}, "figures": None}
    try:
        data = json.loads(path.read_text())
        if data.get("key") != key or not isinstance(data.get("results"), dict):
            raise ValueError("key mismatch")
        for v in data["results"].values():
            float(v["median_ms"])
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as err:
        log.warning("latency cache %s is unreadable (%s); measuring again", path, str(err).splitlines()[0][:80])
        return {"results": {}, "figures": None}
    figures = data.get("figures")
    ok = (isinstance(figures, dict) and figures and data.get("catalog") == catalog_digest()
          and all(isinstance(v, dict) and all(f in v for f in FIGURE_FIELDS) for v in figures.values()))
    return {"results": data["results"], "figures": figures if ok else None}


def save_cache(path: Path, key: dict, results: dict[str, dict], figures: dict[str, dict] | None = None) -> None:
    """Write the cache atomically (a temporary file in the same folder, then rename). `figures`: every
    candidate's published figures (`classifiers()`), stored with the digest of published.csv so that a cache
    hit needs no registry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict = {"key": key, "results": results}
    if figures:
        data.update(figures={n: {f: v[f] for f in FIGURE_FIELDS} for n, v in figures.items()},
                    catalog=catalog_digest())
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is not
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- choose
@dataclass
class Choice:
    """What `choose` found: rows for every candidate (model, family, top1, latency_ms, ...), the front, the pick."""

    budget_ms: float
    key: dict
    rows: list[dict]
    front: list[str]
    best: str | None
    cache: str
    measured: list[str] = field(default_factory=list)

    @property
    def fastest(self) -> dict:
        return min(self.rows, key=lambda r: r["latency_ms"])

    def to_dict(self) -> dict:
        return {"budget_ms": self.budget_ms, "best": self.best, "front": self.front, "fastest": self.fastest["model"],
                "fastest_ms": self.fastest["latency_ms"], "key": self.key, "cache": self.cache,
                "measured_now": self.measured, "rows": self.rows}


def choose(budget_ms: float, runtime: str = "eager", threads: int = 2, size: int = 224, batch: int = 1,
           families: Sequence[str] | None = None, names: Sequence[str] | None = None, task: str = "classify",
           refresh: bool = False, cache: str | os.PathLike | None = None, progress: bool = True,
           measure: Callable[..., dict] | None = None, clock: str = "wall", confirm: bool = True,
           together: Callable[..., dict] | None = None, **stable_kwargs) -> Choice:
    """Measure (or read from the cache) each candidate's latency and rank them against published top-1.

    Each new candidate is measured alone (`measure(name, runtime, threads, size, batch)`, default `measure_model`);
    then (`confirm`, when anything was measured or a model near the front has no round-robin figure yet) the
    models near the front (`near_front`) are timed again together, in turn in one run (`together(names, probe_ms,
    runtime, threads, size, batch)`, default `measure_round_robin`), and those figures rank them: the front's order
    is one run's comparison, not that of measurements minutes apart. Their latency is the round robin's median
    times the group's median ratio of alone to round-robin figures (the level of a model run alone); each keeps
    its alone figures under "alone" (rows: "alone_ms", "round_robin_ms").
    `cache`: the cache directory (default `cache_dir()`). Tests pass fakes for `measure` and `together`.
    ValueError on a bad argument, an unknown family or runtime.
    """
    import importlib.util

    if task != "classify":
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
        raise ValueError(f"--task {task} is not supported yet: choose ranks ImageNet classifiers by published top-1, "
                         f"which is no {task} metric; use --family to pick the backbone of a {task} preset")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; accepted: {', '.join(RUNTIMES)}")
    if importlib.util.find_spec(RUNTIME_PACKAGE[runtime]) is None:
        raise ValueError(f"runtime {runtime} needs the package {RUNTIME_PACKAGE[runtime]!r}; pip install it")
    if not budget_ms > 0:
        raise ValueError(f"--budget-ms must be > 0, got {budget_ms}")
    if threads < 1 or size < 32 or batch < 1:
        raise ValueError(f"threads, batch must be >= 1 and size >= 32, got {threads} / {batch} / {size}")
    check_clock(clock, threads)
    measure = measure or measure_model
    key = cache_key(runtime, threads, size, batch, clock)
    path = cache_path(key, cache)
    stored = read_cache(path, key)
    # a hit takes the published figures from the cache too: classifiers() imports the registry, and with it torch
    figures = stored["figures"] or classifiers()
    cands = candidates(families, names, figures)
    results = dict(stored["results"])
    if refresh:  # keep the other models' figures of a refreshed subset
        results = {n: v for n, v in results.items() if n not in cands}
    todo = [n for n in cands if n not in results]
    if todo:
        bar = _progress(todo, progress)
        for name in bar:
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(name)
            results[name] = measure(name, runtime, threads, size, batch, clock=clock, **stable_kwargs)
            save_cache(path, key, results, figures)  # an interrupted first run keeps what it measured
    saved = bool(todo)
    if confirm:
        alone = {n: results[n].get("alone", results[n]) for n in cands}
        group = near_front({n: (alone[n]["median_ms"], cands[n]["top1"]) for n in cands})
        # also after a first run interrupted in its round robin, or a cache written without one
        if len(group) > 1 and (todo or any("round_robin" not in results[n] for n in group)):
            probe = {n: alone[n]["median_ms"] for n in group}
            again = (together or measure_round_robin)(group, probe, runtime, threads, size, batch, clock=clock,
                                                      progress=progress)
            # the round robin's ratios on the alone figures' level (alternating models costs a few per cent)
            level = statistics.median(probe[n] / again[n]["median_ms"] for n in group)
            for n in cands:
                results[n] = alone[n] if n not in again else {
                    **again[n], "median_ms": again[n]["median_ms"] * level, "p90_ms": again[n]["p90_ms"] * level,
                    "round_robin_ms": again[n]["median_ms"], "alone": alone[n], "round_robin": len(group)}
            save_cache(path, key, results, figures)
            saved = True
    if not saved and stored["figures"] is None:
        save_cache(path, key, results, figures)  # a cache written without the figures: the next hit needs no torch
    rows = [{"model": n, "family": v["family"], "top1": v["top1"], "params_m": v["params_m"], "gmacs": v["gmacs"],
             "latency_ms": results[n]["median_ms"], "p90_ms": results[n].get("p90_ms"),
             "spread": results[n].get("spread"), "load_1m": results[n].get("load_1m"),
             "alone_ms": results[n].get("alone", results[n])["median_ms"],
             "round_robin_ms": results[n].get("round_robin_ms"), "round_robin": "round_robin" in results[n]}
            for n, v in cands.items()]
    points = {r["model"]: (r["latency_ms"], r["top1"]) for r in rows}
    front = pareto_front(points)
    for r in rows:
        r["on_front"] = r["model"] in front
    rows.sort(key=lambda r: r["latency_ms"])
    return Choice(budget_ms, key, rows, front, best_under(points, budget_ms), str(path), todo)


def _progress(items: list, show: bool, unit: str = "model", desc: str = "measuring"):
    if not show:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit=unit, leave=False)


# ---------------------------------------------------------------- reporting
def format_choice(c: Choice) -> str:
    """The front as a text table and the verdict for the budget."""
    k = c.key
    rows = {r["model"]: r for r in c.rows}
    lines = [f"{k['cpu']} ({k['runtime']}, {k['threads']} threads, {k['size']}px, batch {k['batch']}, "
             f"{k.get('clock', 'wall')} clock)",
             "Pareto front (published ImageNet top-1 vs measured median latency), fastest first:",
             f"  {'model':<30}{'latency ms':>11}{'top-1 %':>9}{'params M':>10}{'GMACs':>8}"]
    for n in c.front:
        r = rows[n]
        mark = "  <- best under budget" if n == c.best else ""
        lines.append(f"  {n:<30}{r['latency_ms']:>11.2f}{r['top1']:>9.1f}{r['params_m']:>10.2f}{r['gmacs']:>8.3f}"
                     f"{mark}")
    if c.best is None:
        f = c.fastest
        lines.append(f"no model runs within {c.budget_ms:g} ms here: the fastest is {f['model']} at "
                     f"{f['latency_ms']:.2f} ms (top-1 {f['top1']:.1f} %)")
    else:
        b = rows[c.best]
        lines.append(f"best under {c.budget_ms:g} ms: {b['model']} (top-1 {b['top1']:.1f} %, {b['latency_ms']:.2f} ms)")
    return "\n".join(lines)


def plot_choice(c: Choice, path: str | os.PathLike) -> None:
    """PNG: every candidate (latency, log scale; top-1), the front as a line, the budget as a vertical line."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    cmap = colormaps["tab20"]
    for i, fam in enumerate(sorted({r["family"] for r in c.rows})):
        rs = [r for r in c.rows if r["family"] == fam]
        ax.scatter([r["latency_ms"] for r in rs], [r["top1"] for r in rs], s=18, color=cmap(i % 20), label=fam)
    rows = {r["model"]: r for r in c.rows}
    fx, fy = [rows[n]["latency_ms"] for n in c.front], [rows[n]["top1"] for n in c.front]
    ax.step(fx, fy, where="post", color="black", lw=1, label="Pareto front")
    for n in c.front:
        ax.annotate(n, (rows[n]["latency_ms"], rows[n]["top1"]), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax.axvline(c.budget_ms, color="red", ls="--", lw=1, label=f"budget {c.budget_ms:g} ms")
    if c.best:
        ax.scatter([rows[c.best]["latency_ms"]], [rows[c.best]["top1"]], s=90, facecolors="none", edgecolors="red")
    ax.set_xscale("log")
    ax.set_xlabel("measured median latency (ms, log scale)")
    ax.set_ylabel("published ImageNet top-1 (%)")
    k = c.key
    ax.set_title(f"{k['cpu'][:48]} | {k['runtime']}, {k['threads']} thr, {k['size']}px, batch {k['batch']}", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_choice(c: Choice, out_dir: str | os.PathLike) -> dict[str, Path]:
    """`choose.json`, `choose.csv`, `choose.png` in `out_dir`; returns their paths.

    The PNG is drawn again only when what it shows changed: importing matplotlib and drawing take about a
    second, most of a cached `choose`. An existing choose.json says what the PNG beside it shows (it is removed
    before a new PNG is drawn and written after, so an interrupted run leaves none that vouches for it)."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "choose.json", "csv": out / "choose.csv", "png": out / "choose.png"}
    data = c.to_dict()
    shown = ("budget_ms", "best", "front", "key", "rows")  # the fields plot_choice draws
    try:
        old = json.loads(paths["json"].read_text())
        drawn = isinstance(old, dict) and all(old.get(k) == data[k] for k in shown)
    except (OSError, ValueError):
        drawn = False
    if not (drawn and paths["png"].is_file()):
        paths["json"].unlink(missing_ok=True)
        plot_choice(c, paths["png"])
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(c.rows[0]))
        w.writeheader()
        w.writerows(c.rows)
    paths["json"].write_text(json.dumps(data, indent=2))
    return paths
