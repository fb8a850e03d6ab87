"""LiteRT / TFLite export (`.tflite`) with `litert-torch` (the renamed ai-edge-torch), the `ai-edge-litert`
interpreter (XNNPACK delegate on CPU) as the runtime, and INT8 with litert-torch's PT2E quantizer
(`PT2EQuantizer`: symmetric per-channel 8-bit weights, 8-bit activations, static).

The input stays NCHW (litert-torch puts the transposes into the graph). A full-integer INT8 model takes and gives
int8 tensors; `LiteRTRunner` quantizes the input and dequantizes the logits with the file's own scales, so every
runner takes and returns float32. A `.tflite` written here carries no free-form metadata, so the mobilevision
metadata (data config, labels) is a sidecar JSON next to it: `model.tflite` -> `model.tflite.json`.
"""
from __future__ import annotations

import collections
import contextlib
import io
import os

import numpy as np
import torch
from torch import nn

from .export import (DIMS, ExportResult, _dynamic_example, dynamic_shapes, export_metadata, prepare_export,
                     pt2e_quantize, quiet_tool, write_sidecar)

# the batch is dynamic up to this bound (the interpreter re-plans its memory when the batch changes)
MAX_BATCH = 64


def _quiet(fn, *args, **kwargs):
    return quiet_tool("absl", fn, *args, **kwargs)


def export_litert(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int, int] | None = None,
                  dynamic: bool = False, fuse_first: bool = True, metadata: dict | None = None,
                  calibration: np.ndarray | None = None) -> ExportResult:
    """Convert `model` (fused first unless `fuse_first=False`) to a LiteRT flatbuffer at `path` (.tflite).

    `litert_torch.convert` traces with torch.export at batch 2 with a dynamic batch (up to `MAX_BATCH`); with
    `dynamic`, H / W are asked to be dynamic too and stay fixed where the model or the converter needs them.
    With `calibration` ((N, C, H, W) float32 at the export size) the model is quantized first with PT2E and
    litert-torch's `PT2EQuantizer` (INT8, full-integer: int8 input and output, which `LiteRTRunner` converts;
    H / W at the export size). The result's `graph` counts the TFLite ops."""
    import litert_torch

    model, cfg, path, _ = prepare_export(model, path, input_size, fuse_first, ".tflite", "LiteRT model")
    c, h, w = cfg.input_size
    at_size = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    kwargs: dict = {}
    traced = model  # the fused model keeps the name, classes and labels the metadata records
    if calibration is not None:
        from litert_torch.quantize.quant_config import QuantConfig

        traced, quantizer = quantize_pt2e(model, calibration)
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
        dynamic = False

    def convert(example: torch.Tensor, spatial: bool) -> tuple:
        """Convert at `example` (H / W dynamic with `spatial`), write `path`: (interpreter on it, its dynamic dims)."""
        edge = _quiet(litert_torch.convert, traced, (example,), dynamic_shapes=dynamic_shapes(MAX_BATCH, spatial),
                      **kwargs)
        _quiet(edge.export, str(path))
        interp = _interpreter(path, 1)
        sig = interp.get_input_details()[0]["shape_signature"]
        return interp, [n for n, d in zip(DIMS, sig) if int(d) < 0]

    interp, dims = None, []
    if dynamic:
        try:
            interp, dims = convert(_dynamic_example(c, h, w), True)
        except Exception:  # noqa: BLE001 - the model or the converter fixes H / W: convert at the size asked
            interp = None
    if interp is None or "height" not in dims:  # not dynamic, or converted at fixed H / W: at the asked size
        interp, dims = convert(at_size, False)
    ops = collections.Counter(op["op_name"] for op in interp._get_ops_details())
    write_sidecar(path, export_metadata(model, cfg, {"exporter": "litert_torch.convert", "max_batch": MAX_BATCH,
                                                     "precision": "int8" if calibration is not None else "fp32",
                                                     "dynamic_dims": dims, **(metadata or {})}))
    return ExportResult(path, "litert", dims, (c, h, w), None,
                        {"ops": dict(sorted(ops.items())), "num_nodes": sum(ops.values())})


def quantize_pt2e(model: nn.Module, calibration: np.ndarray):
    """A PT2E-quantized copy of `model` for LiteRT and its quantizer: export, `prepare_pt2e` with litert-torch's
    `PT2EQuantizer` (symmetric per-channel weights, histogram-observed activations), run `calibration`
    (N, C, H, W) through it one image at a time, `convert_pt2e(fold_quantize=False)` (the converter folds)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e import move_exported_model_to_eval

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    converted = pt2e_quantize(model, calibration, quantizer, MAX_BATCH, fold_quantize=False)
    return move_exported_model_to_eval(converted), quantizer


def _interpreter(path: str | os.PathLike, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    with contextlib.redirect_stderr(io.StringIO()):
        return Interpreter(model_path=str(path), num_threads=threads or None)


class LiteRTRunner:
    """Run a .tflite with the ai-edge-litert interpreter (XNNPACK delegate): (B, C, H, W) float32 array ->
    (B, classes) float32 logits; int8 input / output tensors are (de)quantized with the file's scales.
    `threads`: the interpreter's threads (0 = its default)."""

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        self.interp = _interpreter(path, threads)
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]
        sig = [int(d) for d in self.input["shape_signature"]]
        self.input_dims = [None if d < 0 else d for d in sig]
        out_sig = [int(d) for d in self.output["shape_signature"]]
        self.out_classes = out_sig[-1] if out_sig and out_sig[-1] > 0 else None
        self._shape: tuple | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:  # resize the input (and re-plan the memory) only when the shape changed
            self.interp.resize_tensor_input(self.input["index"], list(x.shape))
            self.interp.allocate_tensors()
            self._shape = x.shape
        if self.input["dtype"] == np.int8:
            scale, zero = self.input["quantization"]
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        self.interp.set_tensor(self.input["index"], np.ascontiguousarray(x))
        self.interp.invoke()
        out = self.interp.get_tensor(self.output["index"])
        if self.output["dtype"] == np.int8:
            scale, zero = self.output["quantization"]
            return (out.astype(np.float32) - zero) * scale
        return np.array(out, dtype=np.float32, copy=True)
