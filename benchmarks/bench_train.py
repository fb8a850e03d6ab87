"""Training throughput (images/s) of a mobilevision model against timm's same model, side by side.

Both models train on the same real batch (digits images through the eval preset, at --input-size),
with the same optimizer (AdamW), loss, batch, threads and autocast setting. Rounds alternate between
the two so that load from other processes hits both alike; the median round is reported.

    python benchmarks/bench_train.py --model mobilenetv3_small_100 --batch-size 32 --input-size 128
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def _batch(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from mobilevision.data import DigitsSource, eval_transform

    src = DigitsSource("train", size)
    tf = eval_transform((size, size), (0.5,) * 3, (0.5,) * 3, crop_pct=1.0)
    xs, ys = zip(*(src.load(i) for i in range(n)))
    return torch.stack([tf(x) for x in xs]), torch.tensor(ys)


def _stepper(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    model.train()

    def step() -> None:
        with ctx():
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _time(step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenetv3_small_100")
    p.add_argument("--timm-model", help="timm name (default: the published.csv parity model, else the same name)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="training steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    args = p.parse_args()

    import timm

    import mobilevision
    from mobilevision.models.registry import published_figures

    torch.set_num_threads(args.threads)
    timm_name = args.timm_model or (published_figures().get(args.model, {}).get("parity_with") or args.model)
    x, y = _batch(args.batch_size, args.input_size)
    torch.manual_seed(0)
    ours = mobilevision.create_model(args.model, num_classes=10)
    torch.manual_seed(0)
    theirs = timm.create_model(timm_name, num_classes=10)
    steps = {"mobilevision": _stepper(ours, x, y, args.amp), "timm": _stepper(theirs, x, y, args.amp)}
    for s in steps.values():  # warm-up: allocator, oneDNN primitives
        _time(s, 2)
    rates: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(steps)[::-1]
        for k in order:
            rates[k].append(args.steps * args.batch_size / _time(steps[k], args.steps))
    ours_ips, timm_ips = (statistics.median(rates[k]) for k in ("mobilevision", "timm"))
    print(f"model {args.model} vs timm {timm_name}: batch {args.batch_size}, {args.input_size} px, "
          f"{args.threads} thread(s), amp={args.amp}, {args.rounds} rounds x {args.steps} steps")
    print(f"{'':14}{'images/s (median)':>20}{'min':>10}{'max':>10}")
    for k in steps:
        print(f"{k:14}{statistics.median(rates[k]):>20.1f}{min(rates[k]):>10.1f}{max(rates[k]):>10.1f}")
    print(f"ratio mobilevision / timm = {ours_ips / timm_ips:.3f}")


if __name__ == "__main__":
    main()
