"""MobileViT's multi-scale sampler with variable batch size (MSc-VBS), also used at one fixed size.

At each iteration a resolution (H_t, W_t) is drawn from the set S and the batch holds
b_t = H_n * W_n * b / (H_t * W_t) images, where b is the batch size at the base resolution (H_n, W_n)
(the largest in S unless `base_size` says otherwise), so every batch costs about the same.
All randomness comes from generators seeded by (seed, epoch): every DDP rank draws the same
resolution at the same step, and a resumed run rebuilds exactly the same batches.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

DEFAULT_SCALES = (160, 192, 256, 288, 320)


def _pair(s) -> tuple[int, int]:
    if isinstance(s, int):
        return (s, s)
    h, w = s
    return (int(h), int(w))


class VariableBatchSampler(Sampler[list[tuple[int, int, int, int]]]):
    """Yields batches of `(height, width, index, sample_seed)` tuples for `TrainView`.

    num_samples: dataset length; batch_size: per-rank batch at `base_size`; sizes: resolutions
    (ints or (h, w)); rank/world_size: the shard this process reads (indices are padded by
    repetition to a multiple of world_size, as DistributedSampler does).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        sizes: Sequence = DEFAULT_SCALES,
        base_size=None,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples <= 0:
            raise ValueError(f"the sampler needs at least one sample, got {num_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        sizes = sorted({_pair(s) for s in sizes}, key=lambda hw: hw[0] * hw[1])
        if not sizes or any(h < 1 or w < 1 for h, w in sizes):
            raise ValueError(f"sizes must be positive resolutions, got {sizes}")
        base = _pair(base_size) if base_size is not None else sizes[-1]
        self.table = [(h, w, max(1, int(round(base[0] * base[1] * batch_size / (h * w))))) for h, w in sizes]
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.local_count = math.ceil(num_samples / world_size)
        if drop_last and self.local_count < min(b for _, _, b in self.table):
            raise ValueError(f"{num_samples} samples over {world_size} rank(s) cannot fill one batch of "
                             f"{min(b for _, _, b in self.table)}; lower the batch size")
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's plan; iteration skips the first `start_batch` batches (mid-epoch resume)."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start_batch": self.start_batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']}, this run uses {self.seed}")
        self.set_epoch(state["epoch"], state.get("start_batch", 0))

    def _draws(self, epoch: int) -> Iterator[tuple[int, int, int, int]]:
        """(h, w, batch, batch_seed) per batch, identical on every rank."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7_919 + 17)
        pos = 0
        while pos < self.local_count:
            j = int(torch.randint(len(self.table), (1,), generator=g)) if len(self.table) > 1 else 0
            batch_seed = int(torch.randint(2 ** 31 - 1, (1,), generator=g))
            h, w, b = self.table[j]
            if self.drop_last and pos + b > self.local_count:
                return
            yield h, w, b, batch_seed
            pos += b

    def num_batches(self, epoch: int | None = None) -> int:
        """Batches in `epoch` (default: the current one), counting from its start."""
        return sum(1 for _ in self._draws(self.epoch if epoch is None else epoch))

    def _local_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_033 + epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.local_count * self.world_size
        order = (order * math.ceil(total / len(order)))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int, int, int]]]:
        local = self._local_indices(self.epoch)
        pos = 0
        for k, (h, w, b, batch_seed) in enumerate(self._draws(self.epoch)):
            chunk = local[pos:pos + b]
            pos += b
            if k < self.start_batch:
                continue
            base = (batch_seed + self.rank * 1_000_003) % (2 ** 31)
            yield [(h, w, idx, base * 1024 + i) for i, idx in enumerate(chunk)]

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.start_batch)
