"""Deployment: fuse -> profile -> export (ONNX, OpenVINO IR, ExecuTorch) -> verify on that runtime -> INT8 -> benchmark.

The functions are importable from here (`from mobilevision import deploy; deploy.fuse(model)`); the modules
have their own names (fusion, profiling, export, runtime, quantize, bench, inference) so none hides a function.
"""
from .bench import benchmark, benchmark_runtimes, paired_times, time_exported, time_onnxruntime, time_torch
from .export import (export_model, export_onnx, graph_report, ort_session, portability_problems, read_metadata,
                     verify_exported, verify_onnx)
from .fusion import count_norms, fuse
from .inference import image_files, load_classifier, load_image, predict, preprocess, read_labels, sample_photos
from .profiling import activation_memory, count_macs, count_on_meta, count_params, profile, stage_table
from .quantize import QuantizeReport, quantize_exported, quantize_onnx
from .runtime import ExecuTorchClassifier, OnnxClassifier, OpenVINOClassifier, load_exported

__all__ = [
    "benchmark", "benchmark_runtimes", "paired_times", "time_exported", "time_onnxruntime", "time_torch",
    "export_model", "export_onnx", "graph_report", "ort_session", "portability_problems", "read_metadata",
    "verify_exported", "verify_onnx",
    "count_norms", "fuse",
    "image_files", "load_classifier", "load_image", "predict", "preprocess", "read_labels", "sample_photos",
    "activation_memory", "count_macs", "count_on_meta", "count_params", "profile", "stage_table",
    "QuantizeReport", "quantize_exported", "quantize_onnx",
    "ExecuTorchClassifier", "OnnxClassifier", "OpenVINOClassifier", "load_exported",
]
