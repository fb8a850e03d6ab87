"""Data: checked image sources, transform presets, the multi-scale sampler and batch mixing."""
from .datasets import (CheckedImageFolder, DigitsSource, EvalView, SeededView, TrainView, load_image, open_datasets,
                       open_split, to_rgb)
from .mixing import build_mixing
from .samplers import DEFAULT_SCALES, VariableBatchSampler
from .transforms import eval_transform, train_transform

__all__ = ["CheckedImageFolder", "DigitsSource", "EvalView", "SeededView", "TrainView", "load_image", "open_datasets",
           "open_split", "to_rgb", "build_mixing", "DEFAULT_SCALES", "VariableBatchSampler",
           "eval_transform", "train_transform"]
