"""Semantic segmentation: DeepLabv3, LR-ASPP and Semantic FPN heads on any registered backbone.

Importing this package registers the presets (`deeplabv3_mobilenetv3_large_100`, ...).
"""
from .model import HEADS, Segmenter, create_segmenter
from . import presets as _presets  # noqa: F401  (registers the presets)

__all__ = ["HEADS", "Segmenter", "create_segmenter"]
