"""MoGA-style search on this machine: per-layer (expansion, kernel, SE) on the MoGA skeleton under a latency budget.

Latency comes from the per-block look-up table (`latency_table`): every layer's key depends only on its own
choice (its input width and resolution are fixed by the skeleton), so 12 uniform models measure the whole
space (14 layers x 12 choices) once, and a candidate's latency is a sum of 18 numbers.

Accuracy proxy: NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021): at
initialisation, a batch of digits images gives each image a binary code (which ReLU / h-swish units are
positive); the score is log|K| with K[i, j] = number of units on which images i and j agree. Networks whose
units separate the inputs better score higher; on NAS-Bench-201 the score ranks trained accuracy with
Kendall tau about 0.5-0.6. It needs one forward pass per candidate on a CPU (no training), which is what
makes an evolutionary search of thousands of evaluations possible here; it is a weak proxy (it ignores the
optimisation and the data's size), so the search's top-1 claim is the trained comparison, not the proxy.

Search: MoGA's weighted fitness over (accuracy proxy, latency, parameters): each objective is rank-normalised
in the population and combined with weights (default accuracy 1.0, latency 0.6, params 0.4: MoGA ranks
latency above size), candidates over the budget are infeasible (fitness -inf, repaired by mutation);
tournament selection, uniform crossover and per-layer mutation, elitism.
"""
from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mobilevision.models.moga_searched import EXPANSIONS, KERNELS, SKELETON, searched_stages

from .choose import _progress, check_clock
from .latency_table import LatencyTable, default_table_path, fused_model, model_parts, open_table
from .profiling import eval_pass

log = logging.getLogger("mobilevision.search")

CHOICES = tuple((t, k, se) for t in EXPANSIONS for k in KERNELS for se in (0, 1))
N_LAYERS = len(SKELETON)


@dataclass
class SpaceCosts:
    """Per-layer latency (ms) and parameters of every choice, plus the fixed parts (stem, separable, conv, head)."""

    fixed_ms: float
    fixed_params: int
    layer_ms: list[dict]  # per layer: {choice: ms}
    layer_params: list[dict]

    def latency(self, layers: Sequence[Sequence[int]]) -> float:
        return self.fixed_ms + sum(self.layer_ms[i][tuple(c)] for i, c in enumerate(layers))

    def params(self, layers: Sequence[Sequence[int]]) -> int:
        return self.fixed_params + sum(self.layer_params[i][tuple(c)] for i, c in enumerate(layers))


def space_costs(table: LatencyTable, size: int = 224, progress: bool = True, save: str | os.PathLike | None = None
                ) -> SpaceCosts:
    """Measure (what the table lacks of) the 12 uniform models of the space and read every layer's cost."""
    import mobilevision

    raw = {c: mobilevision.create_model("moga_searched", layers=[list(c)] * N_LAYERS).eval() for c in CHOICES}
    models = {c: fused_model(m) for c, m in raw.items()}  # latency of the fused form, params of the trained one
    table.measure(models.values(), size, progress=progress, on_entry=(lambda t: t.save(save)) if save else None)
    if save:
        table.save(save)
    # one cold fraction for the whole space, MoGA-C's: the candidates' weight and activation bytes stay near it
    f = table.cold_fraction(fused_model("moga_searched"), size)
    # parts: stem, separable, 14 inverted residuals, 1x1 conv, tail; blocks: separable, 14 inverted residuals, ...
    parts = {c: model_parts(m, size, table.batch) for c, m in models.items()}
    blocks = {c: [b for stage in m.blocks for b in stage] for c, m in raw.items()}
    layer_ms = [{c: table.part_ms(parts[c][2 + i][0], f) for c in CHOICES} for i in range(N_LAYERS)]
    layer_params = [{c: sum(p.numel() for p in blocks[c][1 + i].parameters()) for c in CHOICES}
                    for i in range(N_LAYERS)]
    first = CHOICES[0]
    fixed_ms = (table.overhead_ms or 0.0) + sum(table.part_ms(parts[first][j][0], f) for j in (0, 1, -2, -1))
    fixed_params = sum(p.numel() for p in raw[first].parameters()) - sum(lp[first] for lp in layer_params)
    return SpaceCosts(fixed_ms, fixed_params, layer_ms, layer_params)


# ---------------------------------------------------------------- the accuracy proxy
def digits_batch(n: int = 24, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) digits training images, one or more per class, normalised like the digits recipe."""
    from mobilevision.data.datasets import DigitsSource

    src = DigitsSource("train", image_size=size)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(src), size=n, replace=False)
    from mobilevision.data.config import IMAGENET_MEAN, IMAGENET_STD

    imgs = [np.asarray(src.load(int(i))[0], dtype=np.float32) / 255.0 for i in idx]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def naswot_score(layers: Sequence[Sequence[int]], x: torch.Tensor, seed: int = 0) -> float:
    """NASWOT log|K| of the skeleton with these choices at initialisation (seeded) on the batch `x` (N, 3, H, W)."""
    import mobilevision

    torch.manual_seed(seed)
    model = mobilevision.create_model("moga_searched", layers=[list(c) for c in layers], num_classes=10).eval()
    codes: list[torch.Tensor] = []

    def hook(_m, _inp, out):
        codes.append((out.detach().flatten(1) > 0).float())

    acts = (torch.nn.ReLU, torch.nn.Hardswish)
    handles = [m.register_forward_hook(hook) for name, m in model.blocks.named_modules() if isinstance(m, acts)]
    with eval_pass(model, handles):
        model(x)
    c = torch.cat(codes, 1).double()
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else float("-inf")


# ---------------------------------------------------------------- the evolutionary search
@dataclass
class SearchResult:
    layers: list[list[int]]
    latency_ms: float
    params: int
    proxy: float
    budget_ms: float
    history: list[dict] = field(default_factory=list)
    evaluated: int = 0

    def block_specs(self) -> list[dict]:
        from dataclasses import asdict

        return [asdict(s) for stage in searched_stages(self.layers) for s in stage]


def _rank01(values: Sequence[float]) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties share the mean rank); one value -> 0.5."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return np.array([0.5])
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # the lowest 0-based rank of each distinct value
    return (first + (counts - 1) / 2)[inverse] / (len(v) - 1)


def weighted_fitness(proxy: Sequence[float], latency: Sequence[float], params: Sequence[float], budget_ms: float,
                     weights: tuple[float, float, float] = (1.0, 0.6, 0.4)) -> np.ndarray:
    """MoGA-style weighted fitness of a population: w_acc * rank(proxy) - w_lat * rank(latency) - w_par *
    rank(params), each rank in [0, 1]; -inf for a candidate over `budget_ms`."""
    wa, wl, wp = weights
    f = wa * _rank01(proxy) - wl * _rank01(latency) - wp * _rank01(params)
    f[np.asarray(latency) > budget_ms] = -np.inf
    return f


def evolve(costs: SpaceCosts, budget_ms: float, x: torch.Tensor, population: int = 16, generations: int = 8,
           mutation: float = 0.15, weights: tuple[float, float, float] = (1.0, 0.6, 0.4), seed: int = 0,
           progress: bool = True) -> SearchResult:
    """The weighted-fitness evolutionary search under `budget_ms` (table latency); ValueError when even the
    fastest point of the space is over the budget (its latency is in the message)."""
    rng = random.Random(seed)
    fastest = [min(CHOICES, key=lambda c: costs.layer_ms[i][c]) for i in range(N_LAYERS)]
    if costs.latency(fastest) > budget_ms:
        raise ValueError(f"no architecture of the space fits {budget_ms:g} ms here: the fastest one takes "
                         f"{costs.latency(fastest):.2f} ms (table prediction)")
    cache: dict[tuple, tuple[float, float, int]] = {}

    def evaluate(ind: tuple) -> tuple[float, float, int]:
        if ind not in cache:
            lat = costs.latency(ind)
            proxy = naswot_score(ind, x, seed) if lat <= budget_ms else float("-inf")
            cache[ind] = (proxy, lat, costs.params(ind))
        return cache[ind]

    def repair(ind: list) -> tuple:
        while costs.latency(ind) > budget_ms:  # move a random layer to its fastest choice
            i = rng.randrange(N_LAYERS)
            ind[i] = fastest[i]
        return tuple(ind)

    def fitness(pop: list[tuple]) -> tuple[list, np.ndarray]:
        scores = [evaluate(i) for i in pop]
        return scores, weighted_fitness(*zip(*scores), budget_ms, weights)

    pop = [repair([rng.choice(CHOICES) for _ in range(N_LAYERS)]) for _ in range(population)]
    history = []
    for g in _progress(list(range(generations)), progress, unit="gen", desc="searching"):
        scores, fit = fitness(pop)
        order = np.argsort(-fit)
        top = int(order[0])
        history.append({"generation": g, "best_proxy": scores[top][0], "best_ms": scores[top][1],
                        "evaluated": len(cache)})
        children = [pop[int(i)] for i in order[: max(2, population // 4)]]  # the elite
        while len(children) < population:
            a, b = (max(rng.sample(range(population), 3), key=lambda i: fit[i]) for _ in range(2))
            child = [pa if rng.random() < 0.5 else pb for pa, pb in zip(pop[a], pop[b])]
            children.append(repair([rng.choice(CHOICES) if rng.random() < mutation else c for c in child]))
        pop = children
    best = pop[int(np.argmax(fitness(pop)[1]))]
    proxy, lat, params = evaluate(best)
    return SearchResult([list(c) for c in best], lat, params, proxy, budget_ms, history, len(cache))


def search(budget_ms: float, runtime: str = "eager", threads: int = 2, size: int = 224, clock: str = "wall",
           table_path: str | os.PathLike | None = None, population: int = 16, generations: int = 8, seed: int = 0,
           weights: tuple[float, float, float] = (1.0, 0.6, 0.4), progress: bool = True) -> SearchResult:
    """Measure the space's table (cached at `table_path`, default `default_table_path`) and search it."""
    check_clock(clock, threads)
    if not budget_ms > 0:
        raise ValueError(f"--budget-ms must be > 0, got {budget_ms}")
    path = table_path or default_table_path(runtime, threads, 1, clock=clock)
    table = open_table(runtime, threads, 1, path, clock=clock)
    costs = space_costs(table, size, progress, save=path)
    return evolve(costs, budget_ms, digits_batch(), population, generations, weights=weights, seed=seed,
                  progress=progress)


def write_search(result: SearchResult, out_dir: str | os.PathLike, meta: dict | None = None) -> dict[str, Path]:
    """`searched.json` (layers, BlockSpec table, predicted latency, params, proxy, history), `model_kwargs.json`
    (for `--set model_kwargs=...` / `create_model("moga_searched", **kwargs)`) and `searched.md`."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"layers": result.layers}
    paths = {"json": out / "searched.json", "kwargs": out / "model_kwargs.json", "md": out / "searched.md"}
    paths["json"].write_text(json.dumps({"model": "moga_searched", "model_kwargs": kwargs,
                                         "predicted_ms": result.latency_ms, "params": result.params,
                                         "naswot": result.proxy, "budget_ms": result.budget_ms,
                                         "evaluated": result.evaluated, "block_specs": result.block_specs(),
                                         "history": result.history, **(meta or {})}, indent=1))
    paths["kwargs"].write_text(json.dumps(kwargs))
    lines = [f"moga_searched under {result.budget_ms:g} ms: predicted {result.latency_ms:.2f} ms, "
             f"{result.params / 1e6:.3f} M params, NASWOT {result.proxy:.1f} ({result.evaluated} candidates)", "",
             "| layer | out | stride | act | expansion | kernel | SE |", "|---|---|---|---|---|---|---|"]
    for i, ((t, k, se), (c, s, act)) in enumerate(zip(result.layers, SKELETON)):
        lines.append(f"| {i + 1} | {c} | {s} | {act} | {t} | {k} | {'yes' if se else '-'} |")
    paths["md"].write_text("\n".join(lines) + "\n")
    return paths


__all__ = ["CHOICES", "SpaceCosts", "space_costs", "naswot_score", "digits_batch", "weighted_fitness", "evolve",
           "search", "write_search", "SearchResult"]
