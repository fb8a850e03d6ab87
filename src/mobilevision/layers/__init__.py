"""Reusable layers, one of each: tensors in, tensors out."""
from .activations import SquaredReLU, StarReLU, create_act
from .atrous_conv import AtrousConv2d
from .attention import Attention, TransformerEncoderLayer
from .classifier import ClassifierHead
from .conv_norm_act import ConvNormAct, get_padding
from .drop_path import DropPath, drop_path, drop_path_rates
from .helpers import make_divisible
from .mlp import Mlp, MlpHead
from .norms import LayerNorm2d
from .squeeze_excite import SqueezeExcite
from .weight_init import init_weights

__all__ = [
    "AtrousConv2d", "Attention", "ClassifierHead", "ConvNormAct", "DropPath", "LayerNorm2d", "Mlp", "MlpHead",
    "SqueezeExcite", "SquaredReLU", "StarReLU", "TransformerEncoderLayer", "create_act", "drop_path", "drop_path_rates",
    "get_padding", "init_weights", "make_divisible",
]
