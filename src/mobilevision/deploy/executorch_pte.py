"""ExecuTorch export with the XNNPACK delegate (`.pte`), ExecuTorch's Python runtime, and INT8 with the PT2E flow
(`XNNPACKQuantizer`: symmetric per-channel 8-bit weights, 8-bit activations).

A `.pte` holds no free-form metadata, so the mobilevision metadata (data config, labels) is a sidecar JSON next to
it: `model.pte` -> `model.pte.json` (`export.read_metadata` reads it).
"""
from __future__ import annotations

import collections
import os

import numpy as np
import torch
from torch import nn

from .export import (ExportResult, _quiet_export, export_metadata, prepare_export, pt2e_quantize, torch_export,
                     traced_dynamic_dims, write_sidecar)

# ExecuTorch plans the memory of every tensor outside the delegate for the largest shape the program allows,
# so the dynamic dims get modest upper bounds: a batch of 16 and twice the export size (at least 256).
MAX_BATCH = 16


def export_executorch(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int, int] | None = None,
                      dynamic: bool = False, fuse_first: bool = True, metadata: dict | None = None,
                      calibration: np.ndarray | None = None) -> ExportResult:
    """Lower `model` (fused first unless `fuse_first=False`) to an ExecuTorch program with the XNNPACK delegate.

    `torch.export` -> `to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])` -> `.to_executorch()`.
    The batch is dynamic up to `MAX_BATCH`; with `dynamic`, H / W are too (up to twice the export size, at least
    256) where the model allows. With `calibration` ((N, C, H, W) float32 at the export size) the model is
    quantized first with PT2E and `XNNPACKQuantizer` (INT8; H / W then stay at the export size). The result's
    `graph` counts the XNNPACK delegate calls and the ops left outside it (run in ExecuTorch's portable kernels:
    slow).
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model, cfg, path, _ = prepare_export(model, path, input_size, fuse_first, ".pte", "ExecuTorch program")
    c, h, w = cfg.input_size
    traced = model  # the fused model keeps the name, classes and labels the metadata records
    if calibration is not None:
        traced = quantize_pt2e(model, calibration)
        dynamic = False  # the quantized graph is traced at the calibration size; the batch stays dynamic
    program = torch_export(traced, c, h, w, dynamic, max_batch=MAX_BATCH, max_side=max(256, 2 * max(h, w)))
    edge = _quiet_export(to_edge_transform_and_lower, program, partitioner=[XnnpackPartitioner()])
    graph = _delegation_report(edge.exported_program().graph)
    path.write_bytes(_quiet_export(edge.to_executorch).buffer)
    dims = traced_dynamic_dims(program)
    write_sidecar(path, export_metadata(model, cfg, {"exporter": "torch.export + XNNPACK", "max_batch": MAX_BATCH,
                                                     "precision": "int8" if calibration is not None else "fp32",
                                                     "dynamic_dims": dims, **(metadata or {})}))
    return ExportResult(path, "executorch", dims, (c, h, w), None, graph)


def _delegation_report(graph) -> dict:
    calls, left = 0, collections.Counter()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if name == "executorch_call_delegate":
            calls += 1
        elif name != "getitem":
            left[name] += 1
    return {"delegate_calls": calls, "ops_outside_delegate": dict(sorted(left.items())),
            "num_nodes": calls + sum(left.values())}


def quantize_pt2e(model: nn.Module, calibration: np.ndarray) -> nn.Module:
    """A PT2E-quantized copy of `model` for XNNPACK: export for training, `prepare_pt2e` with
    `XNNPACKQuantizer` (symmetric per-channel weights), run `calibration` (N, C, H, W) through it one image at a
    time, `convert_pt2e`. The result is a GraphModule at the calibration size (batch any)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    return pt2e_quantize(model, calibration, quantizer, MAX_BATCH)


class ExecuTorchRunner:
    """Run a .pte with ExecuTorch's Python runtime: (B, C, H, W) float32 array -> (B, classes) logits.

    `threads` resets the process-wide XNNPACK thread pool (ExecuTorch's `_unsafe_reset_threadpool`; 0 leaves it
    as it is: one thread per core)."""

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        if threads and portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)
        self.program = Runtime.get().load_program(str(path))
        self.method = self.program.load_method("forward")
        meta = self.method.metadata
        self.upper_bound = list(meta.input_tensor_meta(0).sizes())  # which dims are fixed is in the sidecar
        self.out_classes = list(meta.output_tensor_meta(0).sizes())[-1]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.method.execute([torch.from_numpy(x)])[0].numpy().copy()
