"""`mobilevision choose`: published top-1, the Pareto front, the latency cache, the CLI verdicts."""
from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

import mobilevision
from mobilevision.cli import main
from mobilevision.deploy import choose as ch
from mobilevision.models.registry import parse_top1, published_figures


def test_every_classifier_has_a_published_top1():
    # not the stand-ins other tests register in this process (all named test_*, some built by our builders)
    shipped = [n for n in mobilevision.list_models() if not n.startswith("test_")
               and mobilevision.get_config(n).builder.__module__.startswith("mobilevision.")]
    classifiers = [n for n in shipped if mobilevision.get_config(n).num_classes == 1000
                   and n != "moga_searched"]  # the search's skeleton: an architecture without a paper
    assert len(classifiers) == 57
    pub = published_figures()
    assert sorted(pub) == sorted(classifiers)
    for n in classifiers:
        top1 = mobilevision.model_info(n)["top1"]
        assert isinstance(top1, float) and 45.0 < top1 < 90.0, n
    assert mobilevision.model_info("mobilenetv3_large_100")["top1"] == 75.2
    assert mobilevision.model_info("efficientnet_b0")["top1"] == 76.3  # "76.3/77.1%": the paper's own figure


def test_parse_top1_forms_and_error():
    assert parse_top1("70.6% / 569M / 4.2M") == 70.6
    assert parse_top1("87.0% (22k) / 60.9G / 350M") == 87.0
    assert parse_top1("78.8/79.1% / 0.70B / 7.8M") == 78.8
    with pytest.raises(ValueError, match="top-1"):
        parse_top1("n/a")


def _brute_front(points):
    def dominated(a):
        la, ta = points[a]
        return any(lb <= la and tb >= ta and (lb < la or tb > ta) for b, (lb, tb) in points.items() if b != a)
    return {n for n in points if not dominated(n)}


def test_pareto_front_matches_brute_force():
    rng = random.Random(0)
    for trial in range(200):
        n = rng.randint(1, 12)
        # coarse values so that ties in latency and in top-1 happen
        points = {f"m{i}": (float(rng.randint(1, 8)), float(rng.randint(60, 66))) for i in range(n)}
        front = ch.pareto_front(points)
        assert set(front) == _brute_front(points), points
        lat = [points[f][0] for f in front]
        acc = [points[f][1] for f in front]
        assert lat == sorted(lat) and all(a <= b for a, b in zip(acc, acc[1:]))


def test_best_under_budget_brute_force():
    points = {"a": (2.0, 60.0), "b": (5.0, 70.0), "c": (4.0, 70.0), "d": (9.0, 80.0)}
    for budget in (1.0, 2.0, 4.5, 5.0, 8.9, 9.0, 100.0):
        inside = {n: p for n, p in points.items() if p[0] <= budget}
        want = max(inside, key=lambda n: (inside[n][1], -inside[n][0])) if inside else None
        assert ch.best_under(points, budget) == want
    assert ch.best_under(points, 5.0) == "c"  # equal top-1: the faster one


def test_stable_time_stops_when_spread_is_small_and_at_the_cap():
    calls = []

    def steady(warmup, runs):
        calls.append(runs)
        return {"median_ms": 10.0, "p90_ms": 11.0}
    r = ch.stable_time(steady, min_rounds=3)
    assert r["stable"] and r["rounds"] == 3 and r["median_ms"] == 10.0
    noisy_values = itertools.cycle([5.0, 20.0, 9.0, 40.0])

    def noisy(warmup, runs):
        v = next(noisy_values)
        return {"median_ms": v, "p90_ms": v}
    r = ch.stable_time(noisy, min_rounds=3, max_rounds=6, max_s=60)
    assert not r["stable"] and r["rounds"] == 6


def test_stable_time_sizes_rounds_with_the_work_between_calls():
    runs = []

    def steady(warmup, n):
        runs.append(n)
        return {"median_ms": 1.0, "p90_ms": 1.0}
    ch.stable_time(steady, probe_ms=1.0, round_ms=300.0)
    ch.stable_time(steady, probe_ms=1.0, round_ms=300.0, between_ms=74.0)
    assert runs == [1, 20, 20, 20, 1, 4, 4, 4]  # the probe call, then 3 rounds; 300 / (1 + 74) = 4


FAKE = {"mobilenetv3_small_100": 3.0, "mobilenetv3_large_100": 6.0, "mobilenetv3_large_075": 4.0,
        "mobilenetv3_small_075": 2.5, "mobilenetv3_large_minimal_100": 7.0, "mobilenetv3_small_minimal_100": 2.0}


class FakeMeasure:
    def __init__(self):
        self.calls = []

    def __call__(self, name, runtime, threads, size, batch, **kw):
        self.calls.append(name)
        return {"median_ms": FAKE[name], "p90_ms": FAKE[name] * 1.1, "spread": 0.01, "load_1m": 0.0}

    def together(self, names, probe_ms, runtime, threads, size, batch, **kw):
        """The round robin of `choose`: the alone figures again."""
        self.calls.append(tuple(names))
        return {n: {"median_ms": probe_ms[n], "p90_ms": probe_ms[n], "spread": 0.0} for n in names}


def test_choose_caches_and_refreshes(tmp_path):
    fake = FakeMeasure()
    kw = {"cache": tmp_path, "measure": fake, "together": fake.together, "progress": False}
    c = ch.choose(4.5, families=["mobilenetv3"], **kw)
    front = ["mobilenetv3_small_minimal_100", "mobilenetv3_small_075", "mobilenetv3_small_100",
             "mobilenetv3_large_075", "mobilenetv3_large_100"]
    assert sorted(fake.calls[:6]) == sorted(FAKE) and fake.calls[6] == tuple(front)  # large_minimal: far off it
    assert c.best == "mobilenetv3_large_075" and c.front == front
    again = ch.choose(4.5, families=["mobilenetv3"], **kw)
    assert len(fake.calls) == 7 and again.measured == [] and again.front == c.front  # a cache hit measures nothing
    ch.choose(4.5, names=["mobilenetv3_large_100"], refresh=True, **kw)
    assert fake.calls[-1] == "mobilenetv3_large_100" and len(fake.calls) == 8  # one candidate: no round robin
    other = ch.choose(4.5, families=["mobilenetv3"], threads=1, **kw)
    assert len(other.measured) == 6  # another thread count is another key
    assert len(list(tmp_path.glob("choose_*.json"))) == 2 and not list(tmp_path.glob("*.tmp"))


def test_near_front_is_the_front_and_what_a_margin_could_put_on_it():
    points = {"a": (2.0, 60.0), "b": (3.0, 70.0), "c": (3.3, 69.0), "d": (4.0, 69.5), "e": (2.1, 59.0)}
    assert ch.pareto_front(points) == ["a", "b"]
    # c and e lose to a model less than 15 % faster; d to b, 33 % faster
    assert ch.near_front(points, 0.15) == ["a", "e", "b", "c"]
    assert ch.near_front(points, 0.0) == ["a", "b"] and ch.near_front(points, 0.5) == ["a", "e", "b", "c", "d"]


def test_choose_ranks_the_near_front_by_one_round_robin(tmp_path):
    """Alone, mobilenetv3_large_075 looks 2 % faster than mobilenetv3_small_100 (and pushes it off the front);
    timed together it is the slower one: the round robin's figures rank them, the alone ones are kept."""
    small, large, minimal = "mobilenetv3_small_100", "mobilenetv3_large_075", "mobilenetv3_large_minimal_100"
    alone = {small: 4.1, large: 4.0, minimal: 9.0}  # top-1 67.4, 73.3, 72.3
    together = {small: 4.2, large: 4.5}
    seen = []

    def measure(name, *a, **k):
        return {"median_ms": alone[name], "p90_ms": alone[name], "spread": 0.01}

    def retime(names, probe_ms, *a, **k):
        seen.append((list(names), dict(probe_ms)))
        return {n: {"median_ms": together[n], "p90_ms": together[n], "spread": 0.02} for n in names}

    kw = {"cache": tmp_path, "measure": measure, "progress": False}
    quick = ch.choose(4.0, names=list(alone), confirm=False, **kw)
    assert quick.front == [large] and quick.best == large
    # a cache without the round robin (written so, or interrupted in it) gets it on the next call, measuring nothing
    c = ch.choose(4.0, names=list(alone), together=retime, **kw)
    assert c.measured == []
    # minimal loses to large, which is more than 15 % faster and more accurate: not timed again
    assert seen == [([large, small], {large: 4.0, small: 4.1})]
    assert c.front == [small, large] and c.best == small
    rows = {r["model"]: r for r in c.rows}
    level = (4.0 / 4.5 + 4.1 / 4.2) / 2  # the median alone / round-robin ratio of the two
    assert rows[large]["latency_ms"] == pytest.approx(4.5 * level) and rows[large]["round_robin_ms"] == 4.5
    assert rows[small]["latency_ms"] == pytest.approx(4.2 * level) and rows[large]["alone_ms"] == 4.0
    assert rows[large]["round_robin"] and not rows[minimal]["round_robin"]
    hit = ch.choose(4.0, names=list(alone), together=lambda *a, **k: pytest.fail("re-timed on a hit"), **kw)
    assert hit.front == c.front and hit.measured == []
    # a call that measures a new model groups and probes by the alone figures, not the last round robin's
    kw["cache"] = tmp_path / "second"
    ch.choose(4.0, names=[small, large], together=retime, **kw)
    ch.choose(4.0, names=list(alone), together=retime, **kw)
    assert seen[1:] == [seen[0], seen[0]]


def test_measure_round_robin_times_each_model_in_blocks():
    names = ["mobilenetv3_small_minimal_100", "mobilenetv3_small_075"]
    r = ch.measure_round_robin(names, {names[0]: 30.0, names[1]: 1000.0}, size=32, threads=1, rounds=2,
                               block_ms=150.0, progress=False)
    assert sorted(r) == sorted(names)
    assert r[names[0]]["runs"] == 2 * 5 and r[names[1]]["runs"] == 2 * 1  # 150 / 30 ms; at least 1 a block
    assert all(v["rounds"] == 2 and v["median_ms"] > 0 and v["spread"] >= 0 for v in r.values())


def test_corrupted_cache_is_measured_again(tmp_path, caplog):
    fake = FakeMeasure()
    c = ch.choose(3.0, names=["mobilenetv3_small_100"], cache=tmp_path, measure=fake, progress=False,
                  together=fake.together)
    path = tmp_path / c.cache.split("/")[-1]
    path.write_text("{not json")
    again = ch.choose(3.0, names=["mobilenetv3_small_100"], cache=tmp_path, measure=fake, progress=False)
    assert again.measured == ["mobilenetv3_small_100"] and "unreadable" in caplog.text
    assert json.loads(path.read_text())["results"]["mobilenetv3_small_100"]["median_ms"] == 3.0


def test_cli_choose_json_png_and_no_match(tmp_path, capsys, monkeypatch):
    fake = FakeMeasure()
    monkeypatch.setattr(ch, "measure_model", fake)
    monkeypatch.setattr(ch, "measure_round_robin", fake.together)
    out = tmp_path / "out"
    argv = ["choose", "--budget-ms", "1.5", "--family", "mobilenetv3", "--cache-dir", str(tmp_path), "--output",
            str(out), "--no-progress"]
    assert main(argv) == 1
    assert "the fastest is mobilenetv3_small_minimal_100 at 2.00 ms" in capsys.readouterr().out
    assert main(argv[:2] + ["6.5"] + argv[3:] + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["best"] == "mobilenetv3_large_100" and (out / "choose.png").stat().st_size > 1000
    assert main(["choose", "--budget-ms", "5", "--task", "segment"]) == 2
    assert "not supported yet" in capsys.readouterr().err


def _fake_cache(tmp_path, lat: dict[str, float]) -> ch.Choice:
    """A cache for `lat`'s models written by choose's own measuring path, with `lat` as the measured medians."""
    def fake(name, runtime, threads, size, batch, **kw):
        return {"median_ms": lat[name], "p90_ms": lat[name] * 1.1, "spread": 0.01, "load_1m": 0.0}

    def together(names, probe_ms, *a, **k):
        return {n: fake(n, *a) for n in names}

    return ch.choose(100.0, names=list(lat), cache=tmp_path, measure=fake, progress=False, together=together)


def test_cli_cache_hit_imports_no_torch(tmp_path):
    """Issue 17: a cached `mobilevision choose` answers from the cache file alone (no torch, torchvision or
    registry), so it takes well under 2 s; the PNG is drawn without them too."""
    import os
    import subprocess
    import sys

    names = sorted(n for n, v in ch.classifiers().items() if v["family"] == "mobilevit")
    assert len(names) == 3
    lat = {n: 1.5 * (i + 1) for i, n in enumerate(names)}  # 1.5, 3.0, 4.5 ms
    _fake_cache(tmp_path, lat)
    top1 = {n: v["top1"] for n, v in ch.classifiers().items()}
    budget = 3.5
    best = ch.best_under({n: (lat[n], top1[n]) for n in names}, budget)
    assert best is not None
    out = tmp_path / "out"
    argv = ["choose", "--budget-ms", str(budget), "--family", "mobilevit", "--cache-dir", str(tmp_path),
            "--output", str(out), "--no-progress"]
    code = ("import sys; from mobilevision.cli import main; rc = main(sys.argv[1:]); "
            "heavy = sorted(m for m in ('torch', 'torchvision', 'scipy', 'mobilevision.models.registry') "
            "if m in sys.modules); print('HEAVY', heavy); sys.exit(rc)")
    src = str(Path(mobilevision.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    for extra in ([], ["--json"]):
        proc = subprocess.run([sys.executable, "-c", code, *argv, *extra], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "HEAVY []" in proc.stdout, proc.stdout[-300:]
        if extra:
            data = json.loads(proc.stdout[:proc.stdout.rindex("HEAVY")])
            assert data["best"] == best and data["measured_now"] == [] and len(data["rows"]) == 3
        else:
            assert f"best under {budget:g} ms: {best} " in proc.stdout and "0 measured now, 3 from" in proc.stdout
    assert (out / "choose.png").stat().st_size > 1000 and json.loads((out / "choose.json").read_text())["best"] == best


def test_cache_keeps_figures_and_upgrades_an_old_file(tmp_path, monkeypatch):
    lat = {"mobilenetv3_small_100": 2.0, "mobilenetv3_large_100": 5.0}
    c = _fake_cache(tmp_path, lat)
    path = tmp_path / c.cache.split("/")[-1]
    stored = ch.read_cache(path, c.key)
    assert stored["figures"] == {n: {f: v[f] for f in ch.FIGURE_FIELDS} for n, v in ch.classifiers().items()}
    # a hit with the stored figures does not read the registry's
    monkeypatch.setattr(ch, "classifiers", lambda: pytest.fail("read published.csv through the registry"))
    assert ch.choose(3.0, names=list(lat), cache=tmp_path, progress=False).best == "mobilenetv3_small_100"
    monkeypatch.undo()
    # another published.csv (or a file from before the figures were kept): the registry's, stored for next time
    data = json.loads(path.read_text())
    data["catalog"] = "0" * 64
    path.write_text(json.dumps(data))
    assert ch.read_cache(path, c.key)["figures"] is None
    again = ch.choose(3.0, names=list(lat), cache=tmp_path, progress=False,
                      measure=lambda *a, **k: pytest.fail("measured on a hit"))
    assert again.measured == [] and ch.read_cache(path, c.key)["figures"] == stored["figures"]


def test_write_choice_draws_only_what_changed(tmp_path, monkeypatch):
    c = _fake_cache(tmp_path, {"mobilenetv3_small_100": 2.0, "mobilenetv3_large_100": 5.0})
    drawn = []
    monkeypatch.setattr(ch, "plot_choice", lambda choice, path: (drawn.append(choice.budget_ms),
                                                                  Path(path).write_bytes(b"png")))
    out = tmp_path / "out"
    ch.write_choice(c, out)
    c.measured = []  # measured_now is not drawn
    ch.write_choice(c, out)
    assert drawn == [100.0] and json.loads((out / "choose.json").read_text())["measured_now"] == []
    c.budget_ms = 3.0
    ch.write_choice(c, out)
    (out / "choose.png").unlink()
    ch.write_choice(c, out)
    assert drawn == [100.0, 3.0, 3.0]
