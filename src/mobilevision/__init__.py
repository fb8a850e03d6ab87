"""mobilevision: efficient vision backbones that match their papers."""
from __future__ import annotations

from .models.checkpoint import (
    download_hf,
    download_url,
    load_checkpoint,
    read_config,
    save_pretrained,
)
from .models.factory import create_model
from .models.features import Classifier, FeatureExtractor
from .models.registry import get_config, list_models, model_info, published_figures, register_model
from .tasks.segment import Segmenter, create_segmenter  # registers the segmentation presets

__version__ = "0.1.0"

__all__ = [
    "create_model", "list_models", "model_info", "load_checkpoint", "save_pretrained",
    "register_model", "published_figures", "create_segmenter", "Segmenter", "Classifier", "FeatureExtractor", "__version__",
]
