"""`pretrain`: the FCMAE pre-training run behind `mobilevision pretrain` (single process or torchrun DDP).

Run directory (rank 0 writes, every file atomically):
  encoder/             model.safetensors + config.json of the ConvNeXt V2 encoder, after every epoch; it loads with
                       `create_model(name, checkpoint_path=dir)` and fine-tunes with
                       `mobilevision train --set model_kwargs={checkpoint_path: DIR/encoder}`
  last/train_state.pt  everything a resume needs (also written every `checkpoint_every` steps)
  metrics.jsonl, tensorboard/, curves.png, recipe.yaml, summary.json
  reconstructions/epoch_NNN.png   input / masked input / reconstruction for `vis_images` fixed images

The reproducibility scheme is `train.loop`'s: batches and their augmentation are functions of (seed, epoch, step),
and the global RNG (which draws the masks) is re-seeded from (seed, step, rank) before every step.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..models.checkpoint import atomic_write_bytes, save_pretrained
from ..data import EvalView, TrainView, VariableBatchSampler, eval_transform, open_split
from ..data.datasets import CheckedImageFolder
from ..data.transforms import train_transform
from ..models.registry import get_config
from ..train import checkpoint as ckpt
from ..train.distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from ..train.log import Progress, RunWriter, logger, setup_logging
from ..train.optim import param_groups
from ..train.schedule import LrFactor
from ..tasks.fcmae import FCMAE, PATCH, random_mask


@dataclass
class PretrainRecipe:
    """Every knob of a pre-training run. lr = blr * global batch / lr_base_batch unless `lr` is set."""

    name: str = "custom"
    description: str = ""
    source: str = ""
    # FCMAE
    mask_ratio: float = 0.6
    decoder_dim: int = 512
    decoder_depth: int = 1
    norm_pix_loss: bool = True
    drop_path_rate: float = 0.0
    # data
    input_size: int = 224  # a multiple of 32
    batch_size: int = 64  # per process
    eval_batch_size: int | None = None
    workers: int = 0
    verify_images: bool = True
    scale: list = field(default_factory=lambda: [0.2, 1.0])
    ratio: list = field(default_factory=lambda: [0.75, 1.3333333])
    hflip: float = 0.5
    interpolation: str = "bicubic"
    # optimisation
    epochs: int = 800
    blr: float = 1.5e-4
    lr: float | None = None
    lr_base_batch: int = 256
    warmup_epochs: float = 40.0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05
    decay_grn: bool = True  # the official pre-training decays GRN gamma / beta (timm add_weight_decay, (1,1,1,C))
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    clip_grad: float | None = None
    # runtime
    amp: bool = True  # bf16 autocast on CPU, fp16 + GradScaler (or amp_dtype) on GPU
    amp_dtype: str | None = None
    vis_images: int = 4
    checkpoint_every: int = 200
    log_every: int = 50
    seed: int = 0
    deterministic: bool = False

    def validate(self) -> "PretrainRecipe":
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.input_size < PATCH or self.input_size % PATCH:
            raise ValueError(f"input_size must be a positive multiple of {PATCH} (FCMAE masks 32x32 patches), "
                             f"got {self.input_size}")
        for name in ("epochs", "batch_size", "decoder_dim", "lr_base_batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.blr <= 0 or (self.lr is not None and self.lr <= 0):
            raise ValueError(f"blr and lr must be > 0, got blr={self.blr}, lr={self.lr}")
        if not 0 <= self.hflip <= 1 or not 0 <= self.drop_path_rate < 1:
            raise ValueError(f"hflip must be in [0, 1] and drop_path_rate in [0, 1), got {self.hflip}, "
                             f"{self.drop_path_rate}")
        if len(self.scale) != 2 or len(self.ratio) != 2 or len(self.betas) != 2:
            raise ValueError("scale, ratio and betas each take two numbers")
        if self.amp_dtype not in (None, "bfloat16", "float16"):
            raise ValueError(f"amp_dtype {self.amp_dtype!r} is not one of bfloat16, float16 (or null)")
        if self.warmup_epochs < 0 or self.vis_images < 0:
            raise ValueError("warmup_epochs and vis_images must be >= 0")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Shipped recipes. "fcmae": the paper's ImageNet pre-training (CNX2 TRAINING.md / main_pretrain.py; the paper's
# main results use 1600 epochs, the script default is 800). "fcmae_digits": a few CPU minutes on digits.
RECIPES: dict[str, PretrainRecipe] = {
    "fcmae": PretrainRecipe(name="fcmae", description="ConvNeXt V2 FCMAE pre-training on ImageNet-1k",
                            source="Woo et al. 2023; facebookresearch/ConvNeXt-V2 TRAINING.md, main_pretrain.py"),
    "fcmae_digits": PretrainRecipe(
        name="fcmae_digits", description="FCMAE on the built-in digits images, minutes on 2 CPU cores",
        source="paper recipe with a short schedule, tuned here (not from a paper)",
        input_size=64, batch_size=32, epochs=6, blr=1.2e-2, warmup_epochs=1.0, hflip=0.0,  # mirrored digits
        amp=False, checkpoint_every=100, log_every=20),
}


def load_pretrain_recipe(name_or_path: str | os.PathLike) -> PretrainRecipe:
    """A shipped recipe by name (see RECIPES) or a YAML file of PretrainRecipe fields."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"recipe file not found: {p}")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"recipe {p} is not valid YAML: {str(err).splitlines()[0]}") from None
        return _from_dict(values)
    if str(name_or_path) not in RECIPES:
        raise ValueError(f"unknown pre-training recipe {str(name_or_path)!r}; shipped: {', '.join(RECIPES)} "
                         "(or pass a .yaml file)")
    return dataclasses.replace(RECIPES[str(name_or_path)]).validate()


def _from_dict(values: Any) -> PretrainRecipe:
    if not isinstance(values, dict):
        raise ValueError(f"a recipe must be a mapping of fields, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(PretrainRecipe)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            raise ValueError(f"unknown pre-training recipe key {key!r}"
                             + (f" (did you mean {', '.join(close)}?)" if close else ""))
    floats = {f.name for f in dataclasses.fields(PretrainRecipe) if str(f.type).startswith("float")}
    values = {k: (float(v) if k in floats and isinstance(v, int) and not isinstance(v, bool) else v)
              for k, v in values.items()}
    return PretrainRecipe(**values).validate()


def apply_pretrain_overrides(recipe: PretrainRecipe, pairs: list[str] | None = None, **values: Any) -> PretrainRecipe:
    """A copy with `key=value` strings (values parsed as YAML) and non-None keyword values applied."""
    merged = recipe.to_dict()
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, raw = (s.strip() for s in pair.split("=", 1))
        try:
            merged[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"--set {key}: cannot parse value {raw!r}") from None
    merged.update({k: v for k, v in values.items() if v is not None})
    return _from_dict(merged)


# ---------------------------------------------------------------------------------------------- pieces

def _open_images(data: str, split: str, size: int, verify: bool, required: bool):
    """Image source of `split` ('digits' or DIR/split; a DIR without train/ is the training set itself)."""
    if data == "digits":
        return open_split("digits", split, image_size=size)
    root = Path(data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--data {data!r}: not 'digits' and not a directory")
    if (root / split).is_dir():
        return CheckedImageFolder(root / split, verify=verify)
    if split == "train" and required:
        return CheckedImageFolder(root, verify=verify)  # labels are ignored: any root/<folder>/<image> tree
    return None


def _optimizer(model: FCMAE, recipe: PretrainRecipe, lr: float) -> torch.optim.AdamW:
    groups = param_groups(model, recipe.weight_decay)
    if recipe.decay_grn and len(groups) == 2:
        grn = {id(p) for n, p in model.named_parameters() if ".grn." in n}
        groups[0]["params"] += [p for p in groups[1]["params"] if id(p) in grn]
        groups[1]["params"] = [p for p in groups[1]["params"] if id(p) not in grn]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(recipe.betas), eps=recipe.eps)


def _autocast(device: torch.device, recipe: PretrainRecipe):
    if not recipe.amp:
        return contextlib.nullcontext, None
    default = torch.float16 if device.type == "cuda" else torch.bfloat16
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(recipe.amp_dtype or "", default)
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + 11) % (2 ** 63)


def _fixed_masks(n: int, grid: tuple[int, int], ratio: float, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return random_mask(n, grid, ratio, generator=g).to(device)


@torch.no_grad()
def reconstruction_loss(model: FCMAE, loader, device: torch.device, autocast, info: DistInfo, seed: int) -> float:
    """Mean masked-patch loss over a loader with fixed masks (seeded per batch): comparable across epochs."""
    model.eval()
    total = n = 0.0
    for k, (x, _) in enumerate(loader):
        x = x.to(device)
        grid = (x.shape[2] // PATCH, x.shape[3] // PATCH)
        mask = _fixed_masks(len(x), grid, model.mask_ratio, seed * 7_919 + k * 104_729 + info.rank, device)
        with autocast():
            loss, _, _ = model(x, mask=mask)
        total += float(loss) * len(x)
        n += len(x)
    total, n = all_reduce_sum([total, n], info)
    return total / max(n, 1.0)


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
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)


class PretrainWriter(RunWriter):
    """RunWriter whose curves show the reconstruction losses (there is no top-1 in pre-training)."""

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [r["epoch"] + 1 for r in self.rows]
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(ep, [r["train_loss"] for r in self.rows], label="train loss")
        if any(r.get("val_loss") is not None for r in self.rows):
            ax.plot(ep, [r.get("val_loss") for r in self.rows], label="val loss (fixed masks)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("masked-patch MSE")
        ax.legend()
        fig.tight_layout()
        atomic_write_bytes(self.out / "curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=80))
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- the run

def pretrain(model_name: str, data: str, output: str | os.PathLike, recipe: PretrainRecipe, *,
             resume: bool = False, device: str | None = None) -> dict:
    """FCMAE-pretrain `model_name` (convnextv2_*) on the images of `data` ('digits' or a directory; labels are
    ignored); returns the summary. The encoder is saved under `output/encoder`."""
    get_config(model_name)
    recipe.validate()
    info = init_distributed(device)
    try:
        return _pretrain(model_name, data, Path(output), recipe, resume, info)
    finally:
        cleanup(info)


def _pretrain(model_name: str, data: str, out: Path, recipe: PretrainRecipe, resume: bool, info: DistInfo) -> dict:
    setup_logging(info.is_main)
    state = None
    if resume:
        state = ckpt.load_train_state(out / "last")
        saved = _from_dict(state["recipe"])
        diff = [k for k, v in recipe.to_dict().items() if saved.to_dict()[k] != v]
        if diff:
            warnings.warn(f"--resume uses the run's saved recipe; ignoring changed fields: {', '.join(diff)}",
                          stacklevel=2)
        recipe = saved
        if state["model_name"] != model_name:
            raise ValueError(f"run {out} pretrains {state['model_name']!r}, not {model_name!r}")
    elif (out / "last" / ckpt.STATE_NAME).exists() or (out / "summary.json").exists():
        raise ValueError(f"output {out} already holds a run; pass --resume to continue it or choose another --output")
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    device, size = info.device, recipe.input_size

    cfg = get_config(model_name).data_config()
    mean, std = cfg.mean, cfg.std
    train_src = _open_images(data, "train", size, recipe.verify_images, required=True)
    val_src = _open_images(data, "val", size, recipe.verify_images, required=False)

    torch.manual_seed(recipe.seed)  # same initial weights on every rank
    model = FCMAE(model_name, recipe.mask_ratio, recipe.decoder_dim, recipe.decoder_depth, recipe.norm_pix_loss,
                  drop_path_rate=recipe.drop_path_rate).to(device)

    def transform_for(h: int, w: int):
        return train_transform((h, w), mean, std, scale=recipe.scale, ratio=recipe.ratio, hflip=recipe.hflip,
                               interpolation=recipe.interpolation)

    sampler = VariableBatchSampler(len(train_src), recipe.batch_size, [size], base_size=size, seed=recipe.seed,
                                   rank=info.rank, world_size=info.world_size)
    loader = DataLoader(TrainView(train_src, transform_for), batch_sampler=sampler, num_workers=recipe.workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator())
    eval_tf = eval_transform((size, size), mean, std, crop_pct=1.0, interpolation=recipe.interpolation)
    val_loader = None
    if val_src is not None:
        view = Subset(EvalView(val_src, eval_tf), range(info.rank, len(val_src), info.world_size))
        val_loader = DataLoader(view, batch_size=recipe.eval_batch_size or recipe.batch_size,
                                num_workers=recipe.workers)
    vis_src = val_src if val_src is not None else train_src
    n_vis = min(recipe.vis_images, len(vis_src))
    vis_imgs = torch.stack([EvalView(vis_src, eval_tf)[i][0] for i in range(n_vis)]).to(device) if n_vis else None
    vis_mask = _fixed_masks(n_vis, (size // PATCH, size // PATCH), recipe.mask_ratio, recipe.seed, device)

    global_batch = recipe.batch_size * info.world_size
    lr = recipe.lr if recipe.lr is not None else recipe.blr * global_batch / recipe.lr_base_batch
    optimizer = _optimizer(model, recipe, lr)
    per_epoch = [sampler.num_batches(e) for e in range(recipe.epochs)]
    warmup = round(recipe.warmup_epochs * sum(per_epoch) / len(per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, LrFactor("cosine", sum(per_epoch), warmup, 0.0, recipe.min_lr_ratio))
    autocast, amp_dtype = _autocast(device, recipe)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)

    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None)

    start_epoch, start_batch, step, elapsed, loss_sum, loss_n = 0, 0, 0, 0.0, 0.0, 0.0
    if state is not None:
        start_epoch, start_batch, step, elapsed, loss_sum, loss_n = ckpt.restore_train_state(
            state, model, optimizer, scheduler, scaler, keep_loss=info.is_main)
        if info.is_main:
            logger.info("resuming %s at epoch %d batch %d (step %d)", out, start_epoch, start_batch, step)

    writer = None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        writer = PretrainWriter(out, resume_epoch=start_epoch)
        text = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
        atomic_write_bytes(out / "recipe.yaml", lambda tmp: Path(tmp).write_text(text))
        logger.info("FCMAE pre-training %s on %s: %d images (labels ignored), %d px, %dx%d patches, mask %.2f, "
                    "global batch %d, lr %.3g, %d epochs, %d rank(s) on %s", model_name, data, len(train_src), size,
                    size // PATCH, size // PATCH, recipe.mask_ratio, global_batch, lr, recipe.epochs,
                    info.world_size, device)
    extra = {"pretrain": {"method": "fcmae", "data": data, "recipe": recipe.name, "input_size": size,
                          "mean": list(mean), "std": list(std), "mask_ratio": recipe.mask_ratio}}

    def train_state(epoch: int, batch: int, sums: tuple[float, float]) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "sampler": {"epoch": epoch, "start_batch": batch, "seed": recipe.seed}, "rng": ckpt.rng_state(),
                "step": step, "elapsed": elapsed + (time.perf_counter() - t_run), "loss_sum": sums[0],
                "loss_n": sums[1], "recipe": recipe.to_dict(), "model_name": model_name}

    t_run = time.perf_counter()
    row: dict = {}
    for epoch in range(start_epoch, recipe.epochs):
        sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        n_batches = per_epoch[epoch]
        train_model.train()
        t0, images = time.perf_counter(), 0
        bar = Progress(n_batches, f"pretrain {epoch + 1}/{recipe.epochs}", info.is_main, recipe.log_every,
                       initial=sampler.start_batch)
        for k, (x, _) in enumerate(loader, start=sampler.start_batch):
            torch.default_generator.manual_seed(_step_seed(recipe.seed, step, info.rank))  # masks + drop-path
            if device.type == "cuda":
                torch.cuda.manual_seed(_step_seed(recipe.seed, step, info.rank))
            x = x.to(device, non_blocking=True)
            with autocast():
                loss, _, _ = train_model(x)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if recipe.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            images += len(x)
            value = float(loss.detach())
            loss_sum, loss_n = loss_sum + value * len(x), loss_n + len(x)
            bar.update(loss=value, lr=optimizer.param_groups[0]["lr"])
            if recipe.checkpoint_every and step % recipe.checkpoint_every == 0 and k + 1 < n_batches:
                sums = all_reduce_sum([loss_sum, loss_n], info)
                if info.is_main:
                    ckpt.save_train_state(out / "last", train_state(epoch, k + 1, tuple(sums)))
                barrier(info)
        bar.close()
        train_seconds = time.perf_counter() - t0
        loss_sum, loss_n, images = all_reduce_sum([loss_sum, loss_n, float(images)], info)
        val_loss = (reconstruction_loss(model, val_loader, device, autocast, info, recipe.seed)
                    if val_loader is not None else None)
        row = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(loss_n, 1.0), "val_loss": val_loss,
               "lr": optimizer.param_groups[0]["lr"], "images_per_s": images / max(train_seconds, 1e-9),
               "seconds": time.perf_counter() - t0}
        loss_sum = loss_n = 0.0
        if info.is_main:
            writer.epoch(row)
            logger.info("epoch %d/%d: train loss %.4f%s, %.0f img/s, %.1f s", epoch + 1, recipe.epochs,
                        row["train_loss"], f", val loss {val_loss:.4f}" if val_loss is not None else "",
                        row["images_per_s"], row["seconds"])
            if vis_imgs is not None:
                save_reconstructions(model, vis_imgs, vis_mask, mean, std,
                                     out / "reconstructions" / f"epoch_{epoch + 1:03d}.png",
                                     f"{model_name} FCMAE, epoch {epoch + 1}")
            save_pretrained(model.encoder, out / "encoder", extra={**extra, "epoch": epoch})
            ckpt.save_train_state(out / "last", train_state(epoch + 1, 0, (0.0, 0.0)))
        barrier(info)

    final = row or (writer.rows[-1] if writer and writer.rows else {})
    summary = {"model": model_name, "data": data, "method": "fcmae", "epochs": recipe.epochs, "steps": step,
               "final_train_loss": final.get("train_loss"), "final_val_loss": final.get("val_loss"),
               "seconds": elapsed + (time.perf_counter() - t_run), "train_images": len(train_src),
               "world_size": info.world_size, "encoder": str(out / "encoder"), "recipe": recipe.to_dict()}
    if info.is_main:
        writer.write_json("summary.json", summary)
        writer.close()
        logger.info("done: final train loss %.4f, %.1f s; encoder -> %s", summary["final_train_loss"] or 0.0,
                    summary["seconds"], out / "encoder")
    return summary
