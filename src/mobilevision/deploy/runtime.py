"""Run an exported (FP32 or INT8) ONNX graph where a model is expected: `OnnxClassifier(path)(x) -> logits`,
with the data config and labels the graph was exported with."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mobilevision.data.config import DataConfig, resolve_data_config

from .export import ort_session, read_metadata


class OnnxClassifier:
    """An onnxruntime session with a model's call signature: (B, C, H, W) float tensor -> (B, classes) logits.

    Carries `data_config` (DataConfig), `labels`, `num_classes` and `model_name` from the graph's metadata. A
    graph with a fixed batch is fed in chunks of that batch (the last one padded), so any batch works.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 0) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {self.path}")
        try:
            self.session = ort_session(self.path, threads=threads, spin=False)
            meta = read_metadata(self.path)
        except ModuleNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - onnx / onnxruntime raise their own types for bad files
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise ValueError(f"{self.path} is not a loadable ONNX model: {first}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        saved = meta.get("data_config") or {}
        dims = inp.shape  # (B, C, H, W) with ints for the fixed dims
        cfg = resolve_data_config(saved)
        fixed = [d if isinstance(d, int) else dflt for d, dflt in zip(dims[1:], cfg.input_size)]
        self.data_config: DataConfig = cfg.replace(input_size=tuple(fixed))
        self.fixed_batch = dims[0] if isinstance(dims[0], int) else None
        self.labels = list(meta["labels"]) if meta.get("labels") else None
        self.model_name = meta.get("model")
        out_dims = self.session.get_outputs()[0].shape
        n = out_dims[-1] if out_dims and isinstance(out_dims[-1], int) else meta.get("num_classes")
        self.num_classes = int(n) if n is not None else None
        self.training = False

    @property
    def default_cfg(self) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.data_config.to_dict().items()}

    def run(self, x: np.ndarray, batch: int = 64) -> np.ndarray:
        """Logits (N, classes) of an (N, C, H, W) float32 array, fed in chunks of `batch` (or the graph's)."""
        step = self.fixed_batch or batch
        outs = []
        for i in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[i:i + step], dtype=np.float32)
            n = len(chunk)
            if self.fixed_batch and n < step:  # pad a static-batch graph
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, 0)])
            outs.append(self.session.run(None, {self.input_name: chunk})[0][:n])
        return np.concatenate(outs) if outs else np.zeros((0, self.num_classes or 0), np.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.detach().float().cpu().numpy())).to(x.device)

    def eval(self) -> "OnnxClassifier":
        return self

    def to(self, *_args, **_kwargs) -> "OnnxClassifier":
        return self  # onnxruntime's CPU session; outputs follow the input's device


def is_onnx(path: str | os.PathLike | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx"
