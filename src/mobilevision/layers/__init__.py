"""Reusable layers: tensors in, tensors out."""
from .conv_norm_act import ConvNormAct, create_act, get_padding
from .drop_path import DropPath, drop_path, drop_path_rates
from .helpers import make_divisible
from .norms import LayerNorm2d
from .squeeze_excite import SqueezeExcite

__all__ = [
    "ConvNormAct", "create_act", "get_padding", "DropPath", "drop_path", "drop_path_rates",
    "make_divisible", "LayerNorm2d", "SqueezeExcite",
]
