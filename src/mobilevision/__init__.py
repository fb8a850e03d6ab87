"""mobilevision: efficient vision backbones that match their papers.

The public names load on first use (PEP 562), so `import mobilevision` and the CLI's quick paths (`--help`, a
cached `choose`) do not import torch; `mobilevision.create_model(...)` imports what it needs then.
"""
from __future__ import annotations

from .lazy import lazy_names

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "load_checkpoint": ".models.checkpoint", "read_config": ".models.checkpoint",
    "save_pretrained": ".models.checkpoint",
    "create_model": ".models.factory",
    "download_hf": ".models.hub", "download_url": ".models.hub",
    "Classifier": ".models.features", "FeatureExtractor": ".models.features",
    "get_config": ".models.registry", "list_models": ".models.registry", "model_info": ".models.registry",
    "published_figures": ".models.registry", "register_model": ".models.registry",
    "SSDLite": ".tasks.detect", "create_detector": ".tasks.detect",
    "Segmenter": ".tasks.segment", "create_segmenter": ".tasks.segment",
}
# subpackages reachable as attributes (`mobilevision.deploy.fuse(model)`) without importing them up front
_SUBPACKAGES = ("cli", "data", "deploy", "explain", "layers", "models", "tasks", "train")

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY, _SUBPACKAGES)

__all__ = [
    "create_model", "list_models", "model_info", "load_checkpoint", "save_pretrained",
    "register_model", "published_figures", "create_detector", "SSDLite", "create_segmenter", "Segmenter",
    "Classifier", "FeatureExtractor", "__version__",
]
