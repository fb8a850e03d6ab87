"""`fit(task, recipe, data, output)`: the one training loop, for every task (single process or torchrun DDP).

A task provides model, data, loss, metrics and export (`tasks/base.py`); the engine does the rest: seeding,
threads, AMP, DDP (gloo on CPU, nccl on GPU), gradient accumulation and clipping, the lr schedule, EMA, atomic
checkpoints, exact resume, progress lines, metrics.jsonl (`epoch` 1-based), TensorBoard, curves.png and
summary.json. `last/` holds the task's export + `train_state.pt` (every epoch and every `checkpoint_every`
optimizer steps), `best/` the export when the task's metric improves.

Determinism: batches and their augmentation are functions of (seed, epoch, step) (VariableBatchSampler with
TrainView / SeededView), the global RNG is re-seeded from (seed, step, rank) before each batch (MixUp/CutMix,
masks, dropout, drop-path) and the state stores the position inside the epoch, so a run killed at any moment
and resumed ends with the same weights and metrics. Resuming a finished run with more `epochs` extends it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..data import SeededView, VariableBatchSampler
from ..models.checkpoint import atomic_write_text
from ..tasks.base import Task, TaskData
from . import checkpoint as ckpt
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed, local_world_size
from .ema import build_ema
from .log import Progress, RunWriter, logger, setup_logging, warnings_to_log
from .optim import build_optimizer
from .recipe import Recipe
from .schedule import build_scheduler


@dataclass
class _Run:
    """Everything one run holds; the functions below read and advance it."""

    task: Task
    recipe: Recipe
    info: DistInfo
    out: Path
    data_name: str
    data: TaskData
    model: nn.Module
    train_model: nn.Module
    sampler: VariableBatchSampler
    loader: DataLoader
    val_loader: DataLoader | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: Any
    autocast: Any
    lr: float
    global_batch: int
    per_epoch: list[int]
    start_epoch: int = 0
    start_batch: int = 0
    step: int = 0  # batches done (the step seed and the resume position count these)
    elapsed: float = 0.0  # seconds of earlier sessions of this run
    sums: dict[str, float] = field(default_factory=dict)  # running sums of loss terms x images, and "n"
    best: dict[str, Any] = field(default_factory=lambda: {"value": None, "epoch": 0, "source": "model"})
    t_start: float = field(default_factory=time.perf_counter)
    rows: list[dict] = field(default_factory=list)

    def seconds(self) -> float:
        return self.elapsed + (time.perf_counter() - self.t_start)


def fit(task: Task, recipe: Recipe, data: str | os.PathLike, output: str | os.PathLike, resume: bool = False, *,
        device: str | None = None, origin: str | None = None) -> dict:
    """Train `task`'s model on `data` with `recipe`, writing the run to `output`; returns the summary
    (also `output/summary.json`). `resume=True` continues the run in `output` from `last/`. `origin` says
    in the first log line why this recipe was chosen (default: its name)."""
    recipe.validate()
    info = init_distributed(device)
    threads = torch.get_num_threads()
    try:
        with warnings_to_log():
            return _fit(task, recipe, str(data), Path(output), resume, info, origin)
    finally:
        torch.set_num_threads(threads)
        cleanup(info)


def _fit(task: Task, recipe: Recipe, data: str, out: Path, resume: bool, info: DistInfo,
         origin: str | None) -> dict:
    setup_logging(info.is_main)
    state, recipe, finished = _prepare_output(task, recipe, out, resume, info)
    if finished is not None:
        return finished
    _set_runtime(recipe, info)
    run = _build(task, recipe, data, out, info)
    if state is not None:
        _restore(run, state)
    writer = _start_writer(run, origin or f"recipe {recipe.name}") if info.is_main else None
    for epoch in range(run.start_epoch, recipe.epochs):
        images, train_seconds, t0 = _train_epoch(run, epoch)
        _end_epoch(run, epoch, writer, images, train_seconds, t0)
    return _finish(run, writer)


# ---------------------------------------------------------------------------------------------- set-up

def _prepare_output(task: Task, recipe: Recipe, out: Path, resume: bool, info: DistInfo):
    """-> (saved train state or None, the recipe to run, the summary of a run that is already finished)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is an existing file; give a directory for the run")
    if not resume:
        if (out / "last" / ckpt.STATE_NAME).exists() or (out / "summary.json").exists():
            raise ValueError(f"output {out} already holds a run; pass --resume to continue it or choose another "
                             "--output")
        return None, recipe, None
    state = ckpt.load_train_state(out / "last")
    if state["model_name"] != task.model_name or state.get("task", "classify") != task.name:
        raise ValueError(f"run {out} trains {state.get('task', 'classify')} {state['model_name']!r}, not "
                         f"{task.name} {task.model_name!r}")
    saved = Recipe(**state["recipe"]).validate()
    changed = [k for k, v in recipe.to_dict().items() if k != "epochs" and saved.to_dict()[k] != v]
    if changed and info.is_main:
        logger.warning("--resume keeps the run's saved recipe; ignoring changed fields: %s", ", ".join(changed))
    done = state["sampler"]["epoch"] if state["sampler"]["start_batch"] == 0 else None
    if recipe.epochs < state["sampler"]["epoch"] + (done is None):
        raise ValueError(f"run {out} has trained {state['sampler']['epoch']} epoch(s); --epochs {recipe.epochs} "
                         "would end before that")
    if done == saved.epochs and recipe.epochs == saved.epochs and (out / "summary.json").is_file():
        if info.is_main:
            logger.info("run %s is finished (%d epochs); resume with a larger --epochs to train longer", out, done)
        return None, saved, json.loads((out / "summary.json").read_text())
    if recipe.epochs != saved.epochs and info.is_main:
        logger.info("resume: %s the run from %d to %d epochs (the schedule follows the new length)",
                    "extending" if recipe.epochs > saved.epochs else "shortening", saved.epochs, recipe.epochs)
    return state, dataclasses.replace(saved, epochs=recipe.epochs), None


def resolve_threads(threads: int | None, local_ranks: int = 1) -> int | None:
    """Intra-op threads for a recipe's `threads`: None = leave torch's setting, 0 = the cores of this
    machine (or of this process's CPU affinity) shared among `local_ranks` processes, n = n."""
    if threads is None:
        return None
    if threads == 0:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // max(1, local_ranks))
    return threads


def _set_runtime(recipe: Recipe, info: DistInfo) -> None:
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    threads = resolve_threads(recipe.threads, local_world_size())
    if threads is None and info.enabled and info.device.type == "cpu":
        threads = resolve_threads(0, local_world_size())
    if threads is not None:
        torch.set_num_threads(threads)


def _warn_if_spinning(info: DistInfo) -> None:
    policy = os.environ.get("OMP_WAIT_POLICY", "").upper()
    if info.device.type == "cpu" and torch.get_num_threads() > 1 and policy != "PASSIVE":
        logger.warning("OpenMP threads spin while they wait (OMP_WAIT_POLICY %s): next to other CPU jobs a step "
                       "can take 10x longer; set OMP_WAIT_POLICY=PASSIVE before torch is imported (the "
                       "`mobilevision train` command does)", policy or "unset")


def _autocast(device: torch.device, recipe: Recipe):
    """(a context-manager factory, the autocast dtype or None): bf16 on CPU, fp16 (or amp_dtype) on GPU."""
    if not recipe.amp:
        return contextlib.nullcontext, None
    fp16 = recipe.amp_dtype == "float16" or (recipe.amp_dtype is None and device.type == "cuda")
    dtype = torch.float16 if fp16 else torch.bfloat16
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype


def _loaders(data: TaskData, recipe: Recipe, info: DistInfo):
    sizes = data.sizes or [1]  # a dataset that takes no size gets (1, 1, index, seed) items
    base = data.base_size or (max(sizes) if data.sizes else 1)
    sampler = VariableBatchSampler(len(data.train), recipe.batch_size, sizes, base_size=base, seed=recipe.seed,
                                   rank=info.rank, world_size=info.world_size)
    train = data.train if getattr(data.train, "takes_size", False) else SeededView(data.train)
    loader = DataLoader(train, batch_sampler=sampler, num_workers=recipe.workers, collate_fn=data.collate,
                        pin_memory=info.device.type == "cuda", generator=torch.Generator())
    val_loader = None
    if data.val is not None and len(data.val):
        shard = Subset(data.val, range(info.rank, len(data.val), info.world_size))
        val_loader = DataLoader(shard, batch_size=recipe.eval_batch_size or recipe.batch_size,
                                num_workers=recipe.workers, collate_fn=data.collate)
    return sampler, loader, val_loader


def _wrap(model: nn.Module, recipe: Recipe, info: DistInfo, multi_size: bool) -> nn.Module:
    """The module the training step calls: SyncBN, DDP and torch.compile as the recipe asks."""
    train_model = model
    if recipe.sync_bn and info.enabled:
        train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    if recipe.compile:
        train_model = torch.compile(train_model, dynamic=True if multi_size else None)
    return train_model


def _build(task: Task, recipe: Recipe, data_name: str, out: Path, info: DistInfo) -> _Run:
    data = task.build_data(data_name, recipe)
    skipped = sum(data.skipped.values())
    if info.is_main and skipped:
        logger.info("skipped %d unreadable images", skipped)
    torch.manual_seed(recipe.seed)  # same initial weights on every rank
    model = task.build_model(recipe, data)
    if recipe.init_backbone:
        from mobilevision.tasks.base import init_backbone

        line = init_backbone(model, recipe.init_backbone)
        if info.rank == 0:
            logger.info(line)
    model = model.to(info.device)
    sampler, loader, val_loader = _loaders(data, recipe, info)
    global_batch = recipe.batch_size * info.world_size * recipe.accum_steps
    lr = recipe.lr * global_batch / recipe.lr_base_batch if recipe.lr_base_batch else recipe.lr
    optimizer = build_optimizer(model, recipe, lr)
    per_epoch = [sampler.num_batches(e) for e in range(recipe.epochs)]
    updates = sum(math.ceil(n / recipe.accum_steps) for n in per_epoch)
    scheduler = build_scheduler(optimizer, recipe, updates, updates / len(per_epoch))
    autocast, amp_dtype = _autocast(info.device, recipe)
    scaler = torch.amp.GradScaler("cuda", enabled=info.device.type == "cuda" and amp_dtype == torch.float16)
    ema = build_ema(model, recipe.ema_decay, recipe.ema_warmup) if recipe.ema else None
    train_model = _wrap(model, recipe, info, multi_size=len(data.sizes or []) > 1)
    return _Run(task, recipe, info, out, data_name, data, model, train_model, sampler, loader, val_loader,
                optimizer, scheduler, scaler, ema, autocast, lr, global_batch, per_epoch)


def _restore(run: _Run, state: dict) -> None:
    """Load a `last/` train state into the run's objects and RNGs (in place)."""
    # the schedule's shape (total steps) is this run's, also when --epochs extends it
    shape = [dict(f.__dict__) for f in run.scheduler.lr_lambdas]
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    for f, d in zip(run.scheduler.lr_lambdas, shape):
        f.__dict__.update(d)
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    ckpt.set_rng_state(state["rng"])
    run.start_epoch, run.start_batch = state["sampler"]["epoch"], state["sampler"]["start_batch"]
    run.step, run.elapsed, run.best = state["step"], state["elapsed"], dict(state["best"])
    # only the rank that logs keeps the running loss sums
    if run.info.is_main and state["loss_n"]:
        run.sums = {"loss": state["loss_sum"], "n": state["loss_n"], **state.get("term_sums", {})}
    if run.info.is_main:
        logger.info("resuming %s at epoch %d batch %d (step %d)", run.out, run.start_epoch + 1, run.start_batch,
                    run.step)


def _start_writer(run: _Run, origin: str) -> RunWriter:
    run.out.mkdir(parents=True, exist_ok=True)
    writer = RunWriter(run.out, resume_epoch=run.start_epoch, metric=run.task.metric)
    text = yaml.safe_dump(run.recipe.to_dict(), sort_keys=False)
    atomic_write_text(run.out / "recipe.yaml", text)
    r, d = run.recipe, run.data
    size = f"{d.sizes[0]} px" if d.sizes and len(d.sizes) == 1 else f"sizes {d.sizes}" if d.sizes else "native size"
    if r.input_size is None and d.sizes:
        size += " (the model's input size)"
    logger.info("%s %s on %s (%s): %d train / %d val images, %s, global batch %d, lr %.3g, %d epochs, "
                "%d rank(s) x %d thread(s) on %s", run.task.name, run.task.model_name, run.data_name, origin,
                len(d.train), len(d.val) if d.val is not None else 0, size, run.global_batch, run.lr, r.epochs,
                run.info.world_size, torch.get_num_threads(), run.info.device)
    _warn_if_spinning(run.info)
    return writer


# ---------------------------------------------------------------------------------------------- the loop

def _seed_step(seed: int, step: int, rank: int, device: torch.device) -> None:
    """Re-seed the global generators for one batch from (seed, step, rank)."""
    step_seed = (seed * 1_000_003 + step * 7_919 + rank * 104_729 + 1) % (2 ** 63)
    torch.default_generator.manual_seed(step_seed)  # torch.manual_seed costs ~100x more per call
    if device.type == "cuda":
        torch.cuda.manual_seed(step_seed)


def _optimizer_step(run: _Run) -> None:
    if run.recipe.clip_grad:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.recipe.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.model)


def _backward(run: _Run, batch: Any, sync: bool) -> dict[str, float]:
    """Forward + backward of one batch (gradients summed into .grad); the loss terms as floats."""
    accum = run.recipe.accum_steps
    no_sync = getattr(run.train_model, "no_sync", None)
    with contextlib.nullcontext() if sync or no_sync is None else no_sync():
        with run.autocast():
            terms = run.task.train_step(run.train_model, batch, run.info.device)
        loss = terms["loss"]
        run.scaler.scale(loss / accum if accum > 1 else loss).backward()
    return {k: float(v.detach()) for k, v in terms.items()}


def _train_epoch(run: _Run, epoch: int) -> tuple[int, float, float]:
    """One epoch from the sampler's position; -> (images seen here, train seconds, start time)."""
    r, info = run.recipe, run.info
    run.sampler.set_epoch(epoch, run.start_batch if epoch == run.start_epoch else 0)
    n_batches = run.per_epoch[epoch]
    run.train_model.train()
    if run.ema is not None:
        run.ema.train()
    t0, images = time.perf_counter(), 0
    bar = Progress(n_batches, f"epoch {epoch + 1}/{r.epochs}", info.is_main, r.log_every,
                   initial=run.sampler.start_batch)
    for k, batch in enumerate(run.loader, start=run.sampler.start_batch):
        _seed_step(r.seed, run.step, info.rank, info.device)
        boundary = (k + 1) % r.accum_steps == 0 or k + 1 == n_batches
        if k % r.accum_steps == 0:
            run.optimizer.zero_grad(set_to_none=True)
        terms = _backward(run, batch, sync=boundary)
        if boundary:
            _optimizer_step(run)
        run.step += 1
        n = len(batch[0] if isinstance(batch, (tuple, list)) else batch)
        images += n
        for key, value in terms.items():
            run.sums[key] = run.sums.get(key, 0.0) + value * n
        run.sums["n"] = run.sums.get("n", 0.0) + n
        bar.update(loss=terms["loss"], lr=run.optimizer.param_groups[0]["lr"])
        updates = run.scheduler.last_epoch
        if boundary and r.checkpoint_every and updates % r.checkpoint_every == 0 and k + 1 < n_batches:
            _save_state(run, epoch, k + 1)
    bar.close()
    return images, time.perf_counter() - t0, t0


def _reduced_sums(run: _Run) -> dict[str, float]:
    keys = sorted(run.sums)
    return dict(zip(keys, all_reduce_sum([run.sums[k] for k in keys], run.info)))


def _state(run: _Run, epoch: int, batch: int, sums: dict[str, float]) -> dict:
    terms = {k: v for k, v in sums.items() if k not in ("loss", "n")}
    return {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "ema": run.ema.state_dict() if run.ema is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "sampler": {"epoch": epoch, "start_batch": batch, "seed": run.recipe.seed}, "rng": ckpt.rng_state(),
        "step": run.step, "elapsed": run.seconds(), "best": run.best, "loss_sum": sums.get("loss", 0.0),
        "loss_n": sums.get("n", 0.0), "term_sums": terms, "recipe": run.recipe.to_dict(),
        "model_name": run.task.model_name, "task": run.task.name,
    }


def _save_state(run: _Run, epoch: int, batch: int) -> None:
    """Mid-epoch checkpoint at (epoch, next batch); every rank joins the loss reduction."""
    sums = _reduced_sums(run)
    if run.info.is_main:
        ckpt.save_train_state(run.out / "last", _state(run, epoch, batch, sums))
    barrier(run.info)


def _evaluate(run: _Run, model: nn.Module) -> dict[str, float]:
    if run.val_loader is None:
        return {}
    with run.autocast():
        return run.task.evaluate(model, run.val_loader, run.info.device)


def _end_epoch(run: _Run, epoch: int, writer: RunWriter | None, images: int, train_seconds: float,
               t0: float) -> None:
    """Reduce, evaluate (model and EMA), log, pick best/, save last/ and the run state."""
    sums = _reduced_sums(run)
    images = int(all_reduce_sum([float(images)], run.info)[0])
    metrics = _evaluate(run, run.model)
    ema_metrics = _evaluate(run, run.ema.module) if run.ema is not None else {}
    n = max(sums.pop("n", 0.0), 1.0)
    row = {"epoch": epoch + 1, "step": run.step, "train_loss": sums.pop("loss", 0.0) / n,
           **{f"train_{k}": v / n for k, v in sums.items()}, "lr": run.optimizer.param_groups[0]["lr"],
           **{f"val_{k}": v for k, v in metrics.items()}, **{f"ema_{k}": v for k, v in ema_metrics.items()},
           "images_per_s": images / max(train_seconds, 1e-9), "seconds": time.perf_counter() - t0}
    run.rows.append(row)
    improved = _update_best(run, epoch, metrics, ema_metrics)
    run.sums = {}
    if run.info.is_main:
        writer.epoch(row)
        metric = run.task.metric
        val = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        ema = f", EMA {metric} {ema_metrics[metric]:.4g}" if metric in ema_metrics else ""
        logger.info("epoch %d/%d: train loss %.4f%s%s, %.0f img/s, %.1f s", row["epoch"], run.recipe.epochs,
                    row["train_loss"], f", val {val}" if val else "", ema, row["images_per_s"], row["seconds"])
        if improved is not None:
            best_model = run.ema.module if improved == "ema" else run.model
            run.task.save(best_model, run.out / "best",
                          {"epoch": epoch + 1, metric: run.best["value"], "weights": improved})
        run.task.save(run.model, run.out / "last",
                      {"epoch": epoch + 1, **({metric: metrics[metric]} if metric in metrics else {})})
        run.task.on_epoch_end(run.model, epoch + 1, run.out)
        ckpt.save_train_state(run.out / "last", _state(run, epoch + 1, 0, {}))
    barrier(run.info)


def _update_best(run: _Run, epoch: int, metrics: dict, ema_metrics: dict) -> str | None:
    """Source ("model" / "ema") of a new best value of the task's metric this epoch, else None."""
    metric, improved = run.task.metric, None
    if not metric:
        return None
    for source, m in (("model", metrics), ("ema", ema_metrics)):
        value = m.get(metric)
        if value is not None and (run.best["value"] is None or value > run.best["value"]):
            run.best, improved = {"value": value, "epoch": epoch + 1, "source": source}, source
    return improved


def _finish(run: _Run, writer: RunWriter | None) -> dict:
    final = run.rows[-1] if run.rows else (writer.rows[-1] if writer and writer.rows else {})
    d, metric = run.data, run.task.metric
    summary: dict[str, Any] = {"model": run.task.model_name, "task": run.task.name, "data": run.data_name}
    if metric:
        summary.update({f"best_{metric}": run.best["value"], "best_epoch": run.best["epoch"],
                        "best_source": run.best["source"]})
    summary.update({f"final_{k[4:]}": v for k, v in final.items() if k.startswith("val_")})
    if metric:
        summary[f"final_ema_{metric}"] = final.get(f"ema_{metric}")
    summary.update({
        "final_train_loss": final.get("train_loss"), "epochs": run.recipe.epochs, "steps": run.step,
        "seconds": run.seconds(), "skipped_images": sum(d.skipped.values()), "train_images": len(d.train),
        "val_images": len(d.val) if d.val is not None else 0,
        **{k: v for k, v in d.info.items() if isinstance(v, (int, float, str))},
        "world_size": run.info.world_size, "recipe": run.recipe.to_dict(),
    })
    if run.info.is_main:
        writer.write_json("summary.json", summary)
        writer.close()
        best = (f"best {metric} {run.best['value']:.4g} ({run.best['source']}, epoch {run.best['epoch']}), "
                if metric and run.best["value"] is not None else "")
        if f"baseline_{metric}" in d.info:
            best += f"trivial baseline {d.info[f'baseline_{metric}']:.4g}, "
        if f"oracle_{metric}" in d.info:  # the best its output resolution allows (segmentation)
            best += f"output-stride oracle {d.info[f'oracle_{metric}']:.4g}, "
        logger.info("done: %sfinal train loss %.4f, %.1f s -> %s", best, summary["final_train_loss"] or 0.0,
                    summary["seconds"], run.out)
    return summary
