"""mobilevision: efficient vision backbones that match their papers."""
from __future__ import annotations

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    # OpenMP threads that spin while waiting collapse training on a shared machine (issue 11: 246 -> 4.5
    # images/s next to other jobs); sleeping waits degrade with the load. Read once, when torch loads OpenMP.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# the policy torch's OpenMP runs with (it read the variable when torch loaded; the engine warns if it spins)
OMP_WAIT_POLICY = _os.environ.get("OMP_WAIT_POLICY", "").upper()

from .models.checkpoint import load_checkpoint, read_config, save_pretrained
from .models.factory import create_model
from .models.hub import download_hf, download_url
from .models.features import Classifier, FeatureExtractor
from .models.registry import get_config, list_models, model_info, published_figures, register_model
from .tasks.detect import SSDLite, create_detector  # registers the detection presets
from .tasks.segment import Segmenter, create_segmenter  # registers the segmentation presets

__version__ = "0.1.0"



def __getattr__(name: str):
    if name == "deploy":  # `mobilevision.deploy.fuse(model)` without importing the deploy stack up front
        import importlib

        return importlib.import_module(".deploy", __name__)
    raise AttributeError(f"module 'mobilevision' has no attribute {name!r}")


__all__ = [
    "create_model", "list_models", "model_info", "load_checkpoint", "save_pretrained",
    "register_model", "published_figures", "create_detector", "SSDLite", "create_segmenter", "Segmenter", "Classifier", "FeatureExtractor", "__version__",
]
