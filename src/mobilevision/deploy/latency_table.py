"""A MoGA-style latency look-up table for the inverted-residual family: one measured entry per block kind.

A model of `MobileNet` (MobileNetV1-3, EfficientNet, MoGA, or any `BlockSpec` table) is split into its parts
as it runs: the stem (conv 3x3/2 -> act), every block of `blocks` (the `BlockSpec` rows `build_stages` built),
and the tail (head conv, pooling, classifier). Each part has a key naming what its latency depends on: block
kind, kernel, stride, dilation, input / hidden / output channels (the hidden width is the expansion), the SE
width and gate, activation, shortcut and input resolution. `build_table` measures each distinct key once (eager,
or onnxruntime with the single part exported alone) on the fused, batch-1 part with the given thread count; a
model's predicted latency is the sum of its parts' entries.

A timed call has a fixed cost of its own (the timer; for onnxruntime the session's `run`) that a part inside
a whole model does not pay: it is measured once, on a do-nothing part (`overhead_ms`), taken off every entry
and added back once per model.

Cache state. A part timed alone runs from a cache its own previous call warmed; inside a whole model its weights
(and, eager, its activations) come back from wherever the rest of the model left them. How far that is depends
on the whole model, not the part: a model whose weights and activations fit the last-level cache finds them
there, a larger one in memory. So each entry is measured twice: **warm** (an L2-sized flush before each call:
weights in L3) and **cold** (a flush of twice the last-level cache, then the input read back: everything but the
input in memory; the stem's input, the image, stays cold). A model's part costs warm + f x (cold - warm), with
its cold fraction f = a + b P + c A of its weight bytes P and activation bytes A (in units of the last-level
cache). (a, b, c) are the device's own, fitted once per table on the search space's uniform models at three
sizes and two classifier widths (`CALIBRATION_*`), none of them a zoo model, and f is held inside the range the
fit takes on them: no extrapolation. f is a fitted number, not a physical fraction: inside a model, eager PyTorch
can be slower than every part timed cold (f > 1), and onnxruntime faster than every part timed warm (f < 0).
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from mobilevision.models.checkpoint import atomic_write_text

from .bench import torch_threads
from .choose import (RUNTIMES, _progress, cache_dir, cache_key, call_timer, check_clock, classifiers, runner_for,
                     stable_time)
from .machine import last_level_cache_bytes, machine_load
from .profiling import eval_pass

LUT_RUNTIMES = ("eager", "onnxruntime")
TABLE_VERSION = 3  # 3: warm and cold entries, the device's cold fraction fitted on CALIBRATION
CACHE_STATES = ("hot", "warm", "cold")
# (expansion, kernel, SE) rows of the search space, each as a uniform model at each size and classifier width:
# weight bytes 0.25-0.75x and activation bytes 0.2-5x a 32 MB cache
CALIBRATION_CHOICES = ((3, 3, 0), (3, 7, 1), (6, 3, 0), (6, 5, 1), (6, 7, 1), (3, 5, 0))
CALIBRATION_SIZES = (128, 224, 320)
CALIBRATION_CLASSES = (1000, 10)  # 10 classes: 5 MB fewer weights in the classifier


# ---------------------------------------------------------------- splitting a model into parts
class _Stem(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.act1 = model.conv_stem, model.bn1, model.act1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(x)))


class _Tail(nn.Module):
    """Everything after `blocks`: the head conv (before or after pooling), pooling and the classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m.forward_head(self.m.forward_head_conv(x))


class _Nothing(nn.Module):
    """The cheapest part there is (one elementwise op), to measure what a timed call costs by itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.0


def _conv_desc(c: nn.Conv2d) -> str:
    return f"{c.in_channels}-{c.out_channels}k{c.kernel_size[0]}s{c.stride[0]}d{c.dilation[0]}g{c.groups}"


def _act(m: nn.Module) -> str:
    return type(m).__name__


def _se_desc(se: nn.Module) -> str:
    if not hasattr(se, "conv_reduce"):
        return "none"
    return f"{se.conv_reduce.out_channels}{_act(se.act1)}{_act(se.gate)}"


def part_key(part: nn.Module, role: str, shape: Sequence[int]) -> tuple[str, dict]:
    """(key string, readable fields) of a part taking an input of `shape` (B, C, H, W)."""
    from mobilevision.layers.conv_norm_act import ConvNormAct
    from mobilevision.models.inverted_residual import DepthwiseSeparable, InvertedResidual

    b, c, h, w = (int(v) for v in shape)
    base = {"role": role, "batch": b, "in_chs": c, "h": h, "w": w}
    if role == "block" and isinstance(part, InvertedResidual):
        d = {**base, "kind": "ir", "kernel": part.conv_dw.kernel_size[0], "stride": part.conv_dw.stride[0],
             "dilation": part.conv_dw.dilation[0], "hidden": part.conv_pw.out_channels,
             "exp": round(part.conv_pw.out_channels / c, 3), "out_chs": part.conv_pwl.out_channels,
             "se": _se_desc(part.se), "act": _act(part.act1), "skip": bool(part.has_skip)}
    elif role == "block" and isinstance(part, DepthwiseSeparable):
        d = {**base, "kind": "ds", "kernel": part.conv_dw.kernel_size[0], "stride": part.conv_dw.stride[0],
             "dilation": part.conv_dw.dilation[0], "out_chs": part.conv_pw.out_channels, "se": _se_desc(part.se),
             "act": _act(part.act1), "pw_act": _act(part.act2), "skip": bool(part.has_skip)}
    elif role == "block" and isinstance(part, ConvNormAct):
        conv = next(m for m in part.modules() if isinstance(m, nn.Conv2d))
        d = {**base, "kind": "cn", "conv": _conv_desc(conv), "act": "/".join(_act(m) for m in part.children())}
    elif role == "stem":
        d = {**base, "kind": "stem", "conv": _conv_desc(part.conv_stem), "act": _act(part.act1)}
    elif role == "tail":
        m = part.m
        head = _conv_desc(m.conv_head) if isinstance(m.conv_head, nn.Conv2d) else "none"
        d = {**base, "kind": f"tail_{m.head_kind}", "head": head, "act": _act(m.act2),
             "classes": getattr(m.classifier, "out_features", 0)}
    else:
        raise ValueError(f"the latency table has no entry kind for {type(part).__name__} ({role}); it covers "
                         f"the inverted-residual family (MobileNetV1-3, EfficientNet, MoGA)")
    key = "|".join(f"{k}={v}" for k, v in d.items() if k != "exp")
    return key, d


def model_parts(model: nn.Module, size: int = 224, batch: int = 1) -> list[tuple[str, dict, nn.Module, tuple]]:
    """[(key, fields, part module, input shape)] of a (fused) inverted-residual model at (batch, C, size, size),
    in run order: stem, every block, tail. ValueError for a model outside the family."""
    from mobilevision.models.mobilenet import MobileNet

    if not isinstance(model, MobileNet):
        raise ValueError(f"{type(model).__name__} is not an inverted-residual model (MobileNet class); the latency "
                         f"table covers MobileNetV1-3, EfficientNet and MoGA")
    c = model.conv_stem.in_channels
    x = torch.zeros(batch, c, size, size)
    parts = []
    with torch.no_grad():
        for role, part in [("stem", _Stem(model))] + [("block", b) for stage in model.blocks for b in stage] + \
                          [("tail", _Tail(model))]:
            key, fields = part_key(part, role, x.shape)
            parts.append((key, fields, part, tuple(x.shape)))
            x = part(x)
    return parts


# ---------------------------------------------------------------- timing one part
class CacheFlush:
    """Writes a buffer of `mib` MiB: 8 (more than the per-core L2) evicts a part's weights from L2 and leaves them
    in L3; twice the last-level cache evicts everything. Called with a tensor and `read_input`, it then reads the
    tensor back."""

    def __init__(self, mib: float = 8.0, read_input: bool = False) -> None:
        self.buf = np.zeros(int(mib * 2**20) // 8)
        self.read_input = read_input

    def __call__(self, x: torch.Tensor | None = None) -> None:
        self.buf += 1.0
        if self.read_input and x is not None:
            float(x.sum())

    def ms(self, runs: int = 3) -> float:
        """Median wall time of one flush in milliseconds."""
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def part_timer(part: nn.Module, shape: tuple, runtime: str, threads: int, work: Path, clock: str = "wall",
               between: Callable[[torch.Tensor], object] | None = None) -> Callable[[int, int], dict]:
    """A round timer of `part` (or a whole model) on (shape) input: eager, or onnxruntime with the module exported
    alone by the TorchScript exporter (static shape) into `work`; `between(x)` runs untimed before each call on the
    input `x`."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    before = (lambda: between(x)) if between is not None else None
    if runtime == "eager":
        return runner_for(part, "eager", x, threads, work, clock, before)
    from .export import OPSET, _export_legacy, ort_session

    path = work / f"part_{time.monotonic_ns()}.onnx"
    _export_legacy(part.eval(), x, path, False, OPSET)
    sess = ort_session(path, threads=threads)
    # bound input and output buffers: `run` would copy every output into a new array, which a part inside a
    # whole model does not do (about 0.1 ms over MobileNetV3-Small's 17 parts)
    xs = x.numpy()  # shares x's memory: reading x warms the input
    y = sess.run(None, {sess.get_inputs()[0].name: xs})[0]
    binding = sess.io_binding()
    binding.bind_cpu_input(sess.get_inputs()[0].name, xs)
    binding.bind_output(sess.get_outputs()[0].name, "cpu", 0, y.dtype, list(y.shape), y.ctypes.data)
    return call_timer(lambda: sess.run_with_iobinding(binding), shape[0], clock, before)


def cache_preparation(cache: str, input_warm: bool = True) -> CacheFlush | None:
    """What runs before each timed call for a cache state: "hot" nothing, "warm" an L2 flush, "cold" a flush
    of twice the last-level cache and then (`input_warm`) a read of the input, which a block inside a model
    finds just written by the block before."""
    if cache not in CACHE_STATES:
        raise ValueError(f"cache state {cache!r}: choose one of {', '.join(CACHE_STATES)}")
    if cache == "hot":
        return None
    if cache == "warm":
        return CacheFlush(8.0)
    return CacheFlush(2 * last_level_cache_bytes() / 2**20, read_input=input_warm)


def time_part(part: nn.Module, shape: tuple, runtime: str = "eager", threads: int = 2, clock: str = "wall",
              cache: str = "hot", input_warm: bool = True, **stable_kwargs) -> dict:
    """`stable_time` figures of one part (or model) on `runtime` with `threads` threads (eager: under no_grad),
    each call from the cache state `cache` (`cache_preparation`)."""
    check_clock(clock, threads)
    if runtime not in LUT_RUNTIMES:
        raise ValueError(f"the latency table measures {', '.join(LUT_RUNTIMES)}, not {runtime!r}")
    between = cache_preparation(cache, input_warm)
    if between is not None:
        # a cold flush writes twice the last-level cache (2 x 480 MiB took 75 ms on one Xeon): rounds are sized
        # with it, or every round would spend seconds flushing
        stable_kwargs.setdefault("between_ms", between.ms())
    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        return stable_time(part_timer(part.eval(), shape, runtime, threads, Path(tmp), clock, between), **stable_kwargs)


def footprint(model: nn.Module, size: int = 224, batch: int = 1) -> tuple[float, float]:
    """(weight bytes, activation bytes) of one call at (batch, C, size, size): the parameters, and the outputs
    of every leaf module summed."""
    acts = [0]

    def count(module, inputs, out):
        acts[0] += out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0

    hooks = [m.register_forward_hook(count) for m in model.modules() if not next(m.children(), None)]  # leaves
    with eval_pass(model, hooks):
        model(torch.zeros(batch, model.conv_stem.in_channels, size, size))
    return float(sum(p.numel() * p.element_size() for p in model.parameters())), float(acts[0])


def calibration_models(batch: int = 1) -> list[tuple[nn.Module, int]]:
    """[(fused model, size)] the cold fraction is fitted on: `CALIBRATION_CHOICES` x `CALIBRATION_CLASSES` x
    `CALIBRATION_SIZES`."""
    from .search import N_LAYERS

    out = []
    for choice in CALIBRATION_CHOICES:
        for classes in CALIBRATION_CLASSES:
            m = fused_model("moga_searched", layers=[list(choice)] * N_LAYERS, num_classes=classes)
            out += [(m, s) for s in CALIBRATION_SIZES]
    return out


def fit_cold_fraction(rows: Sequence[dict]) -> list[float]:
    """(a, b, c) of f = a + b P + c A from rows {"warm_ms", "cold_ms", "measured_ms", "P", "A"} (P, A in units of
    the last-level cache): least squares on each model's own f, weighted by (cold - warm) / measured so that the
    residuals are relative latency errors."""
    X, y, wts = [], [], []
    for r in rows:
        span = r["cold_ms"] - r["warm_ms"]
        if span <= 0:
            continue
        X.append([1.0, r["P"], r["A"]])
        y.append((r["measured_ms"] - r["warm_ms"]) / span)
        wts.append(span / r["measured_ms"])
    if len(X) < 3:
        return [0.0, 0.0, 0.0]
    w = np.asarray(wts)[:, None]
    coef, *_ = np.linalg.lstsq(np.asarray(X) * w, np.asarray(y) * w[:, 0], rcond=None)
    return [float(v) for v in coef]


# ---------------------------------------------------------------- the table
class LatencyTable:
    """Measured latency (ms) per part key for one device, runtime, thread count and batch.

    `entries`: {key: {"ms": net latency (overhead taken off), "cold_ms" (with `flush`), "raw_ms", "spread",
    "fields"}}; `overhead_ms`: the fixed cost of one timed call, added once per predicted model. `clock`:
    "wall" or "cpu" (the thread's CPU time, one thread only). `flush`: "ms" is the warm entry and "cold_ms" the
    cold one, mixed per model by its cold fraction (`cache_model`: {"coef": (a, b, c), "llc_bytes", "rows",
    "range"}); without it, parts are timed from a hot cache and the sum comes out low.
    """

    def __init__(self, runtime: str, threads: int, batch: int = 1, entries: dict | None = None,
                 overhead_ms: float | None = None, meta: dict | None = None, clock: str = "wall",
                 flush: bool = True, cold_overhead_ms: float | None = None, cache_model: dict | None = None) -> None:
        self.runtime, self.threads, self.batch, self.clock, self.flush = runtime, threads, batch, clock, flush
        self.entries: dict[str, dict] = dict(entries or {})
        self.overhead_ms, self.cold_overhead_ms = overhead_ms, cold_overhead_ms
        self.cache_model = cache_model
        self.meta = dict(meta or {})

    @property
    def key(self) -> dict:
        k = cache_key(self.runtime, self.threads, 0, self.batch, self.clock)
        k.pop("size")
        return {**k, "table_version": TABLE_VERSION, "flush": self.flush}

    def missing(self, model: nn.Module, size: int = 224) -> list[tuple[str, dict, nn.Module, tuple]]:
        """The parts of `model` whose key has no entry yet (each key once)."""
        out: dict[str, tuple] = {}
        for p in model_parts(model, size, self.batch):
            if p[0] not in self.entries:
                out.setdefault(p[0], p)
        return list(out.values())

    def _time(self, part: nn.Module, shape: tuple, cache: str, input_warm: bool = True, **stable_kwargs) -> dict:
        return time_part(part, shape, self.runtime, self.threads, self.clock, cache, input_warm, **stable_kwargs)

    def measure(self, models: Iterable[nn.Module], size: int = 224, progress: bool = True,
                on_entry: Callable[["LatencyTable"], None] | None = None, **stable_kwargs) -> int:
        """Measure every part kind of `models` (fused) not yet in the table, and (with `flush`, once per table)
        the calibration models and the cold fraction fitted on them; returns how many part kinds were added."""
        calibrate = self.flush and self.cache_model is None
        calib = calibration_models(self.batch) if calibrate else []
        todo: dict[str, tuple] = {}
        for m, s in [(m, size) for m in models] + calib:
            for p in self.missing(m, s):
                todo.setdefault(p[0], p)
        states = ("warm", "cold") if self.flush else ("hot",)
        if self.overhead_ms is None:
            nothing = (self.batch, 16, 8, 8)
            self.overhead_ms = self._time(_Nothing(), nothing, states[0], **stable_kwargs)["median_ms"]
            if self.flush:
                self.cold_overhead_ms = self._time(_Nothing(), nothing, "cold", **stable_kwargs)["median_ms"]
        for key, fields, part, shape in _progress(list(todo.values()), progress, unit="block"):
            r = self._time(part, shape, states[0], **stable_kwargs)
            entry = {"ms": max(0.0, r["median_ms"] - self.overhead_ms), "raw_ms": r["median_ms"],
                     "spread": r["spread"], "fields": fields, **machine_load()}
            if self.flush:  # the stem's input is the image: cold inside a model too
                c = self._time(part, shape, "cold", input_warm=fields["role"] != "stem", **stable_kwargs)
                entry.update(cold_ms=max(entry["ms"], c["median_ms"] - self.cold_overhead_ms),
                             cold_raw_ms=c["median_ms"])
            self.entries[key] = entry
            if on_entry is not None:
                on_entry(self)
        if calibrate:
            rows, llc = [], last_level_cache_bytes()
            for m, s in _progress(calib, progress, unit="model"):
                warm, cold = self._sums(m, s)
                p_bytes, a_bytes = footprint(m, s, self.batch)
                meas = self._time(m, (self.batch, m.conv_stem.in_channels, s, s), "hot", **stable_kwargs)
                rows.append({"size": s, "warm_ms": warm, "cold_ms": cold, "measured_ms": meas["median_ms"],
                             "P": p_bytes / llc, "A": a_bytes / llc})
            coef = fit_cold_fraction(rows)
            fitted = [coef[0] + coef[1] * r["P"] + coef[2] * r["A"] for r in rows]
            self.cache_model = {"coef": coef, "llc_bytes": llc, "rows": rows,
                                "range": [min(fitted), max(fitted)]}
            if on_entry is not None:
                on_entry(self)
        return len(todo)

    def _sums(self, model: nn.Module, size: int) -> tuple[float, float]:
        """(warm, cold) predicted ms of `model`: overhead + the sum of its parts' entries in each state."""
        parts = model_parts(model, size, self.batch)
        absent = [p for p in parts if p[0] not in self.entries]
        if absent:
            raise ValueError(f"{len(absent)} part kinds of this model are not in the {self.runtime} table, e.g. "
                             f"{absent[0][0]}; run `mobilevision lut build` with this model first")
        warm = sum(self.entries[k]["ms"] for k, *_ in parts)
        cold = sum(self.entries[k].get("cold_ms", self.entries[k]["ms"]) for k, *_ in parts)
        base = self.overhead_ms or 0.0
        return base + warm, base + cold

    def cold_fraction(self, model: nn.Module, size: int = 224) -> float:
        """f of `model` at `size` (0 for a table timed from a hot cache)."""
        if not self.flush:
            return 0.0
        if self.cache_model is None:
            raise ValueError(f"the {self.runtime} table has no cache calibration yet; run `mobilevision lut build`")
        p_bytes, a_bytes = footprint(model, size, self.batch)
        llc = self.cache_model["llc_bytes"]
        a, b, c = self.cache_model["coef"]
        lo, hi = self.cache_model["range"]
        return float(min(hi, max(lo, a + b * p_bytes / llc + c * a_bytes / llc)))

    def part_ms(self, key: str, cold_fraction: float) -> float:
        """One part's entry mixed by a model's cold fraction."""
        e = self.entries[key]
        return e["ms"] + cold_fraction * (e.get("cold_ms", e["ms"]) - e["ms"])

    def predict(self, model: nn.Module, size: int = 224, detail: bool = False) -> float | tuple[float, list]:
        """Predicted latency (ms) of `model` at (batch, C, size, size): overhead + the sum of its parts' entries,
        each warm + f x (cold - warm). ValueError naming the parts not in the table (measure them with `measure` /
        `lut build`)."""
        self._sums(model, size)  # the missing-parts error
        f = self.cold_fraction(model, size)
        rows = [(k, self.part_ms(k, f)) for k, *_ in model_parts(model, size, self.batch)]
        total = (self.overhead_ms or 0.0) + sum(ms for _, ms in rows)
        return (total, rows) if detail else total

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"key": self.key, "runtime": self.runtime, "threads": self.threads, "batch": self.batch,
                "clock": self.clock, "flush": self.flush, "overhead_ms": self.overhead_ms,
                "cold_overhead_ms": self.cold_overhead_ms, "cache_model": self.cache_model, "meta": self.meta,
                "entries": self.entries}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON, atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, check_device: bool = True) -> "LatencyTable":
        """A saved table; ValueError for a file that is not one, or (with `check_device`) one measured on
        another device / runtime version."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"latency table {path} does not exist; build it with `mobilevision lut build`")
        try:
            d = json.loads(path.read_text())
            table = cls(d["runtime"], int(d["threads"]), int(d["batch"]), d["entries"], d["overhead_ms"], d.get("meta"),
                        d.get("clock", "wall"), bool(d.get("flush", True)), d.get("cold_overhead_ms"),
                        d.get("cache_model"))
            for e in table.entries.values():
                float(e["ms"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a latency table ({type(err).__name__}: {str(err)[:60]}); rebuild it "
                             f"with `mobilevision lut build`") from None
        if check_device and d.get("key") != table.key:
            raise ValueError(f"latency table {path} was measured on another device or runtime version "
                             f"({d.get('key', {}).get('cpu')}); rebuild it here with `mobilevision lut build`")
        return table


def default_table_path(runtime: str, threads: int, batch: int = 1, directory: str | os.PathLike | None = None,
                       clock: str = "wall") -> Path:
    """Where `lut build` keeps the table of this device, runtime, threads, batch and clock by default."""
    key = LatencyTable(runtime, threads, batch, clock=clock).key
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(directory or cache_dir()) / f"lut_{runtime}_t{threads}_b{batch}_{clock}_{digest}.json"


def open_table(runtime: str, threads: int, batch: int = 1, path: str | os.PathLike | None = None,
               clock: str = "wall") -> LatencyTable:
    """The saved table at `path` (default `default_table_path`) or a new empty one when there is none; an
    unreadable default file starts over."""
    p = Path(path) if path else default_table_path(runtime, threads, batch, clock=clock)
    if p.exists():
        try:
            t = LatencyTable.load(p)
            if (t.runtime, t.threads, t.batch, t.clock) != (runtime, threads, batch, clock):
                raise ValueError(f"latency table {p} is for {t.runtime}, {t.threads} threads, batch {t.batch}, "
                                 f"{t.clock} clock, not {runtime}, {threads}, {batch}, {clock}")
            return t
        except ValueError:
            if path:
                raise
    return LatencyTable(runtime, threads, batch, clock=clock)


FAMILY_MODELS = ("mobilenetv1", "mobilenetv2", "mobilenetv3", "efficientnet", "moga")


def family_models() -> list[str]:
    """The registered ImageNet classifiers the table covers (MobileNetV1-3, EfficientNet, MoGA)."""
    return [n for n, v in classifiers().items() if v["family"] in FAMILY_MODELS]


def fused_model(name_or_model, **kwargs) -> nn.Module:
    """A registered name (or a built model) -> the fused eval model the table and the runtimes see."""
    import mobilevision

    from .fusion import fuse

    model = mobilevision.create_model(name_or_model, **kwargs) if isinstance(name_or_model, str) else name_or_model
    return fuse(model.eval())


__all__ = ["LatencyTable", "model_parts", "part_key", "part_timer", "time_part", "default_table_path", "open_table",
           "family_models", "fused_model", "LUT_RUNTIMES", "RUNTIMES"]
