"""Export of the fused inference form: ONNX (here, with graph portability checks and onnxruntime verification),
OpenVINO IR (`openvino_ir`), ExecuTorch / XNNPACK (`executorch_pte`), LiteRT / TFLite (`litert_tflite`) and Core ML
(`coreml_package`), through one entry point, `export_model`."""
from __future__ import annotations

import collections
import importlib
import io
import json
import logging
import os
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from mobilevision.data.config import resolve_data_config
from mobilevision.layers.helpers import check_choice

from .fusion import fuse
from .inference import preprocess, sample_photos

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"
DIMS = ("batch", "channels", "height", "width")  # the input's dims, as the dynamic ones are named
METADATA_KEY = "mobilevision"
# Ops that would make an exported graph non-deterministic.
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial",
              "Dropout"}
# export format -> file suffix
FORMATS = {"onnx": ".onnx", "openvino": ".xml", "executorch": ".pte", "tflite": ".tflite", "coreml": ".mlpackage"}
# the formats whose INT8 is not made at export, and where it is
_INT8_ELSEWHERE = {
    "onnx": "ONNX INT8 quantizes the exported graph: use quantize.quantize_exported",
    "openvino": "OpenVINO INT8 quantizes the exported IR: use quantize.quantize_exported",
    "coreml": "Core ML INT8 is not supported here: export FP32 (--format coreml without --int8)",
}
# the other formats' exporters: format -> (module, function)
_EXPORTERS = {"openvino": (".openvino_ir", "export_openvino"), "executorch": (".executorch_pte", "export_executorch"),
              "tflite": (".litert_tflite", "export_litert"), "coreml": (".coreml_package", "export_coreml")}


@dataclass
class ExportResult:
    """Where the graph went, which exporter made it, which input dims are dynamic, and why a fallback happened."""

    path: Path
    exporter: str  # ONNX: "dynamo" | "legacy"; the other formats: the runtime's name
    dynamic_dims: list[str]
    input_size: tuple[int, int, int]
    fallback_reason: str | None = None
    graph: dict = field(default_factory=dict)


def _quiet_export(fn, *args, **kwargs):
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def quiet_tool(logger_name: str, fn, *args, **kwargs):
    """`fn(*args, **kwargs)` with stdout, stderr, warnings and the `logger_name` logger's INFO lines silenced
    (NNCF and litert-torch draw progress bars and log every step)."""
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with redirect_stderr(io.StringIO()):
            return _quiet_export(fn, *args, **kwargs)
    finally:
        log.setLevel(level)


def pt2e_quantize(model: nn.Module, calibration: np.ndarray, quantizer, max_batch: int, **convert_kwargs):
    """`prepare_pt2e(export(model), quantizer)` run over `calibration` (N, C, H, W) one image at a time, then
    `convert_pt2e(..., **convert_kwargs)`: the quantized GraphModule (batch dynamic up to `max_batch`)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    x = torch.from_numpy(np.ascontiguousarray(calibration[:2], dtype=np.float32))
    if len(x) < 2:  # export specialises a batch of 1
        x = x.expand(2, -1, -1, -1).contiguous()
    gm = _quiet_export(torch.export.export, model.eval(), (x,), dynamic_shapes=dynamic_shapes(max_batch)).module()
    prepared = _quiet_export(prepare_pt2e, gm, quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):
            prepared(torch.from_numpy(np.ascontiguousarray(calibration[i:i + 1], dtype=np.float32)))
    return _quiet_export(convert_pt2e, prepared, **convert_kwargs)


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]


def export_form(model: nn.Module) -> nn.Module:
    """The one-tensor-in module a runtime runs for `model`: a detector's raw decoded boxes (B, A, 4) and
    per-class scores (B, A, C) without NMS, a segmenter's logits (B, K, H, W) without the aux head, any other
    model as it is."""
    from mobilevision.tasks.detect.detr import MobileFormerDETR
    from mobilevision.tasks.detect.export import RawDetector
    from mobilevision.tasks.detect.ssdlite import SSDLite
    from mobilevision.tasks.segment.model import LogitsOnly, Segmenter

    if isinstance(model, (SSDLite, MobileFormerDETR)):
        return RawDetector(model).eval()
    if isinstance(model, Segmenter):
        return LogitsOnly(model).eval()
    return model


def export_onnx(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int, int] | None = None,
                dynamic: bool = False, opset: int = OPSET, fuse_first: bool = True, exporter: str = "auto",
                metadata: dict | None = None) -> ExportResult:
    """Export `model` (fused first unless `fuse_first=False`) to a single-file ONNX graph at `path`.

    The input is (B, C, H, W) named "input", the output "logits". The batch is always dynamic; with
    `dynamic`, so are H / W where the model allows (otherwise they stay at `input_size`). `exporter="auto"` uses
    torch.onnx's dynamo exporter and falls back to the TorchScript ("legacy") exporter only if it fails;
    the result says which and why. The graph is checked with onnx.checker and for portability
    (`graph_report`); RuntimeError if it is not portable.
    """
    import onnx

    if exporter not in ("auto", "dynamo", "legacy"):
        raise ValueError(f"exporter must be auto, dynamo or legacy, got {exporter!r}")
    model, cfg, path, example = prepare_export(model, path, input_size, fuse_first)
    c, h, w = cfg.input_size

    # torch.export fixes every dim that is 1 at trace time and gives equal dims one symbol, so the graph is
    # traced at batch 2 (the batch is always dynamic) and, for dynamic H / W, at a size where no feature map
    # (or patch count) is 1 and H != W
    at_size = example.expand(2, -1, -1, -1)
    if dynamic:
        used, reason = _export(model, _dynamic_example(c, h, w), path, True, opset, exporter)
        if "height" not in _dynamic_dims(path):  # the model needs a fixed size: export at the one asked for
            used, reason = _export(model, at_size, path, True, opset, exporter)
    else:
        used, reason = _export(model, at_size, path, False, opset, exporter)

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = export_metadata(model, cfg, {"exporter": used, **(metadata or {})})
    del proto.metadata_props[:]
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta))
    onnx.save(proto, str(path))
    report = graph_report(proto)
    problems = portability_problems(report)
    if problems:
        raise RuntimeError(f"exported graph {path} is not portable: {'; '.join(problems)}")
    return ExportResult(path, used, _dynamic_dims(proto), (c, h, w), reason, report)


def prepare_export(model: nn.Module, path: str | os.PathLike, input_size, fuse_first: bool,
                   suffix: str | None = None, what: str = "") -> tuple[nn.Module, Any, Path, torch.Tensor]:
    """What every export target does first: the data config at the export size (stored with the file), the
    fused (or eval) model, the checked path (ValueError unless it ends in `suffix`) with its folder made, and
    a trial (1, C, H, W) forward (returned) that names the size if the model cannot take it."""
    cfg = resolve_data_config(model, input_size=input_size)
    c, h, w = cfg.input_size
    model = fuse(model) if fuse_first else model.eval()
    path = Path(path)
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f"{what} path {path} must end in {suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return model, cfg, path, trial_forward(model, c, h, w)


def trial_forward(model: nn.Module, c: int, h: int, w: int, what: str = "model") -> torch.Tensor:
    """Run `model` once on a (1, c, h, w) input (returned); ValueError naming `what` and the size if it cannot
    take it."""
    example = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        try:
            model(example)
        except Exception as err:  # noqa: BLE001 - any failure here means the size does not fit
            raise ValueError(f"{what} cannot take input size {h}x{w}: {_first_line(err)}") from None
    return example


def export_metadata(model: nn.Module, cfg, extra: dict | None = None) -> dict:
    """What every exported file carries: the data config (preprocessing) it was exported with, the model name,
    class count and labels, plus `extra` (exporter, precision, ...)."""
    meta = {"data_config": cfg.to_dict(), "model": getattr(model, "model_name", None),
            "num_classes": getattr(model, "num_classes", None), "labels": getattr(model, "labels", None)}
    meta.update(extra or {})
    return meta


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the metadata of a file with no room for it (.pte, .tflite) lives: `model.pte` -> `model.pte.json`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | os.PathLike, meta: dict) -> None:
    """Write `meta` as the sidecar JSON of the exported file `path`."""
    sidecar_path(path).write_text(json.dumps(meta, indent=2))


def torch_export(model: nn.Module, c: int, h: int, w: int, dynamic: bool, max_batch: int = 4096,
                 max_side: int | None = None) -> torch.export.ExportedProgram:
    """`torch.export` of `model` with a dynamic batch (up to `max_batch`) and, with `dynamic`, dynamic H / W (up to
    `max_side`) where the model allows; the program the OpenVINO and ExecuTorch paths convert.

    Traced as `export_onnx` traces: at batch 2 and, for dynamic H / W, at a size where no map is 1 and H != W;
    when the model's code fixes H / W the program is traced again at (h, w)."""
    def run(x: torch.Tensor, spatial: bool) -> torch.export.ExportedProgram:
        shapes = dynamic_shapes(max_batch, spatial, max_side)
        return _quiet_export(torch.export.export, model, (x,), dynamic_shapes=shapes)

    at_size = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    if dynamic:
        program = run(_dynamic_example(c, h, w), True)
        if "height" in traced_dynamic_dims(program):
            return program
    return run(at_size, False)


def dynamic_shapes(max_batch: int = 4096, spatial: bool = False, max_side: int | None = None) -> tuple[dict]:
    """torch.export's `dynamic_shapes` for the one (B, C, H, W) input: the batch dynamic up to `max_batch`; with
    `spatial`, H / W too (up to `max_side`), as `Dim.AUTO`, which keeps them static where the model's code needs
    them fixed."""
    from torch.export import Dim

    shapes = {0: Dim("batch", min=1, max=max_batch)}
    if spatial:
        auto = Dim.AUTO if max_side is None else Dim.AUTO(min=1, max=max_side)
        shapes.update({2: auto, 3: auto})
    return (shapes,)


def traced_dynamic_dims(program: torch.export.ExportedProgram) -> list[str]:
    """Names of the program input's symbolic dims, among batch, channels, height, width."""
    node = next(n for n in program.graph.nodes if n.op == "placeholder"
                and n.name in program.graph_signature.user_inputs)
    return [n for n, d in zip(DIMS, node.meta["val"].shape) if not isinstance(d, int)]


def export_model(model: nn.Module, path: str | os.PathLike, format: str = "onnx",
                 input_size: tuple[int, int, int] | None = None, dynamic: bool = False, fuse_first: bool = True,
                 metadata: dict | None = None, calibration: np.ndarray | None = None, **kwargs) -> ExportResult:
    """Export `model` (fused first unless `fuse_first=False`) to `format` ("onnx", "openvino", "executorch",
    "tflite" or "coreml") at `path` (.onnx / .xml / .pte / .tflite / .mlpackage); `kwargs` go to `export_onnx`
    (opset, exporter).

    `calibration` ((N, C, H, W) float32 at the export size) asks for INT8 where the quantizer works on the model
    itself (ExecuTorch's and LiteRT's PT2E); ONNX and OpenVINO quantize the exported FP32 file
    (`quantize.quantize_exported`); Core ML has no INT8 here (it is not run on Linux). Every format carries
    `export_metadata`: ONNX, OpenVINO and Core ML inside the file, ExecuTorch and LiteRT in `<file>.json`.
    """
    check_choice(format, FORMATS, "export format")
    if kwargs and format != "onnx":
        raise ValueError(f"options {', '.join(kwargs)} are for ONNX export only")
    if calibration is not None and format in _INT8_ELSEWHERE:
        raise ValueError(_INT8_ELSEWHERE[format])
    if format == "onnx":
        return export_onnx(model, path, input_size, dynamic, fuse_first=fuse_first, metadata=metadata, **kwargs)
    module, name = _EXPORTERS[format]
    export = getattr(importlib.import_module(module, __package__), name)
    int8 = {} if calibration is None else {"calibration": calibration}
    return export(model, path, input_size, dynamic, fuse_first, metadata, **int8)


def file_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of an exported model: an OpenVINO IR counts its .xml and .bin, a Core ML package (a
    folder) every file in it."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    size = path.stat().st_size
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


def format_of(path: str | os.PathLike) -> str:
    """The export format of a file from its suffix; ValueError for another suffix."""
    suffix = Path(path).suffix.lower()
    for fmt, suf in FORMATS.items():
        if suf == suffix:
            return fmt
    raise ValueError(f"{path}: not an exported model (accepted suffixes: {', '.join(FORMATS.values())})")


def _dynamic_example(c: int, h: int, w: int) -> torch.Tensor:
    th, tw = max(h, 128), max(w, 128)
    return torch.randn(2, c, th, tw + 32 if tw == th else tw, generator=torch.Generator().manual_seed(0))


def _export(model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool, opset: int, exporter: str
            ) -> tuple[str, str | None]:
    """Export with the dynamo exporter, or the legacy one as asked / as a fallback: (exporter used, why fallback).

    The batch is dynamic either way; `dynamic` makes H and W dynamic too."""
    reason = None
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(model, x, path, dynamic, opset)
            return "dynamo", None
        except Exception as err:  # noqa: BLE001 - the dynamo exporter raises many types
            if exporter == "dynamo":
                raise RuntimeError(f"dynamo ONNX export failed: {_first_line(err)}") from None
            reason = f"dynamo exporter failed: {type(err).__name__}: {_first_line(err)}"
    _export_legacy(model, x, path, dynamic, min(opset, 18))
    return "legacy", reason


def _dynamic_dims(path_or_proto) -> list[str]:
    """Names of the graph input's dims without a fixed value, among batch, channels, height, width."""
    import onnx

    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return [n for n, d in zip(DIMS, dims) if not d.HasField("dim_value")]


def _export_dynamo(model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool, opset: int) -> None:
    _quiet_export(torch.onnx.export, model, (x,), str(path), dynamo=True, external_data=False, opset_version=opset,
                  dynamic_shapes=dynamic_shapes(spatial=dynamic), input_names=[INPUT_NAME],
                  output_names=[OUTPUT_NAME], verbose=False, report=False)


def _export_legacy(model: nn.Module, x: torch.Tensor, path: Path, dynamic: bool, opset: int) -> None:
    spatial = {2: "height", 3: "width"} if dynamic else {}
    axes = {INPUT_NAME: {0: "batch", **spatial}, OUTPUT_NAME: {0: "batch"}}
    _quiet_export(torch.onnx.export, model, (x,), str(path), dynamo=False, opset_version=opset,
                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes)


def read_metadata(path_or_proto) -> dict:
    """The mobilevision metadata (data_config, labels, model name, exporter) stored in an exported graph.

    Graphs from older versions stored the data config under `default_cfg`; it is returned as `data_config`.
    An OpenVINO IR (.xml) keeps it in its rt_info, a Core ML package in its user-defined metadata, an ExecuTorch
    program (.pte) and a LiteRT model (.tflite) in their sidecar `<file>.json`."""
    import onnx

    suffix = Path(path_or_proto).suffix.lower() if isinstance(path_or_proto, (str, os.PathLike)) else ""
    if suffix == ".xml":
        from .openvino_ir import read_openvino_metadata

        return read_openvino_metadata(path_or_proto)
    if suffix in (".pte", ".tflite"):  # {} if the sidecar is missing
        side = sidecar_path(path_or_proto)
        return json.loads(side.read_text()) if side.is_file() else {}
    if suffix == ".mlpackage":
        from .coreml_package import read_coreml_metadata

        return read_coreml_metadata(path_or_proto)
    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto),
                                                                                      load_external_data=False)
    for p in proto.metadata_props:
        if p.key == METADATA_KEY:
            meta = json.loads(p.value)
            if "data_config" not in meta and "default_cfg" in meta:
                meta["data_config"] = meta.pop("default_cfg")
            return meta
    return {}


def _graphs(graph):
    """A graph and every subgraph inside its nodes' attributes (If / Loop / Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def graph_report(proto) -> dict:
    """Op counts, tensor ranks and portability facts of an ONNX graph, after onnx shape inference.

    Keys: ops (op_type -> count), max_rank, high_rank (names of tensors with rank > 5, with their rank),
    nonstandard_ops (ops outside the default ONNX domain), random_ops, functions (local functions left).
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    ops: collections.Counter = collections.Counter()
    ranks: dict[str, int] = {}
    nonstandard, random_ops = set(), set()
    for g in _graphs(inferred.graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                ranks[vi.name] = len(t.shape.dim)
        for init in g.initializer:
            ranks[init.name] = len(init.dims)
        consts = {init.name: init for init in g.initializer}
        for node in g.node:
            ops[node.op_type] += 1
            if node.domain not in ("", "ai.onnx"):
                nonstandard.add(f"{node.domain}::{node.op_type}")
            if node.op_type in RANDOM_OPS:
                random_ops.add(node.op_type)
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        consts[node.output[0]] = attr.t
            # A Reshape / Expand to a target shape of length > 5 makes a rank > 5 tensor even when
            # shape inference could not follow the data.
            if node.op_type in ("Reshape", "Expand", "ConstantOfShape") and len(node.input) >= 1:
                shape_in = node.input[1] if node.op_type != "ConstantOfShape" else node.input[0]
                if shape_in in consts and consts[shape_in].dims:
                    ranks[node.output[0]] = max(ranks.get(node.output[0], 0), int(consts[shape_in].dims[0]))
    high = {n: r for n, r in ranks.items() if r > 5}
    return {
        "ops": dict(sorted(ops.items())),
        "num_nodes": sum(ops.values()),
        "max_rank": max(ranks.values(), default=0),
        "high_rank": high,
        "nonstandard_ops": sorted(nonstandard),
        "random_ops": sorted(random_ops),
        "functions": [f.name for f in inferred.functions],
    }


def portability_problems(report: dict, max_rank: int = 5) -> list[str]:
    """Human-readable reasons a graph is not portable (empty list when it is)."""
    out = []
    if report["max_rank"] > max_rank:
        first = ", ".join(f"{n} (rank {r})" for n, r in list(report["high_rank"].items())[:3])
        out.append(f"{len(report['high_rank'])} tensors of rank > {max_rank}: {first}")
    if report["nonstandard_ops"]:
        out.append(f"non-standard ops: {', '.join(report['nonstandard_ops'][:5])}")
    if report["random_ops"]:
        out.append(f"random ops: {', '.join(report['random_ops'])}")
    return out


def other_size(h: int, w: int) -> tuple[int, int]:
    """A second test size: 64 px smaller (at least 64), kept a multiple of 32 so every family can take it."""
    return max(64, (h - 64) // 32 * 32), max(64, (w - 64) // 32 * 32)


def ort_session(path: str | os.PathLike, threads: int = 0, spin: bool = True):
    """An onnxruntime CPU session with all graph optimisations and `threads` intra-op threads (0 = ORT default).

    `spin=False` stops idle worker threads from busy-waiting (kinder to a shared machine; slower latency).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def verify_onnx(model: nn.Module, path: str | os.PathLike, sizes: Sequence[tuple[int, int]] | None = None,
                batch: int = 2, photos: bool = True, fuse_first: bool = True) -> list[dict]:
    """Max abs difference between PyTorch and onnxruntime on the same inputs, per size and input kind.

    For each (H, W) in `sizes` (default: the model's default size): a random batch of `batch` inputs and,
    with `photos`, scikit-image's sample photos preprocessed with the model's data config at that size.
    A graph with a fixed batch is fed at that batch. Returns rows {"size", "inputs", "max_abs_diff",
    "max_abs_logit", "top1_agree"}.
    """
    return verify_exported(model, path, sizes, batch, photos, fuse_first)


def verify_exported(model: nn.Module, path: str | os.PathLike, sizes: Sequence[tuple[int, int]] | None = None,
                    batch: int = 2, photos: bool = True, fuse_first: bool = True, **runner_kwargs) -> list[dict]:
    """`verify_onnx` for any exported format that runs here (.onnx / .xml / .pte / .tflite), run on its own runtime
    (`load_exported`, which takes `runner_kwargs`, e.g. precision="bf16" for OpenVINO). Same rows."""
    from .runtime import load_exported

    cfg = resolve_data_config(model)
    c = cfg.input_size[0]
    sizes = list(sizes or [cfg.size])
    model = fuse(model) if fuse_first else model.eval()
    runner = load_exported(path, **runner_kwargs)
    pics = sample_photos() if photos else {}
    rows = []
    for h, w in sizes:
        parts = {"random": torch.randn(batch, c, h, w, generator=torch.Generator().manual_seed(h * 1000 + w))}
        if pics:
            parts["photos"] = torch.stack([preprocess(p, cfg, size=(h, w)) for p in pics.values()])
        x = torch.cat(list(parts.values()))  # one forward per size on both kinds of input
        with torch.no_grad():
            ref_all = model(x).numpy()
        got_all = runner.run(x.numpy())
        if got_all.shape != ref_all.shape:
            raise RuntimeError(f"{runner.runtime} output shape {got_all.shape} != PyTorch {ref_all.shape} at {h}x{w}")
        start = 0
        for kind, part in parts.items():
            ref, got = ref_all[start:start + len(part)], got_all[start:start + len(part)]
            start += len(part)
            rows.append({"size": (h, w), "inputs": kind, "max_abs_diff": float(np.abs(got - ref).max()),
                         "max_abs_logit": float(np.abs(ref).max()),
                         "top1_agree": float((got.argmax(-1) == ref.argmax(-1)).mean())})
    return rows
