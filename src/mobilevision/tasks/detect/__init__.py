"""Detection: SSDLite on any backbone (`create_detector`), Mobile-Former DETR, their registered presets, COCO mAP
and the task."""
from .ssdlite import SSDLite, build_ssdlite, create_detector
from .detr import MobileFormerDETR
from . import presets  # noqa: F401  (registers the ssdlite* and mobileformer_detr_* models)

__all__ = ["SSDLite", "MobileFormerDETR", "build_ssdlite", "create_detector"]
