"""INT8 static quantization of an exported graph with onnxruntime (QDQ, per-channel weights), calibrated on
real images, with the latency and accuracy change measured on a labelled set."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mobilevision.data.config import resolve_data_config
from mobilevision.data.datasets import IMAGE_EXTENSIONS, DigitsSource

from .bench import time_exported, time_onnxruntime
from .inference import load_image, preprocess
from .runtime import OnnxClassifier

logger = logging.getLogger("mobilevision.deploy")

COMPUTE_OPS = ("Conv", "MatMul", "Gemm")


def digits_arrays(cfg: Any, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """The built-in digits set as `mobilevision train --data digits` splits and evaluates it.

    `split` is "train" or "val" (the fixed stratified 80/20 split of `DigitsSource`); images are made at
    cfg's input size (cfg: a DataConfig, model or dict) and passed through its eval transform.
    Returns (N, C, H, W) float32 and (N,) int64.
    """
    cfg = resolve_data_config(cfg)
    source = DigitsSource(split, image_size=max(cfg.size))
    x = np.stack([preprocess(img, cfg).numpy() for img in source.images])
    return x, np.asarray(source.targets, dtype=np.int64)


def folder_arrays(directory: str | os.PathLike, cfg: Any, size: tuple[int, int] | None = None,
                  limit: int | None = None, labels: Sequence[str] | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Images under `directory` preprocessed with `cfg` (at `size` (H, W) if given): (N, C, H, W), labels or
    None, class folder names.

    With class subdirectories (ImageFolder layout) and `labels` (the model's class names), a folder's images
    get the index of its name in `labels`; a folder name outside them is a ValueError. Without `labels` the
    indices are the sorted folder order (as training on that folder assigns them). A flat directory gives no
    labels.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"calibration directory not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes and labels is not None:
        unknown = [c for c in classes if c not in labels]
        if unknown:
            raise ValueError(f"class folders {unknown[:5]} under {root} are not among the model's labels "
                             f"({', '.join(list(labels)[:10])}{', ...' if len(labels) > 10 else ''})")
        index = {c: list(labels).index(c) for c in classes}
    else:
        index = {c: i for i, c in enumerate(classes)}
    files: list[tuple[Path, int | None]] = []
    if classes:
        for c in classes:
            files += [(f, index[c]) for f in sorted((root / c).rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
    else:
        files = [(f, None) for f in sorted(root.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    if limit:
        step = max(1, len(files) // limit)
        files = files[::step][:limit]
    x = np.stack([preprocess(load_image(f), cfg, size).numpy() for f, _ in files])
    y = np.array([lab for _, lab in files], dtype=np.int64) if classes else None
    return x, y, classes


class ArrayCalibrationReader:
    """onnxruntime CalibrationDataReader over an (N, C, H, W) array, one sample per call."""

    def __init__(self, input_name: str, images: np.ndarray) -> None:
        self.feeds = ({input_name: images[i:i + 1]} for i in range(len(images)))

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


@dataclass
class QuantizeReport:
    """Sizes (bytes), batch-1 latencies (ms, median), top-1 accuracies (None without usable labels)."""

    fp32_path: str
    int8_path: str
    fp32_bytes: int
    int8_bytes: int
    fp32_ms: float
    int8_ms: float
    fp32_top1: float | None
    int8_top1: float | None
    top1_agreement: float
    eval_images: int
    calibration_images: int

    @property
    def latency_ratio(self) -> float:
        return self.int8_ms / self.fp32_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "latency_ratio": self.latency_ratio}


@contextlib.contextmanager
def _ort_logs_to_debug():
    """onnxruntime's quantizer logs a dozen-plus advisory warnings on the root logger (and would install a
    stderr handler there): send them to our logger at DEBUG instead, for the duration."""
    root = logging.getLogger()

    class ToDebug(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logger.debug("onnxruntime: %s", record.getMessage())

    saved = root.handlers[:], root.level
    root.handlers = [ToDebug()]
    try:
        yield
    finally:
        root.handlers, level = saved
        root.setLevel(level)


def quantize_onnx(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: str = "digits",
                  num_calibration: int = 128, threads: int = 2, per_channel: bool = True,
                  reduce_range: bool = True) -> QuantizeReport:
    """Quantize an exported FP32 graph to INT8 (static, QDQ, per-channel weights, MinMax calibration).

    `calibration` is "digits" (calibrate on the digits train split, evaluate on its val split) or a
    directory of images (calibrate and evaluate on it; accuracy with class subdirectories, matched by name
    to the labels saved in the graph, or by sorted order when the graph has none and the counts agree).
    Returns sizes, batch-1 latencies and top-1 before and after.

    `reduce_range` quantizes weights to 7 bits: x86 CPUs without VNNI saturate in the u8 x s8 multiply-add
    (onnxruntime's documented caveat); on this project's AVX2 test machine full-range per-channel weights cost
    3 points of digits top-1 and reduce_range costs none.
    """
    return _quantize(OnnxClassifier(fp32_path), out_path, calibration, num_calibration, threads,
                     per_channel=per_channel, reduce_range=reduce_range)


def _quantize(fp32, out_path: str | os.PathLike, calibration: str, num_calibration: int, threads: int,
              **options) -> QuantizeReport:
    """`quantize_onnx` / `quantize_exported` on a loaded FP32 runner (`OnnxClassifier` / `OpenVINOClassifier`):
    calibration data at the file's own input size, the runtime's quantizer, the report."""
    calib, x_eval, y_eval = calibration_data(fp32.data_config, calibration, num_calibration, fp32.labels,
                                             fp32.num_classes)
    src, out = fp32.path, Path(out_path).expanduser()
    if fp32.runtime == "onnxruntime":
        _quantize_onnx_graph(src, out, fp32.input_name, calib, **options)
        timer = time_onnxruntime
    else:
        from .openvino_ir import quantize_openvino

        out, timer = quantize_openvino(src, out, calib, **options), time_exported
    one = x_eval[:1]
    return quantize_report(src, out, fp32, type(fp32)(out), x_eval, y_eval, calib, calibration,
                           timer(src, one, threads)["median_ms"], timer(out, one, threads)["median_ms"])


def _quantize_onnx_graph(src: Path, out: Path, input_name: str, calib: np.ndarray, per_channel: bool = True,
                         reduce_range: bool = True) -> None:
    """onnxruntime static QDQ quantization of the graph at `src` into `out`, with its metadata copied."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, _ort_logs_to_debug():
        prepped = Path(tmp) / "prep.onnx"
        cwd = os.getcwd()
        try:  # shape inference + graph optimisation before quantizing (onnxruntime's recommendation)
            os.chdir(tmp)  # a failed symbolic shape inference dumps its model into the working directory
            quant_pre_process(str(src.resolve()), str(prepped), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - fall back to the raw graph if pre-processing cannot handle it
            prepped = src
        finally:
            os.chdir(cwd)

        def run(op_types: list[str] | None) -> None:
            quantize_static(
                str(prepped), str(out), ArrayCalibrationReader(input_name, calib),
                quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=op_types,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )

        try:
            run(None)
        except ValueError as err:
            # onnxruntime cannot quantize a weight that two ops share (PoolFormer's graphs have one): fall
            # back to the ops that carry the compute
            if "shared mode" not in str(err):
                raise
            run(list(COMPUTE_OPS))
    _copy_metadata(src, out)


def quantize_file(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calib: np.ndarray,
                  **options) -> Path:
    """Only the quantization step of `quantize_exported`, on given calibration images (N, C, H, W) float32:
    ONNX with onnxruntime (`options`: per_channel=, reduce_range=), OpenVINO IR with NNCF (transformer=)."""
    from .export import format_of

    src, out = Path(fp32_path).expanduser(), Path(out_path).expanduser()
    fmt = format_of(src)
    if fmt == "onnx":
        _quantize_onnx_graph(src, out, OnnxClassifier(src).input_name, calib, **options)
        return out
    if fmt == "openvino":
        from .openvino_ir import quantize_openvino

        return quantize_openvino(src, out, calib, **options)
    raise ValueError(f"a {fmt} file is quantized from the model: export_model(..., calibration=)")


def calibration_data(cfg: Any, calibration: str, num_calibration: int = 128, labels: Sequence[str] | None = None,
                     num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(calibration images, evaluation images, their labels or None), all (N, C, H, W) float32 at cfg's size.

    "digits": calibrate on `num_calibration` images of the digits train split, evaluate on its val split. A
    directory: calibrate on `num_calibration` of its images and evaluate on all of them, labelled by class
    subdirectory (matched to `labels` by name; by sorted order when there are no labels and the folder count
    equals `num_classes`)."""
    if calibration == "digits":
        pool, _ = digits_arrays(cfg, "train")
        x_eval, y_eval = digits_arrays(cfg, "val")
    else:
        x_eval, y_eval, classes = folder_arrays(calibration, cfg, labels=labels)
        if y_eval is not None and labels is None and len(classes) != num_classes:
            y_eval = None  # folder order means nothing for a graph of another class count
        pool = x_eval
    return pool[:: max(1, len(pool) // num_calibration)][:num_calibration], x_eval, y_eval


def quantize_report(src: Path, out: Path, fp32, int8, x_eval: np.ndarray, y_eval: np.ndarray | None,
                    calib: np.ndarray, calibration: str, fp32_ms: float, int8_ms: float) -> QuantizeReport:
    """The QuantizeReport of an FP32 / INT8 pair of runners (`ExportedClassifier`s) on the evaluation images."""
    from .export import file_bytes

    logits32 = fp32.run(x_eval, batch=32)
    logits8 = int8.run(x_eval, batch=32)
    n_out = logits32.shape[-1]
    usable = y_eval is not None and int(y_eval.max()) < n_out and (calibration != "digits" or n_out == 10)
    top1_32 = float((logits32.argmax(-1) == y_eval).mean()) if usable else None
    top1_8 = float((logits8.argmax(-1) == y_eval).mean()) if usable else None
    return QuantizeReport(
        fp32_path=str(src), int8_path=str(out), fp32_bytes=file_bytes(src), int8_bytes=file_bytes(out),
        fp32_ms=fp32_ms, int8_ms=int8_ms, fp32_top1=top1_32, int8_top1=top1_8,
        top1_agreement=float((logits32.argmax(-1) == logits8.argmax(-1)).mean()),
        eval_images=len(x_eval), calibration_images=len(calib),
    )


def quantize_exported(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: str = "digits",
                      num_calibration: int = 128, threads: int = 2, **options) -> QuantizeReport:
    """INT8 copy of an exported FP32 file with its runtime's own quantizer, and the same report as
    `quantize_onnx`: ONNX (.onnx) with onnxruntime's static QDQ quantizer (`options` as `quantize_onnx`'s),
    OpenVINO IR (.xml) with NNCF post-training quantization (`options`: transformer=, as `quantize_openvino`'s).
    An ExecuTorch program is quantized from the PyTorch model at export (`export_model(..., calibration=)`)."""
    from .export import format_of
    from .runtime import OpenVINOClassifier

    fmt = format_of(fp32_path)
    if fmt == "onnx":
        return quantize_onnx(fp32_path, out_path, calibration, num_calibration, threads, **options)
    if fmt in ("executorch", "tflite", "coreml"):
        raise ValueError(f"a {fmt} file is quantized from the model, not from the file: `mobilevision export NAME "
                         f"--format {fmt} --int8 --calibration ...` (coreml: no INT8)")
    return _quantize(OpenVINOClassifier(fp32_path), out_path, calibration, num_calibration, threads, **options)


def _copy_metadata(src: Path, dst: Path) -> None:
    import onnx

    meta = onnx.load(str(src), load_external_data=False).metadata_props
    proto = onnx.load(str(dst))
    del proto.metadata_props[:]
    for p in meta:
        proto.metadata_props.add(key=p.key, value=p.value)
    onnx.save(proto, str(dst))
