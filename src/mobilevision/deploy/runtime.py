"""Run an exported (FP32 or INT8) model where a model is expected: `OnnxClassifier(path)(x) -> logits` for ONNX on
onnxruntime, `OpenVINOClassifier` (.xml, OpenVINO's CPU plugin), `ExecuTorchClassifier` (.pte, ExecuTorch with
XNNPACK) and `LiteRTClassifier` (.tflite, the ai-edge-litert interpreter), each with the data config and labels
the file was exported with; `load_exported(path)` picks by suffix."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mobilevision.data.config import DataConfig, resolve_data_config
from mobilevision.models.features import CarriesDataConfig

from .export import DIMS, _first_line, format_of, ort_session, read_metadata


class ExportedClassifier(CarriesDataConfig):
    """An exported model with a model's call signature: (B, C, H, W) float tensor -> (B, classes) logits.

    Carries `data_config` (DataConfig; `default_cfg` its dict view), `labels`, `num_classes` and `model_name`
    from the file's metadata. A file with a fixed batch is fed in chunks of that batch (the last one padded), one
    with a bounded batch in chunks of at most that bound, so any batch works. Subclasses set `runtime` and
    `runner` (a callable on (B, C, H, W) float32 arrays) or override `_run(chunk)`.
    """

    runtime = "?"
    max_batch: int | None = None

    def _init_meta(self, meta: dict, dims, out_classes) -> None:
        saved = meta.get("data_config") or {}
        cfg = resolve_data_config(saved)
        fixed = [d if isinstance(d, int) else dflt for d, dflt in zip(dims[1:], cfg.input_size)]
        self.data_config: DataConfig = cfg.replace(input_size=tuple(fixed))
        self.fixed_batch = dims[0] if isinstance(dims[0], int) else None
        self.labels = list(meta["labels"]) if meta.get("labels") else None
        self.model_name = meta.get("model")
        self.precision = meta.get("precision", "fp32")
        n = out_classes if isinstance(out_classes, int) else meta.get("num_classes")
        self.num_classes = int(n) if n is not None else None
        self.training = False

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        return self.runner(chunk)  # the runtimes wrapped by a runner object (ONNX overrides)

    def _open_runner(self, path: str | os.PathLike, what: str, make, keep: tuple = (ModuleNotFoundError,)) -> dict:
        """`self.runner = make(checked path)` and the file's metadata (returned); a file the runtime refuses is a
        one-line ValueError naming `what` (errors of the `keep` types pass as they are)."""
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"{what} file not found: {self.path}")
        try:
            self.runner = make(self.path)
            return read_metadata(self.path)
        except keep:
            raise
        except Exception as err:  # noqa: BLE001 - each runtime raises its own types for bad files
            raise ValueError(f"{self.path} is not a loadable {what}: {_first_line(err, 200)}") from None

    def run(self, x: np.ndarray, batch: int = 64) -> np.ndarray:
        """Logits (N, classes) of an (N, C, H, W) float32 array, fed in chunks of `batch` (or the file's)."""
        step = self.fixed_batch or min(batch, self.max_batch or batch)
        outs = []
        for i in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[i:i + step], dtype=np.float32)
            n = len(chunk)
            if self.fixed_batch and n < step:  # pad a static-batch graph
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, 0)])
            outs.append(self._run(chunk)[:n])
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes or 0), np.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().float().cpu().numpy())).to(x.device)

    def eval(self) -> "ExportedClassifier":
        return self

    def to(self, *_args, **_kwargs) -> "ExportedClassifier":
        return self  # a CPU runtime; outputs follow the input's device


class OnnxClassifier(ExportedClassifier):
    """An onnxruntime CPU session (`threads` intra-op threads, 0 = ORT default) as an `ExportedClassifier`."""

    runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        meta = self._open_runner(path, "ONNX model", lambda p: ort_session(p, threads=threads, spin=False))
        self.session = self.runner
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        out_dims = self.session.get_outputs()[0].shape
        self._init_meta(meta, inp.shape, out_dims[-1] if out_dims else None)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: chunk})[0]


class OpenVINOClassifier(ExportedClassifier):
    """An OpenVINO IR (.xml + .bin) compiled for the CPU plugin at `precision` ("fp32" unless asked: the plugin's
    own default is bf16 on AMX / AVX-512 BF16 CPUs) with `threads` threads (0 = OpenVINO's default)."""

    runtime = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int = 0, precision: str = "fp32") -> None:
        from .openvino_ir import OpenVINORunner

        meta = self._open_runner(path, "OpenVINO IR", lambda p: OpenVINORunner(p, threads, precision),
                                 keep=(ModuleNotFoundError, ValueError))
        self._init_meta(meta, self.runner.input_dims, self.runner.out_classes)
        # the compute precision of the float parts: an INT8 IR's float ops follow the hint too
        self.precision = meta.get("precision", "fp32") if precision == "fp32" else precision


class ExecuTorchClassifier(ExportedClassifier):
    """An ExecuTorch program (.pte, XNNPACK delegate) on ExecuTorch's Python runtime, with its sidecar metadata
    (`<file>.pte.json`); `threads` resets XNNPACK's process-wide thread pool (0 leaves it)."""

    runtime = "executorch"

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        from .executorch_pte import ExecuTorchRunner

        meta = self._open_runner(path, "ExecuTorch program", lambda p: ExecuTorchRunner(p, threads))
        dynamic = meta.get("dynamic_dims", ["batch"])
        bound = self.runner.upper_bound
        dims = [None] + [None if name in dynamic else int(v) for name, v in zip(DIMS[1:], bound[1:])]
        self.max_batch = int(bound[0])
        self._init_meta(meta, dims, self.runner.out_classes)


class LiteRTClassifier(ExportedClassifier):
    """A LiteRT model (.tflite) on the ai-edge-litert interpreter (XNNPACK delegate) with its sidecar metadata
    (`<file>.tflite.json`); `threads` interpreter threads (0 = its default). An INT8 file's int8 input / output are
    (de)quantized inside, so it takes and gives float32 like the FP32 one."""

    runtime = "litert"

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        from .litert_tflite import LiteRTRunner

        meta = self._open_runner(path, "LiteRT model", lambda p: LiteRTRunner(p, threads))
        dims = self.runner.input_dims
        if dims[0] is None:
            self.max_batch = int(meta.get("max_batch") or 64)
        self._init_meta(meta, dims, self.runner.out_classes)


RUNTIME_OF_FORMAT = {"onnx": OnnxClassifier, "openvino": OpenVINOClassifier, "executorch": ExecuTorchClassifier,
                     "tflite": LiteRTClassifier}


def load_exported(path: str | os.PathLike, threads: int = 0, **kwargs) -> ExportedClassifier:
    """The runtime for an exported file by its suffix (.onnx, .xml, .pte, .tflite); `kwargs` go to that runtime's
    class (precision= for OpenVINO). A Core ML package (.mlpackage) runs only on macOS: ValueError here."""
    fmt = format_of(path)
    if fmt not in RUNTIME_OF_FORMAT:
        raise ValueError(f"{path}: Core ML models run only on macOS (coremltools' predict); on Linux the package is "
                         f"checked at export (op set, ranks, fp16 ranges), not run")
    return RUNTIME_OF_FORMAT[fmt](path, threads=threads, **kwargs)


def is_onnx(path: str | os.PathLike | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx"

