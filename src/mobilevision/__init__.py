"""mobilevision: efficient vision backbones that match their papers."""
from __future__ import annotations

from .models.checkpoint import load_checkpoint, read_config, save_pretrained
from .models.factory import create_model
from .models.hub import download_hf, download_url
from .models.features import Classifier, FeatureExtractor
from .models.registry import get_config, list_models, model_info, published_figures, register_model

__version__ = "0.1.0"



def __getattr__(name: str):
    if name == "deploy":  # `mobilevision.deploy.fuse(model)` without importing the deploy stack up front
        import importlib

        return importlib.import_module(".deploy", __name__)
    raise AttributeError(f"module 'mobilevision' has no attribute {name!r}")


__all__ = [
    "create_model", "list_models", "model_info", "load_checkpoint", "save_pretrained",
    "register_model", "published_figures", "Classifier", "FeatureExtractor", "__version__",
]
