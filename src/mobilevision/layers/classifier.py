"""The one configurable classifier head: [norm over the map] -> global average pool -> [norm] -> dropout -> fc."""
from __future__ import annotations

import torch
from torch import nn

from .mlp import MlpHead
from .helpers import check_choice
from .weight_init import init_weights

FC_KINDS = ("linear", "mlp")


class ClassifierHead(nn.Module):
    """Pooling head of ConvNeXt (pool -> LayerNorm -> fc), PoolFormer v1 (GroupNorm over the whole map, then
    pool -> fc), the MetaFormer baselines (pool -> LayerNorm -> Linear or ConvFormer's MlpHead) and MobileViT
    (pool -> fc).

    Args: `norm` a module applied to the (B, C, H, W) map when `norm_first`, else to the pooled (B, C), or None;
    `fc` 'linear' or 'mlp' (`MlpHead`, its LayerNorm eps `mlp_norm_eps`); `init` the `init_weights` scheme a
    new `fc` gets (None: PyTorch's default). Submodules `norm`, `drop`, `fc` (timm's names); `fc` is Identity
    when num_classes == 0. Shapes: (B, C, H, W) -> (B, num_classes), or (B, C) with pre_logits=True.
    """

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.0, norm: nn.Module | None = None,
                 norm_first: bool = False, fc: str = "linear", mlp_norm_eps: float = 1e-5,
                 init: str | None = None) -> None:
        super().__init__()
        check_choice(fc, FC_KINDS, "classifier fc")
        self.in_chs, self.fc_kind, self.mlp_norm_eps = in_chs, fc, mlp_norm_eps
        self.norm_first, self.init = norm_first, init
        self.norm = norm if norm is not None else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = self.make_fc(num_classes, drop_rate)

    def make_fc(self, num_classes: int, drop_rate: float = 0.0) -> nn.Module:
        """A new classifier layer for `num_classes` (Identity for 0)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = pooled features), got {num_classes}")
        if num_classes == 0:
            return nn.Identity()
        if self.fc_kind == "mlp":
            return MlpHead(self.in_chs, num_classes, norm_eps=self.mlp_norm_eps, drop=drop_rate)
        return nn.Linear(self.in_chs, num_classes)

    def reset(self, num_classes: int) -> None:
        """Replace `fc` by a fresh one for `num_classes`, initialised by `init`, on the head's device."""
        fc = self.make_fc(num_classes)
        if self.init is not None:
            init_weights(fc, self.init)
        param = next(self.parameters(), None)
        self.fc = fc if param is None else fc.to(param.device)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.norm_first:
            x = self.norm(x).mean((2, 3))  # (B, C)
        else:
            x = self.norm(x.mean((2, 3)))  # (B, C)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)
