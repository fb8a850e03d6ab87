"""FCMAE: fully convolutional masked autoencoder pre-training for ConvNeXt V2 (Woo et al., CVPR 2023).

The official PyTorch code runs the encoder as sparse convolutions (MinkowskiEngine). Here the sparse encoder is
emulated densely, as in the authors' JAX code: the features are zeroed at masked positions before and after every
depthwise conv, after the stem and after every downsampling layer, and GRN statistics are taken over the visible
positions of each sample. LayerNorm, the 1x1 layers and the 2x2/s2 downsampling convs act per position (or per
aligned 2x2 block), and the 32-px mask is aligned with every stride <= 32, so visible outputs never see masked
pixels. With no mask the encoder is exactly `ConvNeXt.forward_features`.

Differences from the official PyTorch code, on purpose: GRN statistics are per sample (the JAX code, which
trained the released weights, does this; MinkowskiGRN pools the whole batch, CNX2 issue #86).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilevision.layers.weight_init import init_weights
from mobilevision.models.convnext import ConvNeXt, ConvNeXtBlock

from ..data import EvalView, TrainView, open_split
from ..data.config import create_transform, resolve_data_config
from ..data.datasets import CheckedImageFolder
from ..models.checkpoint import atomic_write_bytes, save_pretrained
from ..train.distributed import all_reduce_sum
from .base import Task, TaskData

PATCH = 32  # masking granularity: the stride of the last stage


def random_mask(batch: int, grid: tuple[int, int], ratio: float, *, device: torch.device | str | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random mask over a (h, w) patch grid: (B, h*w) float, 1 = masked, 0 = visible.

    As the official code: `int(L * (1 - ratio))` patches are kept, chosen by sorting uniform noise drawn from
    torch's generator (the global one unless `generator` is given), so a seed reproduces the masks.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    length = grid[0] * grid[1]
    keep = int(length * (1 - ratio))
    noise = torch.rand(batch, length, generator=generator, device=device if generator is None else generator.device)
    order = noise.argsort(dim=1)  # (B, L): patches in order of increasing noise; the first `keep` stay visible
    mask = torch.ones(batch, length, device=noise.device)
    mask.scatter_(1, order[:, :keep], 0.0)
    return mask.to(device) if device is not None else mask


def upsample_mask(mask: torch.Tensor, grid: tuple[int, int], scale: int) -> torch.Tensor:
    """(B, h*w) patch mask -> (B, 1, h*scale, w*scale) map at a finer stage (nearest / repeat)."""
    m = mask.reshape(-1, 1, grid[0], grid[1])
    return m.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)


def _masked_block(block: ConvNeXtBlock, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A ConvNeXt (V2) block as a sparse conv would run it. x (B, C, H, W), keep (B, 1, H, W) 1 = visible."""
    x = x * keep
    y = block.conv_dw(x) * keep  # masked positions may not leak into the next block's dwconv
    y = block.norm(y.permute(0, 2, 3, 1))  # (B, H, W, C)
    mlp, keep_cl = block.mlp, keep.permute(0, 2, 3, 1)  # (B, H, W, 1)
    h = mlp.act(mlp.fc1(y))  # (B, H, W, 4C)
    if not isinstance(mlp.grn, nn.Identity):
        # zero the masked positions so that GRN's per-channel L2 norm runs over visible positions only
        h = mlp.grn(h * keep_cl)
    h = mlp.drop2(mlp.fc2(mlp.drop1(h)))
    if block.gamma is not None:
        h = h * block.gamma
    return x + block.drop_path(h.permute(0, 3, 1, 2))  # (B, C, H, W)


def masked_forward_features(encoder: ConvNeXt, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Encoder features with masked 32x32 patches removed, densely. x (B, 3, H, W), mask (B, H/32 * W/32)
    with 1 = masked (None = nothing masked) -> (B, C, H/32, W/32), zero at masked positions."""
    _check_size(x)
    grid = (x.shape[2] // PATCH, x.shape[3] // PATCH)
    x = encoder.stem(x)  # (B, C0, H/4, W/4)
    if mask is None:
        mask = torch.zeros(x.shape[0], grid[0] * grid[1], device=x.device)
    for i, stage in enumerate(encoder.stages):
        x = stage.downsample(x)
        keep = 1.0 - upsample_mask(mask, grid, 2 ** (len(encoder.stages) - 1 - i)).to(x.dtype)  # (B, 1, h, w)
        x = x * keep
        for block in stage.blocks:
            x = _masked_block(block, x, keep)
    return x * keep


def _check_size(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[2] % PATCH or x.shape[3] % PATCH or x.shape[2] < PATCH or x.shape[3] < PATCH:
        raise ValueError(f"FCMAE needs images (B, C, H, W) with H and W multiples of {PATCH}, got {tuple(x.shape)}")


class FCMAE(nn.Module):
    """ConvNeXt V2 encoder + a one-block ConvNeXt V2 decoder that predicts the masked 32x32 patches.

    `encoder` is exactly `create_model(model_name, num_classes=0)`, so its state dict is the model's own and
    `save_pretrained(fcmae.encoder, dir)` loads with `create_model(model_name, checkpoint_path=dir)`.
    `model_kwargs` go to `create_model` (e.g. `drop_path_rate`, or architecture overrides for tests).
    """

    def __init__(self, model_name: str, mask_ratio: float = 0.6, decoder_dim: int = 512, decoder_depth: int = 1,
                 norm_pix_loss: bool = True, decay_grn: bool = True, **model_kwargs) -> None:
        super().__init__()
        from mobilevision import create_model  # late: the registry imports model families

        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if decoder_dim < 1 or decoder_depth < 0:
            raise ValueError(f"decoder_dim must be >= 1 and decoder_depth >= 0, got {decoder_dim}, {decoder_depth}")
        encoder = create_model(model_name, num_classes=0, **model_kwargs)
        if not isinstance(encoder, ConvNeXt):
            raise ValueError(f"FCMAE needs a ConvNeXt V2 model (convnextv2_*), got {model_name!r}")
        # the pooled-feature norm is not used in pre-training; frozen so DDP sees no unused trainable parameter
        encoder.head.requires_grad_(False)
        self.encoder = encoder
        self.model_name, self.mask_ratio, self.norm_pix_loss = model_name, mask_ratio, norm_pix_loss
        self.decay_grn = decay_grn
        self.in_chans = encoder.stem[0].in_channels
        self.proj = nn.Conv2d(encoder.num_features, decoder_dim, 1)
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim, 1, 1))
        self.decoder = nn.Sequential(*[ConvNeXtBlock(decoder_dim, ls_init_value=None, use_grn=True)
                                       for _ in range(decoder_depth)])
        self.pred = nn.Conv2d(decoder_dim, PATCH * PATCH * self.in_chans, 1)
        for m in (self.proj, self.decoder, self.pred):
            init_weights(m, "trunc_normal")  # ConvNeXt's: trunc-normal 0.02; LayerNorms keep their (1, 0) init
        nn.init.normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        # the official pre-training decays GRN gamma / beta (timm add_weight_decay sees (1, 1, 1, C) tensors)
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay() if not (self.decay_grn and ".grn." in n)}

    # -------------------------------------------------------------------------------------------- parts
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, L, 32*32*C), per patch in (row, col, channel) order as the official code."""
        b, c, hh, ww = imgs.shape
        h, w = hh // PATCH, ww // PATCH
        x = imgs.reshape(b, c, h, PATCH, w, PATCH)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(b, h * w, PATCH * PATCH * c)

    def unpatchify(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, L, 32*32*C) -> (B, C, H, W); the inverse of `patchify`."""
        b, c = patches.shape[0], self.in_chans
        x = patches.reshape(b, grid[0], grid[1], PATCH, PATCH, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, grid[0] * PATCH, grid[1] * PATCH)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (features (B, C, H/32, W/32) zero at masked positions, mask (B, L) with 1 = masked)."""
        _check_size(imgs)
        if mask is None:
            grid = (imgs.shape[2] // PATCH, imgs.shape[3] // PATCH)
            ratio = self.mask_ratio if mask_ratio is None else mask_ratio
            mask = random_mask(imgs.shape[0], grid, ratio, device=imgs.device)
        return masked_forward_features(self.encoder, imgs, mask), mask

    def forward_decoder(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) encoder features -> (B, 32*32*in_chans, h, w) pixel predictions per patch."""
        x = self.proj(x)  # (B, D, h, w)
        m = mask.reshape(x.shape[0], 1, x.shape[2], x.shape[3]).to(x.dtype)
        x = x * (1.0 - m) + self.mask_token.to(x.dtype) * m
        return self.pred(self.decoder(x))

    def targets(self, imgs: torch.Tensor) -> torch.Tensor:
        """Patchified targets (B, L, 32*32*C), each patch normalised by its own mean / std if norm_pix_loss."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as the official code
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE per patch, averaged over the masked patches only (0 when nothing is masked)."""
        p = pred.flatten(2).transpose(1, 2).float()  # (B, L, 32*32*C)
        loss = ((p - self.targets(imgs.float())) ** 2).mean(dim=-1)  # (B, L)
        return (loss * mask).sum() / mask.sum().clamp(min=1.0)

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs (B, C, H, W), H and W multiples of 32 -> (loss (), pred (B, 32*32*C, H/32, W/32), mask (B, L))."""
        feats, mask = self.forward_encoder(imgs, mask_ratio, mask)
        pred = self.forward_decoder(feats, mask)
        return self.forward_loss(imgs, pred, mask), pred, mask

    @torch.no_grad()
    def reconstruct(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images for display: (masked input, reconstruction with the visible patches pasted back), both
        (B, C, H, W) in the input's space. Normalised-pixel predictions are mapped back with each true patch's
        mean / std (the usual MAE display)."""
        grid = (imgs.shape[2] // PATCH, imgs.shape[3] // PATCH)
        target = self.patchify(imgs)
        p = pred.flatten(2).transpose(1, 2).to(target.dtype)
        if self.norm_pix_loss:
            p = p * (target.var(dim=-1, keepdim=True) + 1e-6).sqrt() + target.mean(dim=-1, keepdim=True)
        m = mask[..., None].to(target.dtype)  # (B, L, 1)
        masked = self.unpatchify(target * (1 - m), grid)
        recon = self.unpatchify(target * (1 - m) + p * m, grid)
        return masked, recon


# ---------------------------------------------------------------------------------------------- the task

@dataclass
class FCMAEOptions:
    """`task_options` of an FCMAE recipe."""

    mask_ratio: float = 0.6  # fraction of 32x32 patches masked
    decoder_dim: int = 512
    decoder_depth: int = 1
    norm_pix_loss: bool = True  # targets normalised per patch
    decay_grn: bool = True
    vis_images: int = 4  # fixed images drawn as input | masked | reconstruction after every epoch

    def validate(self) -> None:
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"task_options.mask_ratio must be in [0, 1), got {self.mask_ratio!r}")
        for name, low in (("decoder_dim", 1), ("decoder_depth", 0), ("vis_images", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"task_options.{name} must be >= {low}, got {getattr(self, name)!r}")


def _open_images(data: str, split: str, size: int, verify: bool):
    """Image source of `split` ('digits' or DIR/split; a DIR without train/ is the training set itself, one
    without val/ has no val set: None)."""
    if data == "digits":
        return open_split("digits", split, image_size=size)
    root = Path(data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data {data!r}: not 'digits' and not a directory")
    if (root / split).is_dir():
        return CheckedImageFolder(root / split, verify=verify)
    if split == "train":
        return CheckedImageFolder(root, verify=verify)  # labels are ignored: any root/<folder>/<image> tree
    return None


def _fixed_masks(n: int, grid: tuple[int, int], ratio: float, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return random_mask(n, grid, ratio, generator=g).to(device)


class FCMAETask(Task):
    """FCMAE pre-training of a ConvNeXt V2 encoder on the images of `data` (labels ignored; DIR/val/, if
    present, gives a validation loss with fixed masks). `save` writes the encoder alone: it loads with
    `create_model(name, checkpoint_path=RUN/last)` and fine-tunes with `mobilevision train --init RUN/last`."""

    name = "fcmae"
    metric = ""  # a lower reconstruction loss is not a better encoder: no best/
    Options = FCMAEOptions

    def build_data(self, data: str, recipe: Any) -> TaskData:
        self.cfg = resolve_data_config(self.model_name, input_size=recipe.input_size, crop_pct=recipe.crop_pct)
        size = self.cfg.size[0]
        if size < PATCH or size % PATCH or self.cfg.size[1] != size:
            raise ValueError(f"input_size must be a positive multiple of {PATCH} (FCMAE masks 32x32 patches), "
                             f"got {size}")
        if recipe.multi_scale:
            raise ValueError("FCMAE pre-training runs at one input_size; set multi_scale to false")
        train_src = _open_images(data, "train", size, recipe.verify_images)
        val_src = _open_images(data, "val", size, recipe.verify_images)
        augment = dict(scale=recipe.scale, ratio=recipe.ratio, hflip=recipe.hflip,
                       interpolation=recipe.train_interpolation)
        cfg = self.cfg
        eval_view = EvalView(val_src if val_src is not None else train_src, create_transform(cfg))
        self.seed, self.data_name, self.recipe_name = recipe.seed, data, recipe.name
        n_vis = min(self.options.vis_images, len(eval_view))
        self.vis = torch.stack([eval_view[i][0] for i in range(n_vis)]) if n_vis else None
        skipped = sum(len(s.skipped) for s in (train_src, val_src) if s is not None)
        return TaskData(TrainView(train_src, lambda h, w: create_transform(cfg, train=True, **augment)),
                        eval_view if val_src is not None else None,
                        skipped={"unreadable": skipped} if skipped else {}, sizes=[size], base_size=size)

    def build_model(self, recipe: Any, data: TaskData) -> nn.Module:
        o = self.options
        return FCMAE(self.model_name, o.mask_ratio, o.decoder_dim, o.decoder_depth, o.norm_pix_loss, o.decay_grn,
                     drop_path_rate=recipe.drop_path_rate, **recipe.model_kwargs)

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        loss, _, _ = model(batch[0].to(device, non_blocking=True))
        return {"loss": loss}

    @torch.no_grad()
    def evaluate(self, model: FCMAE, loader: Any, device: torch.device) -> dict[str, float]:
        """Mean masked-patch loss with fixed masks (seeded per batch and rank): comparable across epochs."""
        model.eval()
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        total = n = 0.0
        for k, (x, _) in enumerate(loader):
            x = x.to(device)
            grid = (x.shape[2] // PATCH, x.shape[3] // PATCH)
            mask = _fixed_masks(len(x), grid, model.mask_ratio, self.seed * 7_919 + k * 104_729 + rank, device)
            loss, _, _ = model(x, mask=mask)
            total += float(loss) * len(x)
            n += len(x)
        total, n = all_reduce_sum([total, n])
        return {"loss": total / max(n, 1.0)}

    def save(self, model: FCMAE, directory: Path, extra: dict[str, Any]) -> None:
        info = {"method": "fcmae", "data": self.data_name, "recipe": self.recipe_name, "input_size": self.cfg.size[0],
                "mean": list(self.cfg.mean), "std": list(self.cfg.std), "mask_ratio": model.mask_ratio}
        save_pretrained(model.encoder, directory, extra={"pretrain": info, **extra})

    def on_epoch_end(self, model: FCMAE, epoch: int, output: Path) -> None:
        if self.vis is None:
            return
        device = next(model.parameters()).device
        size = self.cfg.size[0]
        mask = _fixed_masks(len(self.vis), (size // PATCH, size // PATCH), model.mask_ratio, self.seed, device)
        save_reconstructions(model, self.vis.to(device), mask, self.cfg.mean, self.cfg.std,
                             output / "reconstructions" / f"epoch_{epoch:03d}.png",
                             f"{self.model_name} FCMAE, epoch {epoch}")


@torch.no_grad()
def save_reconstructions(model: FCMAE, imgs: torch.Tensor, mask: torch.Tensor, mean, std, path: Path,
                         title: str = "") -> None:
    """PNG grid, one row per image: input | masked input | reconstruction (visible patches pasted back)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    _, pred, _ = model(imgs, mask=mask)
    masked, recon = model.reconstruct(imgs, pred.float(), mask)
    m = torch.tensor(mean, device=imgs.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=imgs.device).view(1, -1, 1, 1)
    shown = [(t.float() * s + m).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() for t in (imgs, masked, recon)]
    n = imgs.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n + 0.4), squeeze=False)
    for i in range(n):
        for j, (name, arr) in enumerate(zip(("input", "masked", "reconstruction"), shown)):
            ax = axes[i][j]
            ax.imshow(arr[i])
            ax.set(xticks=[], yticks=[])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
