"""Detection: SSDLite on any backbone (`create_detector`), its registered presets, COCO mAP and the task."""
from .ssdlite import SSDLite, build_ssdlite, create_detector
from . import presets  # noqa: F401  (registers the ssdlite* models)

__all__ = ["SSDLite", "build_ssdlite", "create_detector"]
