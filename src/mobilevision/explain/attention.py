"""Mobile-Former's two cross-attentions, captured with forward hooks (the model's own forward, unchanged).

- Mobile->Former (`MobileToFormer`): each global token reads a weighted average of the map's pixels; its
  weights, softmax over the H*W pixels of the block's *input* map, are what is captured per token.
- Mobile<-Former (`FormerToMobile`): each pixel of the block's *output* map reads a weighted average of the
  tokens; softmax over the T tokens.

The hooks exist only inside `capture_mobile_former_attention`, so a normal forward pays nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mobilevision.models.mobile_former import FormerToMobile, MobileFormerBlock, MobileToFormer


@dataclass
class BlockAttention:
    """One Mobile-Former block's attention weights, for a batch of B images.

    `mobile_to_former` (B, heads, T, H_in, W_in): token t's weights over the input map's pixels, summing to 1
    over (H_in, W_in). `former_to_mobile` (B, heads, H_out, W_out, T): each output pixel's weights over the T
    tokens, summing to 1 over T (None for the final Mobile->Former, which has no Mobile<-Former).
    """

    name: str  # module name in the model, e.g. "blocks.3"
    mobile_to_former: torch.Tensor
    former_to_mobile: torch.Tensor | None


def mobile_former_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Mobile-Former block, then the final Mobile->Former bridge(s) outside a block,
    in forward order. ValueError when the model has none (e.g. a CNN)."""
    found: list[tuple[str, nn.Module]] = []
    inside: set[int] = set()
    for name, mod in model.named_modules():
        if isinstance(mod, MobileFormerBlock):
            found.append((name, mod))
            inside.update(id(m) for m in mod.modules())
    tail = [(n, m) for n, m in model.named_modules() if isinstance(m, MobileToFormer) and id(m) not in inside]
    if not found:
        raise ValueError(f"{type(model).__name__} has no Mobile-Former blocks, so no Mobile->Former / "
                         "Mobile<-Former attention to show: give a mobileformer_* model")
    return found + tail


@torch.no_grad()
def capture_mobile_former_attention(model: nn.Module, x: torch.Tensor) -> tuple[list[BlockAttention], torch.Tensor]:
    """Run `model(x)` once (x (B, C, H, W), preprocessed) and return every block's attention weights (in forward
    order, the final Mobile->Former last) and the model's output, which the hooks leave untouched."""
    modules = mobile_former_modules(model)
    m2f: dict[str, torch.Tensor] = {}
    f2m: dict[str, torch.Tensor] = {}
    handles = []

    def on_m2f(key: str):
        def hook(mod: MobileToFormer, inputs, output) -> None:
            feat, tokens = inputs[0], inputs[1]  # (B, C, H, W), (B, T, d)
            logits = output[1]  # (B, heads, T, HW): the block softmaxes exactly these over the pixels
            b, _, h, w = feat.shape
            m2f[key] = logits.float().softmax(dim=-1).reshape(b, mod.num_heads, tokens.shape[1], h, w)
        return hook

    def on_f2m(key: str):
        def hook(mod: FormerToMobile, inputs, output) -> None:
            feat, tokens = inputs[0], inputs[1]
            b, _, h, w = feat.shape
            attn = mod.attention(feat.float(), tokens.float())  # (B, heads, HW, T)
            f2m[key] = attn.reshape(b, mod.num_heads, h, w, tokens.shape[1])
        return hook

    for name, mod in modules:
        if isinstance(mod, MobileFormerBlock):
            handles.append(mod.mobile_to_former.register_forward_hook(on_m2f(name)))
            handles.append(mod.former_to_mobile.register_forward_hook(on_f2m(name)))
        else:
            handles.append(mod.register_forward_hook(on_m2f(name)))
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return [BlockAttention(n, m2f[n], f2m.get(n)) for n, _ in modules if n in m2f], out


def attention_arrays(blocks: list[BlockAttention], index: int = 0) -> dict[str, np.ndarray]:
    """The raw maps of image `index` as NumPy arrays for `np.savez`: `m2f_<name>` (heads, T, H_in, W_in) and
    `f2m_<name>` (heads, H_out, W_out, T), with dots in the module name replaced by underscores."""
    out: dict[str, np.ndarray] = {}
    for blk in blocks:
        key = blk.name.replace(".", "_")
        out[f"m2f_{key}"] = blk.mobile_to_former[index].cpu().numpy()
        if blk.former_to_mobile is not None:
            out[f"f2m_{key}"] = blk.former_to_mobile[index].cpu().numpy()
    return out


def plot_attention(blocks: list[BlockAttention], image: np.ndarray, path, title: str = "", index: int = 0) -> None:
    """One PNG: for each token a row of Mobile->Former maps (which pixels the token reads) and a row of
    Mobile<-Former maps (how much each pixel reads that token), one column per block, drawn over `image`
    (H, W, 3) in [0, 1], heads averaged. Shared colour bars: M->F in units of the uniform weight 1/(H*W)."""
    from .plotting import new_figure, overlay, save_figure

    cols = [b for b in blocks if b.former_to_mobile is not None]
    t = cols[0].mobile_to_former.shape[2]
    m2f = [b.mobile_to_former[index].mean(0).cpu().numpy() for b in cols]  # (T, H, W) each
    m2f = [a * a.shape[1] * a.shape[2] for a in m2f]  # 1 = uniform attention
    f2m = [b.former_to_mobile[index].mean(0).cpu().numpy() for b in cols]  # (H, W, T) each
    vmax = float(np.percentile(np.concatenate([a.ravel() for a in m2f]), 99.5))
    fig, axes = new_figure(2 * t, len(cols), cell=1.25, title=title)
    im_a = im_b = None
    for j, blk in enumerate(cols):
        h_in, w_in = m2f[j].shape[1:]
        h_out, w_out = f2m[j].shape[:2]
        for k in range(t):
            ax_a, ax_b = axes[k][j], axes[t + k][j]
            im_a = overlay(ax_a, image, m2f[j][k], vmin=0.0, vmax=max(vmax, 1.0), cmap="inferno")
            im_b = overlay(ax_b, image, f2m[j][..., k], vmin=0.0, vmax=1.0, cmap="viridis")
            if j == 0:
                ax_a.set_ylabel(f"M→F\ntoken {k}", fontsize=8)
                ax_b.set_ylabel(f"M←F\ntoken {k}", fontsize=8)
        axes[0][j].set_title(f"{blk.name}\nin {h_in}x{w_in}", fontsize=7)
        axes[t][j].set_title(f"out {h_out}x{w_out}", fontsize=7)
    fig.colorbar(im_a, ax=[a for row in axes[:t] for a in row], fraction=0.025, pad=0.01,
                 label="M→F weight × H·W\n(1 = uniform)")
    fig.colorbar(im_b, ax=[a for row in axes[t:] for a in row], fraction=0.025, pad=0.01,
                 label="M←F weight\n(pixel reads token)")
    save_figure(fig, path)
