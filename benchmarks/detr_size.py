"""Parameters and MACs of Mobile-Former DETR (mobileformer_508m backbone) against a DETR-R50 reference, one run.

    python benchmarks/detr_size.py [--size 800 1333] [--backbone mobileformer_508m] [--num-classes 91] \
        [--head KEY=VALUE ...]   (create_detector overrides of the head, e.g. mobile_expansion=4)

Both models are built on the meta device (no memory, no weights) and counted with torch.utils.flop_counter
(MACs = FLOPs / 2) on one image at --size. The DETR-R50 reference is torchvision's resnet50 (to C5) + a 1x1
projection to 256 + torch.nn.Transformer (6 encoder + 6 decoder layers, 256-d, 8 heads, FFN 2048) + 100 query
embeddings + DETR's class Linear and 3-layer box MLP. Its sine position embedding is added once to the encoder
input (DETR adds it to queries and keys in every layer: element-wise adds, no MACs to speak of), so its count is
DETR's up to those adds. The paper's ratios (Mobile-Former DETR / DETR): 0.64 params, 0.48 FLOPs.
"""
from __future__ import annotations

import argparse

import torch
import torchvision
from torch import nn

import mobilevision
from mobilevision.deploy.profiling import count_on_meta
from mobilevision.tasks.detect.detr import BoxMLP, sine_position_embedding

PAPER = {"params": 0.64, "flops": 0.48}


class DETRR50(nn.Module):
    """DETR-R50's parts for counting: images (B, 3, H, W) -> (logits (B, Q, K + 1), boxes (B, Q, 4))."""

    def __init__(self, num_classes: int = 91, num_queries: int = 100, dim: int = 256) -> None:
        super().__init__()
        r50 = torchvision.models.resnet50(weights=None)
        self.body = nn.Sequential(*list(r50.children())[:-2])  # to C5 (B, 2048, H/32, W/32)
        self.input_proj = nn.Conv2d(2048, dim, 1)
        self.transformer = nn.Transformer(dim, 8, 6, 6, 2048, dropout=0.1, batch_first=True)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.class_embed = nn.Linear(dim, num_classes + 1)
        self.bbox_embed = BoxMLP(dim, 3)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.input_proj(self.body(images))  # (B, 256, h, w)
        b, c, h, w = f.shape
        src = (f + sine_position_embedding(h, w, c, device=f.device, dtype=f.dtype)).flatten(2).transpose(1, 2)
        tgt = self.query_embed.weight.repeat(b, 1, 1)  # a copy: the counter's module hooks need a grad_fn
        hs = self.transformer(src, tgt)  # (B, Q, 256)
        return self.class_embed(hs), self.bbox_embed(hs).sigmoid()


def measure(size: tuple[int, int], backbone: str, num_classes: int, **head: object) -> list[dict]:
    shape = (3, *size)
    rows = []
    for name, build in (
            ("DETR-R50 (torchvision resnet50 + nn.Transformer)", lambda: DETRR50(num_classes - 1)),
            (f"mobileformer_detr on {backbone}",
             lambda: mobilevision.create_detector("mobileformer_detr", backbone=backbone, num_classes=num_classes,
                                                  image_size=size, **head))):
        params, macs = count_on_meta(build, shape)
        rows.append({"model": name, "params_m": params / 1e6, "gmacs": macs / 1e9})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    p.add_argument("--backbone", default="mobileformer_508m")
    p.add_argument("--num-classes", type=int, default=91, help="counting no-object (COCO: 91)")
    p.add_argument("--head", nargs="*", default=[], metavar="KEY=VALUE", help="head overrides (values parsed as YAML)")
    args = p.parse_args()
    import yaml

    head = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.head)}
    ref, ours = measure(tuple(args.size), args.backbone, args.num_classes, **head)
    if head:
        ours["model"] += " " + ",".join(f"{k}={v}" for k, v in head.items())
    for r in (ref, ours):
        print(f"{r['model']:<52} {r['params_m']:7.2f} M params {r['gmacs']:8.2f} GMACs at {args.size[0]}x{args.size[1]}")
    print(f"ratio params {ours['params_m'] / ref['params_m']:.2f} (paper {PAPER['params']}), "
          f"FLOPs {ours['gmacs'] / ref['gmacs']:.2f} (paper {PAPER['flops']})")


if __name__ == "__main__":
    main()
