"""The one channel MLP (transformer FFN, MetaFormer / ConvNeXt block MLP) and the ConvFormer / CAFormer MLP head."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .activations import create_act
from .grn import GRN


class Mlp(nn.Module):
    """fc1 -> act -> (GRN) -> dropout -> fc2 -> dropout, applied per position.

    `use_conv=True` uses 1x1 convs on (B, C, H, W); otherwise Linear layers on channels-last (..., C).
    `grn=True` inserts ConvNeXt V2's GRN on the hidden tensor (channels-last only). `act` is a name of
    `create_act` or a module class. Submodules `fc1`, `act`, `grn`, `fc2` (timm's names).
    Shapes: (..., in_features) -> (..., out_features or in_features).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        act: str | Callable[..., nn.Module] = "gelu",
        bias: bool = True,
        drop: float = 0.0,
        use_conv: bool = False,
        grn: bool = False,
    ) -> None:
        super().__init__()
        if grn and use_conv:
            raise ValueError("Mlp(grn=True) needs channels-last input: use use_conv=False")
        out_features = out_features or in_features
        layer = (lambda i, o: nn.Conv2d(i, o, 1, bias=bias)) if use_conv else (lambda i, o: nn.Linear(i, o, bias=bias))
        self.fc1 = layer(in_features, hidden_features)
        self.act = create_act(act, inplace=False)
        self.grn = GRN(hidden_features) if grn else nn.Identity()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = layer(hidden_features, out_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))  # (..., hidden)
        x = self.drop1(self.grn(x))
        return self.drop2(self.fc2(x))


class MlpHead(nn.Module):
    """ConvFormer / CAFormer classifier: Linear(C, 4C) -> SquaredReLU -> LayerNorm -> dropout -> Linear(4C, classes).

    The official code uses the LayerNorm's default eps 1e-5; timm's port uses 1e-6 (`norm_eps`).
    Shapes: (B, C) -> (B, num_classes).
    """

    def __init__(self, dim: int, num_classes: int, mlp_ratio: float = 4.0, act: str = "squared_relu",
                 norm_eps: float = 1e-5, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = create_act(act, inplace=False)
        self.norm = nn.LayerNorm(hidden, eps=norm_eps)
        self.head_drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.act(self.fc1(x)))  # (B, hidden)
        return self.fc2(self.head_drop(x))
