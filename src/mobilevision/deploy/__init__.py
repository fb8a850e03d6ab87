"""Deployment: fuse -> profile -> export (ONNX, OpenVINO IR, ExecuTorch) -> verify on that runtime -> INT8 -> benchmark.

The functions are importable from here (`from mobilevision import deploy; deploy.fuse(model)`); the modules
have their own names (fusion, profiling, export, runtime, quantize, bench, inference) so none hides a function.
The functions load on first use (PEP 562): `mobilevision.deploy.choose` (the cached `choose` path) needs no torch.
"""
from __future__ import annotations

from mobilevision.lazy import lazy_names

# public name -> the module that defines it (imported on first access)
_LAZY = {
    **dict.fromkeys(("benchmark", "benchmark_runtimes", "paired_ratio", "paired_times", "time_exported",
                     "time_onnxruntime", "time_torch"), ".bench"),
    **dict.fromkeys(("export_model", "export_onnx", "graph_report", "ort_session", "portability_problems",
                     "read_metadata", "verify_exported", "verify_onnx"), ".export"),
    **dict.fromkeys(("count_norms", "fuse"), ".fusion"),
    **dict.fromkeys(("image_files", "load_classifier", "load_image", "predict", "preprocess", "read_labels",
                     "sample_photos"), ".inference"),
    **dict.fromkeys(("activation_memory", "count_macs", "count_on_meta", "count_params", "profile", "stage_table"),
                    ".profiling"),
    **dict.fromkeys(("QuantizeReport", "quantize_exported", "quantize_onnx"), ".quantize"),
    **dict.fromkeys(("ExecuTorchClassifier", "OnnxClassifier", "OpenVINOClassifier", "load_exported"), ".runtime"),
}

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)

__all__ = list(_LAZY)
