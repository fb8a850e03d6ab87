"""`fit`: the training run behind `mobilevision train` (single process or torchrun DDP).

Determinism: batches and their augmentation are functions of (seed, epoch, step) (see
VariableBatchSampler / TrainView), the global RNG is re-seeded from (seed, step, rank) before each step
(MixUp/CutMix, dropout, drop-path), and `last/train_state.pt` stores the position inside the epoch,
so a run killed at any moment and resumed with `resume=True` ends with the same weights and metrics.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, Subset

import mobilevision
from ..models.registry import get_config
from ..data import EvalView, TrainView, VariableBatchSampler, build_mixing, eval_transform, open_datasets
from ..data.transforms import train_transform
from . import checkpoint as ckpt
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from .ema import build_ema
from .log import Progress, RunWriter, logger, setup_logging
from .optim import build_optimizer
from .recipe import Recipe
from .schedule import build_scheduler


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + 1) % (2 ** 63)


def _seed_step(seed: int, device: torch.device) -> None:
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _autocast(device: torch.device, recipe: Recipe):
    if not recipe.amp:
        return contextlib.nullcontext, None
    if device.type == "cuda":
        dtype = torch.bfloat16 if recipe.amp_dtype == "bfloat16" else torch.float16
    else:
        dtype = torch.bfloat16 if recipe.amp_dtype in (None, "bfloat16") else torch.float16
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, autocast, info: DistInfo) -> dict:
    """top-1 / top-5 (%) and mean cross-entropy over the whole val set (summed over ranks)."""
    model.eval()
    c1 = c5 = loss = n = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with autocast():
            out = model(x)
        out = out.float()
        loss += float(F.cross_entropy(out, y, reduction="sum"))
        top = out.topk(min(5, out.shape[1]), dim=1).indices  # (B, k)
        hit = top.eq(y[:, None])
        c1 += float(hit[:, 0].sum())
        c5 += float(hit.any(dim=1).sum())
        n += len(y)
    c1, c5, loss, n = all_reduce_sum([c1, c5, loss, n], info)
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "loss": loss / max(n, 1)}


def _data_cfg(model_name: str, recipe: Recipe) -> dict:
    cfg = get_config(model_name).data_config()
    return {
        "input_size": recipe.input_size or cfg.input_size[-1],
        "mean": cfg.mean,
        "std": cfg.std,
        "crop_pct": recipe.crop_pct if recipe.crop_pct is not None else cfg.crop_pct,
        "interpolation": cfg.interpolation,
    }


def _prepare_output(out: Path, resume: bool, info: DistInfo) -> dict | None:
    if resume:
        return ckpt.load_train_state(out / "last")
    if (out / "last" / ckpt.STATE_NAME).exists() or (out / "summary.json").exists():
        raise ValueError(f"output {out} already holds a run; pass --resume to continue it or choose another --output")
    return None


def fit(model_name: str, data: str, output: str | os.PathLike, recipe: Recipe, *, resume: bool = False,
        device: str | None = None) -> dict:
    """Train `model_name` on `data` ('digits' or an ImageFolder root) with `recipe`; returns the summary."""
    info = init_distributed(device)
    threads = torch.get_num_threads()
    try:
        return _fit(model_name, data, Path(output), recipe, resume, info)
    finally:
        torch.set_num_threads(threads)
        cleanup(info)


def _fit(model_name: str, data: str, out: Path, recipe: Recipe, resume: bool, info: DistInfo) -> dict:
    setup_logging(info.is_main)
    state = _prepare_output(out, resume, info)
    if state is not None:
        saved = Recipe(**state["recipe"]).validate()
        diff = [k for k, v in recipe.to_dict().items() if saved.to_dict()[k] != v]
        if diff:
            warnings.warn(f"--resume uses the run's saved recipe; ignoring changed fields: {', '.join(diff)}", stacklevel=2)
        recipe = saved
        if state["model_name"] != model_name:
            raise ValueError(f"run {out} trains {state['model_name']!r}, not {model_name!r}")
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = info.device
    if recipe.threads:
        torch.set_num_threads(recipe.threads)

    dcfg = _data_cfg(model_name, recipe)
    size = dcfg["input_size"]
    sizes = [int(s) for s in recipe.scales] if recipe.multi_scale else [size]
    train_src, val_src = open_datasets(data, image_size=max(sizes + [size]), verify=recipe.verify_images)
    classes = list(train_src.classes)
    skipped = len(train_src.skipped) + len(val_src.skipped)
    if info.is_main and skipped:
        logger.info("skipped %d unreadable images", skipped)

    torch.manual_seed(recipe.seed)  # same initial weights on every rank
    model = mobilevision.create_model(model_name, num_classes=len(classes), drop_rate=recipe.drop_rate,
                                      drop_path_rate=recipe.drop_path_rate, **recipe.model_kwargs)
    # saved with the weights, so eval / predict / export preprocess as this run evaluated
    model.default_cfg = {**model.default_cfg, "input_size": (model.in_chans, size, size), "mean": dcfg["mean"],
                         "std": dcfg["std"], "crop_pct": dcfg["crop_pct"], "interpolation": dcfg["interpolation"]}
    model.to(device)

    interp = recipe.train_interpolation or dcfg["interpolation"]

    def transform_for(h: int, w: int):
        return train_transform((h, w), dcfg["mean"], dcfg["std"], scale=recipe.scale, ratio=recipe.ratio,
                               hflip=recipe.hflip, interpolation=interp, rand_augment=recipe.rand_augment,
                               auto_augment=recipe.auto_augment,
                               color_jitter=recipe.color_jitter, random_erase=recipe.random_erase)

    sampler = VariableBatchSampler(len(train_src), recipe.batch_size, sizes,
                                   base_size=recipe.base_scale if recipe.multi_scale else size,
                                   seed=recipe.seed, rank=info.rank, world_size=info.world_size)
    loader = DataLoader(TrainView(train_src, transform_for), batch_sampler=sampler, num_workers=recipe.workers,
                        pin_memory=device.type == "cuda", generator=torch.Generator())
    eval_tf = eval_transform((size, size), dcfg["mean"], dcfg["std"], crop_pct=dcfg["crop_pct"],
                             interpolation=dcfg["interpolation"])
    val_view = Subset(EvalView(val_src, eval_tf), range(info.rank, len(val_src), info.world_size))
    val_loader = DataLoader(val_view, batch_size=recipe.eval_batch_size or recipe.batch_size,
                            num_workers=recipe.workers)

    global_batch = recipe.batch_size * info.world_size
    lr = recipe.lr * global_batch / recipe.lr_base_batch if recipe.lr_base_batch else recipe.lr
    optimizer = build_optimizer(model, recipe, lr)
    per_epoch = [sampler.num_batches(e) for e in range(recipe.epochs)]
    scheduler = build_scheduler(optimizer, recipe, sum(per_epoch), sum(per_epoch) / len(per_epoch))
    ema = build_ema(model, recipe.ema_decay) if recipe.ema else None
    autocast, amp_dtype = _autocast(device, recipe)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    mixing = build_mixing(recipe.mixup, recipe.cutmix, len(classes), recipe.mix_prob, recipe.switch_prob)

    train_model: nn.Module = model
    if recipe.sync_bn and info.enabled:
        train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[info.local_rank] if device.type == "cuda" else None)
    if recipe.compile:
        train_model = torch.compile(train_model, dynamic=True if recipe.multi_scale else None)

    start_epoch, start_batch, step, elapsed = 0, 0, 0, 0.0
    loss_sum = loss_n = 0.0
    best = {"top1": -1.0, "epoch": -1, "source": "model"}
    if state is not None:
        start_epoch, start_batch, step, elapsed, loss_sum, loss_n = ckpt.restore_train_state(
            state, model, optimizer, scheduler, scaler, ema, keep_loss=info.is_main)
        best = dict(state["best"])
        if info.is_main:
            logger.info("resuming %s at epoch %d batch %d (step %d)", out, start_epoch, start_batch, step)

    writer = None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        writer = RunWriter(out, resume_epoch=start_epoch)
        text = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
        ckpt.atomic_write_bytes(out / "recipe.yaml", lambda tmp: Path(tmp).write_text(text))
        logger.info("training %s on %s: %d train / %d val images, %d classes, %d px, global batch %d, lr %.3g, "
                    "%d epochs, %d rank(s) on %s", model_name, data, len(train_src), len(val_src), len(classes),
                    size, global_batch, lr, recipe.epochs, info.world_size, device)
    extra = {"train": {"data": data, "recipe": recipe.name, **dcfg, "mean": list(dcfg["mean"]),
                       "std": list(dcfg["std"])}}

    def train_state(epoch: int, batch: int, sums: tuple[float, float]) -> dict:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "sampler": {"epoch": epoch, "start_batch": batch, "seed": recipe.seed},
            "rng": ckpt.rng_state(), "step": step, "elapsed": elapsed + (time.perf_counter() - t_run),
            "best": best, "loss_sum": sums[0], "loss_n": sums[1],
            "recipe": recipe.to_dict(), "model_name": model_name,
        }

    t_run = time.perf_counter()
    row: dict = {}
    for epoch in range(start_epoch, recipe.epochs):
        sampler.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        n_batches = per_epoch[epoch]
        train_model.train()
        if ema is not None:
            ema.train()
        t0, images = time.perf_counter(), 0
        bar = Progress(n_batches, f"epoch {epoch + 1}/{recipe.epochs}", info.is_main, recipe.log_every,
                       initial=sampler.start_batch)
        for k, (x, y) in enumerate(loader, start=sampler.start_batch):
            _seed_step(_step_seed(recipe.seed, step, info.rank), device)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mixing is not None:
                x, y = mixing(x, y)
            with autocast():
                loss = criterion(train_model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if recipe.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            images += len(x)
            loss_value = float(loss.detach())
            loss_sum += loss_value * len(x)
            loss_n += len(x)
            bar.update(loss=loss_value, lr=optimizer.param_groups[0]["lr"])
            if recipe.checkpoint_every and step % recipe.checkpoint_every == 0 and k + 1 < n_batches:
                sums = all_reduce_sum([loss_sum, loss_n], info)
                if info.is_main:
                    ckpt.save_train_state(out / "last", train_state(epoch, k + 1, tuple(sums)))
                barrier(info)
        bar.close()
        train_seconds = time.perf_counter() - t0
        loss_sum, loss_n, images = all_reduce_sum([loss_sum, loss_n, float(images)], info)
        metrics = evaluate(model, val_loader, device, autocast, info)
        ema_metrics = evaluate(ema.module, val_loader, device, autocast, info) if ema is not None else None
        row = {
            "epoch": epoch, "step": step, "train_loss": loss_sum / max(loss_n, 1),
            "lr": optimizer.param_groups[0]["lr"], "val_top1": metrics["top1"], "val_top5": metrics["top5"],
            "val_loss": metrics["loss"], "ema_top1": ema_metrics["top1"] if ema_metrics else None,
            "ema_top5": ema_metrics["top5"] if ema_metrics else None,
            "images_per_s": images / max(train_seconds, 1e-9), "seconds": time.perf_counter() - t0,
        }
        improved = None
        for source, m in (("model", metrics), ("ema", ema_metrics)):
            if m is not None and m["top1"] > best["top1"]:
                best, improved = {"top1": m["top1"], "epoch": epoch, "source": source}, source
        loss_sum = loss_n = 0.0
        if info.is_main:
            writer.epoch(row)
            logger.info("epoch %d/%d: train loss %.4f, val top-1 %.2f top-5 %.2f%s, %.0f img/s, %.1f s",
                        epoch + 1, recipe.epochs, row["train_loss"], row["val_top1"], row["val_top5"],
                        f", EMA top-1 {row['ema_top1']:.2f}" if ema_metrics else "", row["images_per_s"],
                        row["seconds"])
            if improved is not None:
                best_model = ema.module if improved == "ema" else model
                ckpt.save_weights(best_model, out / "best", classes,
                                  {**extra, "epoch": epoch, "top1": best["top1"], "weights": improved})
            ckpt.save_weights(model, out / "last", classes, {**extra, "epoch": epoch, "top1": row["val_top1"]})
            ckpt.save_train_state(out / "last", train_state(epoch + 1, 0, (0.0, 0.0)))
        barrier(info)

    seconds = elapsed + (time.perf_counter() - t_run)
    final = row or (writer.rows[-1] if writer and writer.rows else {})
    summary = {
        "model": model_name, "data": data, "best_top1": best["top1"], "best_epoch": best["epoch"],
        "best_source": best["source"], "final_top1": final.get("val_top1"), "final_top5": final.get("val_top5"),
        "final_ema_top1": final.get("ema_top1"), "epochs": recipe.epochs, "steps": step, "seconds": seconds,
        "skipped_images": skipped, "train_images": len(train_src), "val_images": len(val_src),
        "classes": len(classes), "world_size": info.world_size, "recipe": recipe.to_dict(),
    }
    if info.is_main:
        writer.write_json("summary.json", summary)
        writer.close()
        logger.info("done: best top-1 %.2f (%s, epoch %d), final top-1 %.2f, %.1f s -> %s", best["top1"],
                    best["source"], best["epoch"] + 1, summary["final_top1"] or 0.0, seconds, out)
    return summary
