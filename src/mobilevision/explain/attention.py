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
    """One PNG of two panels, one column per block, drawn over `image` (H, W, 3) in [0, 1], heads averaged.
    Top: Mobile->Former, a row per token (which pixels it reads), in units of the uniform weight 1/(H*W).
    Bottom: Mobile<-Former, a row per token (how much each pixel reads it), 0..1. A colour bar per panel."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from .plotting import blend, mosaic, save_figure

    cols = [b for b in blocks if b.former_to_mobile is not None]
    t = cols[0].mobile_to_former.shape[2]
    m2f = [b.mobile_to_former[index].mean(0).cpu().numpy() for b in cols]  # (T, H, W) each
    m2f = [a * a.shape[1] * a.shape[2] for a in m2f]  # 1 = uniform attention
    f2m = [b.former_to_mobile[index].mean(0).cpu().numpy().transpose(2, 0, 1) for b in cols]  # (T, H, W) each
    vmax = max(float(np.percentile(np.concatenate([a.ravel() for a in m2f]), 99.5)), 1.0)
    up = max(1, -(-96 // image.shape[0]))  # >= 96 px (nearest upsampling): each cell shows the maps' pixels crisply
    img = image.repeat(up, axis=0).repeat(up, axis=1)
    # (title, colour map, colour bar top, its label, maps, which map of the block they cover)
    panels = [("Mobile→Former: which pixels each token reads", "inferno", vmax, "weight × H·W\n(1 = uniform)",
               m2f, "in"),
              ("Mobile←Former: how much each pixel reads each token", "viridis", 1.0, "weight (softmax\nover tokens)",
               f2m, "out")]
    cell, step = img.shape[0], img.shape[0] + 2
    fig = Figure(figsize=(1.6 + 1.15 * len(cols), 1.0 + 2 * (0.45 + 1.15 * t)), layout="constrained")
    for ax, (name, cmap, hi, bar_label, maps, side) in zip(fig.subplots(2, 1), panels):
        ax.imshow(mosaic([[blend(img, m[k], 0.0, hi, cmap) for m in maps] for k in range(t)]), interpolation="nearest")
        ax.set_xticks([j * step + cell / 2 for j in range(len(cols))],
                      [f"{b.name}\n{side} {m.shape[1]}x{m.shape[2]}" for b, m in zip(cols, maps)], fontsize=7)
        ax.xaxis.tick_top()
        ax.set_yticks([k * step + cell / 2 for k in range(t)], [f"token {k}" for k in range(t)], fontsize=8)
        ax.tick_params(length=0)
        ax.set_title(name, fontsize=9, loc="left")
        bar = fig.colorbar(ScalarMappable(Normalize(0.0, hi), cmap), ax=ax, fraction=0.03, pad=0.01)
        bar.set_label(bar_label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)
