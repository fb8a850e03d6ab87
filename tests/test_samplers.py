"""The multi-scale variable-batch sampler: batch formula, rank agreement, sharding, resume."""
from __future__ import annotations

import pytest

from mobilevision.data import DEFAULT_SCALES, VariableBatchSampler


def _plan(sampler):
    return [[(h, w) for h, w, _, _ in b] for b in sampler]


def test_batch_size_follows_area_formula():
    s = VariableBatchSampler(10_000, 32, DEFAULT_SCALES)
    # b_t = H_n * W_n * b / (H_t * W_t), anchored at the largest resolution 320
    assert s.table == [(160, 160, 128), (192, 192, 89), (256, 256, 50), (288, 288, 40), (320, 320, 32)]
    cv = VariableBatchSampler(10_000, 128, DEFAULT_SCALES, base_size=256)  # cvnets: batch given at 256 px
    assert [b for _, _, b in cv.table] == [328, 228, 128, 101, 82]  # rounded (cvnets truncates: 327, 227, ..., 81)
    seen = set()
    for batch in s:
        (h, w), n = {(x[0], x[1]) for x in batch}.pop(), len(batch)
        assert all((x[0], x[1]) == (h, w) for x in batch)  # one resolution per batch
        assert n == dict(((a, b), c) for a, b, c in s.table)[(h, w)]
        seen.add(h)
    assert seen == set(DEFAULT_SCALES)  # a new draw every iteration covers the whole set


def test_every_rank_draws_the_same_resolutions_and_shards_are_disjoint():
    ranks = [VariableBatchSampler(1001, 8, (16, 24, 32), seed=3, rank=r, world_size=3) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    plans = [list(s) for s in ranks]
    assert len({len(p) for p in plans}) == 1
    for step in zip(*plans):
        assert len({(b[0][0], len(b)) for b in step}) == 1  # same resolution and batch at each step
    idx = [x[2] for p in plans for b in p for x in b]
    assert len(idx) == len(set(idx))  # no sample read twice within the epoch (drop_last leaves a tail)
    seeds = [x[3] for p in plans for b in p for x in b]
    assert len(seeds) == len(set(seeds))  # every sample gets its own augmentation seed


def test_epochs_differ_and_replay_exactly():
    s = VariableBatchSampler(500, 16, (32, 64), seed=0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e0 != e1
    assert s.num_batches(0) == len(e0) and len(s) == len(e0)
    other_seed = VariableBatchSampler(500, 16, (32, 64), seed=1)
    assert list(other_seed) != e0


def test_state_dict_resumes_mid_epoch():
    s = VariableBatchSampler(300, 10, (16, 32), seed=5)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, start_batch=7)
    state = s.state_dict()
    fresh = VariableBatchSampler(300, 10, (16, 32), seed=5)
    fresh.load_state_dict(state)
    assert list(fresh) == full[7:] and len(fresh) == len(full) - 7
    with pytest.raises(ValueError, match="seed"):
        VariableBatchSampler(300, 10, (16, 32), seed=6).load_state_dict(state)


def test_fixed_size_sampler_and_bad_values():
    s = VariableBatchSampler(100, 10, [64], shuffle=False)
    batches = list(s)
    assert len(batches) == 10 and [x[2] for x in batches[0]] == list(range(10))
    assert VariableBatchSampler(105, 10, [64], drop_last=False).num_batches() == 11
    with pytest.raises(ValueError, match="batch_size"):
        VariableBatchSampler(100, 0, [64])
    with pytest.raises(ValueError, match="rank"):
        VariableBatchSampler(100, 4, [64], rank=2, world_size=2)
    with pytest.raises(ValueError, match="cannot fill"):
        VariableBatchSampler(5, 10, [64])
