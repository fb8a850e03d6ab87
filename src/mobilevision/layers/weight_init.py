"""The one weight-init function: the schemes of the papers' reference code, by name."""
from __future__ import annotations

import math
from typing import Callable

from torch import nn

from .helpers import check_choice


def _trunc_normal(w) -> None:
    nn.init.trunc_normal_(w, std=0.02)


# scheme -> (conv weight rule, Linear weight rule, BatchNorm2d to (1, 0)); biases of both start at zero.
_Rule = Callable[..., None]
INIT_SCHEMES: dict[str, tuple[_Rule, _Rule, bool]] = {
    # ConvNeXt, MetaFormer (and timm's ports)
    "trunc_normal": (lambda m: _trunc_normal(m.weight), lambda m: _trunc_normal(m.weight), False),
    # TF MobileNet / EfficientNet: conv He-normal on fan-out per group, Linear uniform on fan-out
    "tf_mobilenet": (
        lambda m: nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                                                                  // m.groups))),
        lambda m: nn.init.uniform_(m.weight, -1.0 / math.sqrt(m.weight.shape[0]), 1.0 / math.sqrt(m.weight.shape[0])),
        True),
    # apple/ml-cvnets (MobileViT)
    "cvnets": (lambda m: nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu"),
               lambda m: _trunc_normal(m.weight), False),
    # AAboys/MobileFormer: conv N(0, 2 / (k * k * C_out)) with groups ignored, Linear N(0, 0.01)
    "mobile_former": (
        lambda m: nn.init.normal_(m.weight, 0.0, (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5),
        lambda m: nn.init.normal_(m.weight, 0.0, 0.01), False),
}


def init_weights(module: nn.Module, scheme: str = "trunc_normal") -> None:
    """Initialise the Conv2d / Linear (and, for 'tf_mobilenet', BatchNorm2d) submodules of `module` in
    `module.modules()` order by `scheme`: 'trunc_normal' | 'tf_mobilenet' | 'cvnets' | 'mobile_former'."""
    check_choice(scheme, INIT_SCHEMES, "init scheme")
    conv_rule, linear_rule, init_bn = INIT_SCHEMES[scheme]
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            (conv_rule if isinstance(m, nn.Conv2d) else linear_rule)(m)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif init_bn and isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
