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
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from mobilevision.models.checkpoint import atomic_write_bytes

from .choose import RUNTIMES, _progress, cache_dir, cache_key, stable_time
from .machine import last_level_cache_bytes, machine_load

LUT_RUNTIMES = ("eager", "onnxruntime")
TABLE_VERSION = 2  # 2: eager parts timed with cold weights (ColdWeights)


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
    key = "|".join(f"{k}={v}" for k, v in d.items() if k not in ("exp",))
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
    """Writes a buffer larger than the per-core L2 cache, so that the next call finds its weights where they are
    inside a whole model on onnxruntime (evicted by the other blocks' weights from L2, still in L3: a session
    packs its weights once, and these models' weights fit in L3), not hot from its own previous call."""

    def __init__(self, mib: float = 8.0) -> None:
        import numpy as np

        self.buf = np.zeros(int(mib * 2**20) // 8)

    def __call__(self) -> None:
        self.buf += 1.0


class ColdWeights(nn.Module):
    """Calls copies of `part` in turn, so many that their weights together are twice the last-level cache (at
    most `max_copies`): each call reads weights last touched a full cycle ago, as a part's weights are inside a
    whole eager model, while the interpreter and the kernels' own state stay as warm as they are there.

    Eager PyTorch reorders every convolution's weights on every call, so a whole MobileNetV3-Large moves twice
    its 22 MB of weights through a 32 MB L3 shared with other tenants: inside the model its tail took 0.53 ms
    against 0.16 ms alone after an L2 flush, and the table built that way predicted whole models 8-32 % low.
    Flushing L3 instead evicts the interpreter's state too and made small models 30-58 % high.
    """

    def __init__(self, part: nn.Module, max_copies: int = 256) -> None:
        import copy
        import math

        super().__init__()
        nbytes = sum(p.numel() * p.element_size() for p in part.parameters()) or 1
        n = max(1, min(max_copies, math.ceil(2 * last_level_cache_bytes() / nbytes)))
        self.copies = nn.ModuleList([part] + [copy.deepcopy(part) for _ in range(n - 1)])
        self.turn = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.turn = (self.turn + 1) % len(self.copies)
        return self.copies[self.turn](x)


def part_timer(part: nn.Module, shape: tuple, runtime: str, threads: int, work: Path, clock: str = "wall",
               between: Callable[[], object] | None = None) -> Callable[[int, int], dict]:
    """A round timer of `part` (or a whole model) on (shape) input: eager, or onnxruntime with the module exported
    alone by the TorchScript exporter (static shape) into `work`; `between()` runs untimed before each call."""
    from .choose import call_timer, runner_for

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if runtime == "eager":
        return runner_for(part, "eager", x, threads, work, clock, between)
    from .export import OPSET, _export_legacy, ort_session

    path = work / f"part_{time.monotonic_ns()}.onnx"
    _export_legacy(part.eval(), x, path, False, OPSET)
    sess = ort_session(path, threads=threads)
    feed = {sess.get_inputs()[0].name: x.numpy()}
    return call_timer(lambda: sess.run(None, feed), shape[0], clock, between)


def time_part(part: nn.Module, shape: tuple, runtime: str = "eager", threads: int = 2, clock: str = "wall",
              flush: bool = False, **stable_kwargs) -> dict:
    """`stable_time` figures of one part (or model) on `runtime` with `threads` threads (eager: under no_grad);
    `flush`: give each call its weights in the cache state they have inside a whole model (eager: `ColdWeights`,
    onnxruntime: `CacheFlush` before each call)."""
    from .bench import torch_threads
    from .choose import check_clock

    check_clock(clock, threads)
    if runtime not in LUT_RUNTIMES:
        raise ValueError(f"the latency table measures {', '.join(LUT_RUNTIMES)}, not {runtime!r}")
    with torch_threads(threads), tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        between = CacheFlush() if flush and runtime != "eager" else None
        timed = ColdWeights(part.eval()) if flush and runtime == "eager" else part.eval()
        return stable_time(part_timer(timed, shape, runtime, threads, Path(tmp), clock, between), **stable_kwargs)


# ---------------------------------------------------------------- the table
class LatencyTable:
    """Measured latency (ms) per part key for one device, runtime, thread count and batch.

    `entries`: {key: {"ms": net latency (overhead taken off), "raw_ms", "spread", "fields"}}; `overhead_ms`:
    the fixed cost of one timed call, added once per predicted model. `clock`: "wall" or "cpu" (the thread's CPU
    time, one thread only). `flush`: each part is timed with its weights in the cache state they have inside a
    whole model (without it, a part timed alone runs from a hot cache and the sum comes out low).
    """

    def __init__(self, runtime: str, threads: int, batch: int = 1, entries: dict | None = None,
                 overhead_ms: float | None = None, meta: dict | None = None, clock: str = "wall",
                 flush: bool = True) -> None:
        self.runtime, self.threads, self.batch, self.clock, self.flush = runtime, threads, batch, clock, flush
        self.entries: dict[str, dict] = dict(entries or {})
        self.overhead_ms = overhead_ms
        self.meta = dict(meta or {})

    @property
    def key(self) -> dict:
        k = cache_key(self.runtime, self.threads, 0, self.batch, self.clock)
        k.pop("size")
        return {**k, "table_version": TABLE_VERSION, "flush": self.flush}

    def missing(self, model: nn.Module, size: int = 224) -> list[tuple[str, dict, nn.Module, tuple]]:
        """The parts of `model` whose key has no entry yet (each key once)."""
        seen, out = set(), []
        for p in model_parts(model, size, self.batch):
            if p[0] not in self.entries and p[0] not in seen:
                seen.add(p[0])
                out.append(p)
        return out

    def measure(self, models: Iterable[nn.Module], size: int = 224, progress: bool = True,
                on_entry: Callable[["LatencyTable"], None] | None = None, **stable_kwargs) -> int:
        """Measure every part kind of `models` (fused) not yet in the table; returns how many were added."""
        todo: dict[str, tuple] = {}
        for m in models:
            for p in self.missing(m, size):
                todo.setdefault(p[0], p)
        if self.overhead_ms is None:
            self.overhead_ms = time_part(_Nothing(), (self.batch, 16, 8, 8), self.runtime, self.threads,
                                         self.clock, self.flush, **stable_kwargs)["median_ms"]
        for key, fields, part, shape in _progress(list(todo.values()), progress, unit="block"):
            r = time_part(part, shape, self.runtime, self.threads, self.clock, self.flush, **stable_kwargs)
            self.entries[key] = {"ms": max(0.0, r["median_ms"] - self.overhead_ms), "raw_ms": r["median_ms"],
                                 "spread": r["spread"], "fields": fields, **machine_load()}
            if on_entry is not None:
                on_entry(self)
        return len(todo)

    def predict(self, model: nn.Module, size: int = 224, detail: bool = False) -> float | tuple[float, list]:
        """Predicted latency (ms) of `model` at (batch, C, size, size): overhead + the sum of its parts'
        entries. ValueError naming the parts not in the table (measure them with `measure` / `lut build`)."""
        parts = model_parts(model, size, self.batch)
        absent = [p for p in parts if p[0] not in self.entries]
        if absent:
            raise ValueError(f"{len(absent)} part kinds of this model are not in the {self.runtime} table, e.g. "
                             f"{absent[0][0]}; run `mobilevision lut build` with this model first")
        rows = [(k, self.entries[k]["ms"]) for k, *_ in parts]
        total = (self.overhead_ms or 0.0) + sum(ms for _, ms in rows)
        return (total, rows) if detail else total

    # ------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"key": self.key, "runtime": self.runtime, "threads": self.threads, "batch": self.batch,
                "clock": self.clock, "flush": self.flush,
                "overhead_ms": self.overhead_ms, "meta": self.meta, "entries": self.entries}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON, atomically."""
        path = Path(path)
        atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(json.dumps(self.to_dict(), indent=1)))
        return path

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
                        d.get("clock", "wall"), bool(d.get("flush", True)))
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
    from .choose import classifiers

    return [n for n, v in classifiers().items() if v["family"] in FAMILY_MODELS]


def fused_model(name_or_model, **kwargs) -> nn.Module:
    """A registered name (or a built model) -> the fused eval model the table and the runtimes see."""
    import mobilevision

    from .fusion import fuse

    model = mobilevision.create_model(name_or_model, **kwargs) if isinstance(name_or_model, str) else name_or_model
    return fuse(model.eval())


__all__ = ["LatencyTable", "model_parts", "part_key", "part_timer", "time_part", "default_table_path", "open_table",
           "family_models", "fused_model", "LUT_RUNTIMES", "RUNTIMES"]
