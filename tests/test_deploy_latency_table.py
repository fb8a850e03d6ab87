"""The per-block latency table, the MoGA search space and its fitness: structure and bookkeeping (no timing claims)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mobilevision
from mobilevision.cli import main
from mobilevision.deploy import latency_table as lt
from mobilevision.deploy import search as se
from mobilevision.models.moga_searched import MOGA_C_LAYERS


@pytest.fixture(scope="module")
def small():
    return lt.fused_model("mobilenetv3_small_minimal_100")


def fake_time(part, shape, runtime="eager", threads=2, clock="wall", cache="hot", input_warm=True, **kw):
    # a deterministic stand-in: "latency" = input elements / 1e5 ms (+ 0.01 for the call), twice that when cold
    return {"median_ms": (float(np.prod(shape)) / 1e5 + 0.01) * (2 if cache == "cold" else 1), "spread": 0.0}


def test_parts_follow_the_block_table(small):
    parts = lt.model_parts(small, 224)
    blocks = [b for stage in small.blocks for b in stage]
    assert len(parts) == len(blocks) + 2
    assert parts[0][1]["kind"] == "stem" and parts[-1][1]["kind"].startswith("tail")
    assert parts[0][3] == (1, 3, 224, 224) and parts[1][3] == (1, 16, 112, 112)
    ir = [p[1] for p in parts if p[1]["kind"] == "ir"]
    assert {f["kernel"] for f in ir} == {3} and all(f["se"] == "none" for f in ir)  # minimal: 3x3, no SE
    # chaining the parts is the model
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        y = x
        for _, _, part, _ in parts:
            y = part(y)
        torch.testing.assert_close(y, small(x))


def test_keys_tell_kernel_expansion_se_and_resolution_apart():
    def build(layers):  # keys do not depend on fusing (BN is not in them)
        return mobilevision.create_model("moga_searched", layers=layers).eval()
    a = lt.model_parts(build([[3, 3, 0]] * 14), 64)
    b = lt.model_parts(build([[3, 3, 0]] * 13 + [[6, 7, 1]]), 64)
    c = lt.model_parts(build([[3, 3, 0]] * 14), 96)
    ka, kb, kc = [p[0] for p in a], [p[0] for p in b], [p[0] for p in c]
    assert ka[:-3] == kb[:-3] and ka[-3] != kb[-3]  # only the last inverted residual differs
    assert "kernel=7" in kb[-3] and "hidden=960" in kb[-3] and "se=240ReLU" not in kb[-3]
    assert "Hardsigmoid" in kb[-3] and not set(ka) & set(kc)  # another resolution: other keys


def test_prediction_is_the_sum_of_entries(small, monkeypatch, tmp_path):
    monkeypatch.setattr(lt, "time_part", fake_time)
    table = lt.LatencyTable("eager", 2, flush=False)
    n = table.measure([small], 224, progress=False)
    parts = lt.model_parts(small, 224)
    assert n == len({p[0] for p in parts}) == len(table.entries)
    want = table.overhead_ms + sum(np.prod(p[3]) / 1e5 + 0.01 - table.overhead_ms for p in parts)
    assert table.predict(small, 224) == pytest.approx(want)
    assert table.measure([small], 224, progress=False) == 0  # nothing new to measure
    path = table.save(tmp_path / "t.json")
    again = lt.LatencyTable.load(path)
    assert again.predict(small, 224) == pytest.approx(want)
    with pytest.raises(ValueError, match="not in the eager table"):
        again.predict(lt.fused_model("mobilenetv3_small_100"), 224)


def test_bad_tables_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="is not a latency table"):
        lt.LatencyTable.load(bad)
    with pytest.raises(FileNotFoundError, match="lut build"):
        lt.LatencyTable.load(tmp_path / "none.json")
    other = lt.LatencyTable("eager", 2, entries={"k": {"ms": 1.0}}, overhead_ms=0.0)
    d = other.to_dict()
    d["key"]["cpu"] = "some other CPU"
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="another device"):
        lt.LatencyTable.load(bad)
    with pytest.raises(ValueError, match="latency table covers"):
        lt.model_parts(mobilevision.create_model("convnextv2_atto"))
    assert main(["lut", "predict", "mobilenetv3_small_100", "--table", str(bad)]) == 2


@pytest.mark.slow  # builds and fuses the 12 uniform models of the space
def test_space_costs_sum_matches_the_table(monkeypatch):
    monkeypatch.setattr(lt, "time_part", fake_time)
    table = lt.LatencyTable("eager", 2, flush=False)
    costs = se.space_costs(table, 64, progress=False)
    layers = [list(se.CHOICES[i % len(se.CHOICES)]) for i in range(14)]
    model = lt.fused_model("moga_searched", layers=layers)
    assert costs.latency(layers) == pytest.approx(table.predict(model, 64))
    assert costs.params(layers) == sum(p.numel() for p in mobilevision.create_model("moga_searched", layers=layers)
                                       .parameters())


def test_weighted_fitness_and_budget():
    f = se.weighted_fitness([3.0, 2.0, 1.0], [1.0, 1.0, 5.0], [10, 10, 10], budget_ms=4.0)
    assert f[0] > f[1] and f[2] == -np.inf
    # a budget below the fastest architecture: one line with its latency
    costs = se.SpaceCosts(5.0, 0, [{c: 1.0 for c in se.CHOICES}] * 14, [{c: 1 for c in se.CHOICES}] * 14)
    with pytest.raises(ValueError, match="fastest one takes 19.00 ms"):
        se.evolve(costs, 10.0, torch.zeros(2, 3, 32, 32), progress=False)


def test_evolve_respects_the_budget(monkeypatch):
    rng = np.random.default_rng(0)
    ms = [{c: float(c[0] * c[1]) / 10 + (0.2 if c[2] else 0) for c in se.CHOICES} for _ in range(14)]
    costs = se.SpaceCosts(1.0, 1000, ms, [{c: c[0] * c[1] * 100 for c in se.CHOICES}] * 14)
    # proxy: bigger kernels / expansions score higher, so the search pushes against the budget
    monkeypatch.setattr(se, "naswot_score", lambda layers, x, seed=0: float(sum(t * k for t, k, _ in layers))
                        + float(rng.random()) * 1e-3)
    r = se.evolve(costs, 40.0, torch.zeros(1), population=8, generations=5, progress=False)
    assert r.latency_ms <= 40.0 and costs.latency(r.layers) == pytest.approx(r.latency_ms)
    assert r.proxy > 14 * 9  # better than all-3x3-expansion-3
    specs = r.block_specs()
    assert [s["kernel"] for s in specs if s["kind"] == "ir"] == [k for _, k, _ in r.layers]


def test_moga_searched_defaults_to_moga_c():
    a, c = mobilevision.create_model("moga_searched"), mobilevision.create_model("moga_c")
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in c.parameters())
    assert MOGA_C_LAYERS[5] == [3, 5, 0]
    with pytest.raises(ValueError, match="14 rows"):
        mobilevision.create_model("moga_searched", layers=[[3, 3, 0]])


@pytest.mark.slow  # builds the model twice (~10 s on a loaded 2-core machine)
def test_naswot_prefers_separable_inputs():
    x = se.digits_batch(8, 32)
    s = se.naswot_score(MOGA_C_LAYERS, x)
    assert np.isfinite(s) and s > 0
    assert se.naswot_score(MOGA_C_LAYERS, x[:1].expand(8, -1, -1, -1).contiguous()) < s  # 8 equal images


def test_cache_states_flush_what_they_say(monkeypatch):
    monkeypatch.setattr(lt, "last_level_cache_bytes", lambda: 2**20)  # a 1 MiB cache
    assert lt.cache_preparation("hot") is None
    warm, cold, stem = lt.cache_preparation("warm"), lt.cache_preparation("cold"), lt.cache_preparation("cold", False)
    # L2-sized, twice the last-level cache; the cold state reads its input back unless it is the stem's image
    assert [f.buf.nbytes for f in (warm, cold, stem)] == [8 * 2**20, 2 * 2**20, 2 * 2**20]
    assert (warm.read_input, cold.read_input, stem.read_input) == (False, True, False)
    reads = []

    class Watched(torch.Tensor):
        def sum(self, *a, **k):
            reads.append(1)
            return super().sum(*a, **k)
    x = torch.zeros(4).as_subclass(Watched)
    before = cold.buf.copy()
    cold(x), stem(x), warm(x)
    assert reads == [1] and (cold.buf == before + 1).all()
    with pytest.raises(ValueError, match="hot, warm, cold"):
        lt.cache_preparation("lukewarm")


def test_flushing_states_size_their_rounds_with_the_flush(monkeypatch):
    monkeypatch.setattr(lt, "last_level_cache_bytes", lambda: 2**20)
    seen = {}

    def capture(round_fn, **kw):
        seen[len(seen)] = kw
        return {"median_ms": 1.0}
    monkeypatch.setattr(lt, "stable_time", capture)
    for cache in ("hot", "cold"):
        lt.time_part(torch.nn.ReLU(), (1, 4, 8, 8), threads=1, cache=cache)
    assert "between_ms" not in seen[0] and seen[1]["between_ms"] > 0


def test_cold_fraction_is_fitted_on_the_calibration_models(monkeypatch, tmp_path):
    """With whole-model times made from a known f = a + b P + c A, `measure` recovers (a, b, c) from the
    calibration models alone, and a zoo model's prediction mixes its warm and cold sums by its own f."""
    monkeypatch.setattr(lt, "last_level_cache_bytes", lambda: 32 * 2**20)
    coef = (0.05, 0.2, 0.15)  # f stays inside (0, 1) over the calibration models
    table = lt.LatencyTable("eager", 1)

    def f_of(model, size):
        p, a = lt.footprint(model, size)
        return coef[0] + coef[1] * p / 2**25 + coef[2] * a / 2**25

    def fake(part, shape, runtime="eager", threads=2, clock="wall", cache="hot", input_warm=True, **kw):
        if shape[1] == 3 and hasattr(part, "blocks") and cache == "hot":  # a whole model
            warm, cold = table._sums(part, shape[-1])
            return {"median_ms": warm + f_of(part, shape[-1]) * (cold - warm), "spread": 0.0}
        return fake_time(part, shape, runtime, threads, clock, cache)

    monkeypatch.setattr(lt, "time_part", fake)
    model = lt.fused_model("mobilenetv3_small_minimal_100")
    table.measure([model], 96, progress=False)
    assert len(table.cache_model["rows"]) == (len(lt.CALIBRATION_CHOICES) * len(lt.CALIBRATION_SIZES)
                                              * len(lt.CALIBRATION_CLASSES))
    assert table.cache_model["coef"] == pytest.approx(coef, abs=1e-6)
    warm, cold = table._sums(model, 96)
    f = table.cold_fraction(model, 96)
    assert 0 < f < 1 and table.predict(model, 96) == pytest.approx(warm + f * (cold - warm))
    again = lt.LatencyTable.load(table.save(tmp_path / "t.json"))
    assert again.predict(model, 96) == pytest.approx(table.predict(model, 96))
