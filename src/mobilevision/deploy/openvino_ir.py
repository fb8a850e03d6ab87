"""OpenVINO IR export (`openvino.convert_model` of the fused model), OpenVINO's CPU plugin as the runtime, and INT8
with NNCF post-training quantization.

Precision: on CPUs with AMX or AVX-512 BF16 the CPU plugin computes in bf16 unless told otherwise (its
`INFERENCE_PRECISION_HINT` defaults to bf16 there), which moves logits by ~1e-2. Every session made here sets
the hint explicitly: "fp32" (the default) is real FP32; "bf16" is its own, named precision.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import nn

from .export import (INPUT_NAME, METADATA_KEY, OUTPUT_NAME, ExportResult, _quiet_export, export_metadata, quiet_tool,
                     prepare_export, torch_export, traced_dynamic_dims)

# our precision names -> the CPU plugin's INFERENCE_PRECISION_HINT
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


@contextlib.contextmanager
def no_usage_telemetry():
    """Within the block, OpenVINO's converter and NNCF send no usage statistics. Unless the user opted out, they
    send them on import and on every conversion, each from a process forked on a background thread (with a 3 s
    timeout): a fork in a multithreaded process (JAX warns, then may deadlock), next to timed runs, and data sent
    on the user's behalf by a library that did not ask."""
    try:
        from openvino_telemetry.utils.sender import TelemetrySender
    except ImportError:  # the converter then sends nothing either
        yield
        return
    send = TelemetrySender.send
    TelemetrySender.send = lambda self, backend, message: None
    try:
        yield
    finally:
        TelemetrySender.send = send


@functools.cache
def ov_core():
    """One openvino.Core per process (creating one loads the plugins)."""
    with no_usage_telemetry():
        import openvino as ov

    return ov.Core()


def export_openvino(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int, int] | None = None,
                    dynamic: bool = False, fuse_first: bool = True, metadata: dict | None = None) -> ExportResult:
    """Convert `model` (fused first unless `fuse_first=False`) to OpenVINO IR: `path` (.xml) plus its .bin.

    The conversion goes through the same `torch.export` program as the ONNX path, so the dynamic dims are the
    same: the batch always, H / W with `dynamic` where the model allows. Weights stay FP32 (no fp16 compression).
    The input is named "input", the output "logits"; the mobilevision metadata (data config, labels) is stored in
    the IR's rt_info (`read_openvino_metadata`).
    """
    model, cfg, path, _ = prepare_export(model, path, input_size, fuse_first, ".xml", "OpenVINO IR")
    c, h, w = cfg.input_size
    program = torch_export(model, c, h, w, dynamic)
    with no_usage_telemetry():
        import openvino as ov

        ovm = _quiet_export(ov.convert_model, program)
    ovm.inputs[0].get_tensor().set_names({INPUT_NAME})
    ovm.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    meta = export_metadata(model, cfg, {"exporter": "openvino.convert_model(torch.export)", "precision": "fp32",
                                        **(metadata or {})})
    ovm.set_rt_info(json.dumps(meta), [METADATA_KEY])
    ov.save_model(ovm, str(path), compress_to_fp16=False)
    ops = collections.Counter(op.get_type_name() for op in ovm.get_ordered_ops())
    graph = {"ops": dict(sorted(ops.items())), "num_nodes": sum(ops.values())}
    return ExportResult(path, "openvino", traced_dynamic_dims(program), (c, h, w), None, graph)


def read_openvino_metadata(path: str | os.PathLike) -> dict:
    """The mobilevision metadata stored in an IR's rt_info ({} if there is none)."""
    ovm = ov_core().read_model(str(path))
    if not ovm.has_rt_info([METADATA_KEY]):
        return {}
    return json.loads(ovm.get_rt_info([METADATA_KEY]).astype(str))


def compile_openvino(path_or_model, threads: int = 0, precision: str = "fp32"):
    """A compiled CPU model with the inference precision set explicitly ("fp32", "bf16" or "fp16") and
    `threads` inference threads (0 = OpenVINO's default), tuned for latency."""
    if precision not in PRECISION_HINTS:
        raise ValueError(f"OpenVINO precision must be one of {', '.join(PRECISION_HINTS)}, got {precision!r}")
    config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    src = str(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    return ov_core().compile_model(src, "CPU", config)


def quantize_openvino(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray,
                      transformer: bool | None = None, fast_bias_correction: bool = True) -> Path:
    """INT8 IR at `out_path` from the FP32 IR at `fp32_path` with NNCF post-training quantization (symmetric
    8-bit weights per channel, activations per tensor) calibrated on `calibration` (N, C, H, W) float32.

    `transformer` selects NNCF's transformer model type (keeps LayerNorm / GELU / softmax paths in float and
    quantizes MatMuls); None picks it for graphs with MatMul-heavy attention or LayerNorm (MVN ops).
    """
    with no_usage_telemetry():
        import nncf
        import openvino as ov

    src = Path(fp32_path).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"OpenVINO IR not found: {src}")
    ovm = ov_core().read_model(str(src))
    if transformer is None:
        types = {op.get_type_name() for op in ovm.get_ordered_ops()}
        transformer = "MVN" in types or "Softmax" in types
    samples = [calibration[i:i + 1].astype(np.float32) for i in range(len(calibration))]
    with no_usage_telemetry():
        q = quiet_tool("nncf", nncf.quantize, ovm, nncf.Dataset(samples), subset_size=len(samples),
                       preset=nncf.QuantizationPreset.PERFORMANCE,
                       model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                       fast_bias_correction=fast_bias_correction)
    meta = read_openvino_metadata(src)
    meta["precision"] = "int8"
    q.set_rt_info(json.dumps(meta), [METADATA_KEY])
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


class OpenVINORunner:
    """Run an IR on OpenVINO's CPU plugin: (B, C, H, W) float32 array -> (B, classes) logits."""

    def __init__(self, path: str | os.PathLike, threads: int = 0, precision: str = "fp32") -> None:
        self.compiled = compile_openvino(path, threads, precision)
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        shape = self.compiled.inputs[0].get_partial_shape()
        self.input_dims: Sequence = [d.get_length() if d.is_static else None for d in shape]
        out = self.compiled.outputs[0].get_partial_shape()
        self.out_classes = out[-1].get_length() if len(out) and out[-1].is_static else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # share_inputs: the request reads a C-contiguous float32 input in place instead of copying it first
        # (7 % of a 0.5 ms MobileNetV3-Small INT8 call)
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.request.infer({0: x}, share_inputs=True)
        return np.array(self.request.get_output_tensor(0).data, copy=True)
