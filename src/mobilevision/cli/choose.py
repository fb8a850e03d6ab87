"""`mobilevision choose | lut | search`: pick a backbone for this machine and a latency budget."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import common


def _add_measure_args(p: argparse.ArgumentParser, runtimes: tuple[str, ...],
                      size_help: str = "square input size") -> None:
    p.add_argument("--runtime", default="eager", choices=runtimes, help="where latency is measured (default eager)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch / the runtime (default 2)")
    common.add_input_size(p, help=f"{size_help} (default 224)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="wall (default) or cpu: the thread's CPU time, with --threads 1 (robust on a loaded machine)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def configure_choose(p: argparse.ArgumentParser) -> None:
    from mobilevision.deploy.choose import RUNTIMES, TASKS

    p.add_argument("--budget-ms", type=float, required=True, help="latency budget per batch in milliseconds")
    _add_measure_args(p, RUNTIMES)
    common.add_batch_size(p, default=1, help="batch size (default 1)")
    p.add_argument("--task", default="classify", choices=TASKS, help="classify (default); detect / segment: not yet")
    p.add_argument("--family", action="append", default=None,
                   help="restrict to these families (repeatable or a comma list, e.g. mobilenetv3,moga)")
    p.add_argument("--refresh", action="store_true", help="measure again instead of reading the cache")
    p.add_argument("--no-round-robin", action="store_true",
                   help="rank by each model's figure measured alone (skip timing the models near the front again, "
                        "in turn in one run)")
    p.add_argument("--cache-dir", default=None, help="latency cache folder (default $MOBILEVISION_CACHE or "
                                                      "~/.cache/mobilevision)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_output(p, kind="dir", default="choose_results", help="folder for choose.json / .csv / .png "
                                                                    "(default choose_results)")


def _split(values):
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()] or None


def run_choose(args: argparse.Namespace) -> int:
    from mobilevision.deploy.choose import choose, format_choice, write_choice

    size = common.square(args.input_size, "choose") or 224
    c = choose(args.budget_ms, args.runtime, args.threads, size, args.batch_size, families=_split(args.family),
               task=args.task, refresh=args.refresh, cache=args.cache_dir,
               progress=not (args.no_progress or args.json), clock=args.clock, confirm=not args.no_round_robin)
    paths = write_choice(c, args.output)
    if args.json:
        print(json.dumps({**c.to_dict(), "files": {k: str(v) for k, v in paths.items()}}, indent=2))
    else:
        print(format_choice(c))
        print(f"{len(c.measured)} measured now, {len(c.rows) - len(c.measured)} from {c.cache}")
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if c.best is not None else 1


def configure_lut(p: argparse.ArgumentParser) -> None:
    from mobilevision.deploy.latency_table import LUT_RUNTIMES

    p.add_argument("action", choices=("build", "predict"), help="build: measure every block kind of the models; "
                                                                 "predict: a model's latency as the sum of its blocks")
    p.add_argument("models", nargs="*", metavar="NAME",
                   help="models (build default: every MobileNetV1-3 / EfficientNet / MoGA classifier)")
    _add_measure_args(p, LUT_RUNTIMES)
    p.add_argument("--no-flush", action="store_true", help="build: time blocks from a hot cache")
    p.add_argument("--table", default=None, help="table JSON (default: one per device / runtime / threads / clock "
                                                  "in the cache folder)")
    p.add_argument("--model-kwargs", default=None, help="predict: builder kwargs as JSON, e.g. a searched block_specs "
                                                         "file's content (model moga_searched)")
    p.add_argument("--detail", action="store_true", help="predict: print every part's entry")


def _model_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    src = Path(text).read_text() if Path(text).is_file() else text
    try:
        kw = json.loads(src)
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-kwargs must be JSON or a JSON file: {err}") from None
    if not isinstance(kw, dict):
        raise ValueError("--model-kwargs must be a JSON object")
    return kw


def run_lut(args: argparse.Namespace) -> int:
    from mobilevision.deploy.choose import check_clock
    from mobilevision.deploy.latency_table import default_table_path, family_models, fused_model, open_table

    check_clock(args.clock, args.threads)
    args.size = common.square(args.input_size, "lut") or 224
    path = args.table or default_table_path(args.runtime, args.threads, 1, clock=args.clock)
    table = open_table(args.runtime, args.threads, 1, path, clock=args.clock)
    kwargs = _model_kwargs(args.model_kwargs)
    if args.action == "build":
        table.flush = not args.no_flush if not table.entries else table.flush
        models = [fused_model(n, **kwargs) for n in args.models or family_models()]
        n = table.measure(models, args.size, progress=not args.json, on_entry=lambda t: t.save(path))
        table.save(path)
        coef = table.cache_model["coef"] if table.cache_model else None
        msg = {"table": str(path), "added": n, "entries": len(table.entries), "overhead_ms": table.overhead_ms,
               "cold_fraction_coef": coef}
        fit = f"; cold fraction {coef[0]:.3f} + {coef[1]:.3f} P + {coef[2]:.3f} A" if coef else ""
        print(json.dumps(msg) if args.json else f"{n} block kinds measured, {len(table.entries)} in {path}{fit}")
        return 0
    if not args.models:
        raise ValueError("lut predict needs a model: NAME")
    out = []
    for name in args.models:
        model = fused_model(name, **kwargs)
        total, parts = table.predict(model, args.size, detail=True)
        out.append({"model": name, "predicted_ms": total, "cold_fraction": table.cold_fraction(model, args.size),
                    "parts": [{"key": k, "ms": ms} for k, ms in parts]})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for o in out:
        print(f"{o['model']}: {o['predicted_ms']:.2f} ms predicted ({args.runtime}, {args.threads} threads, "
              f"{args.size}px, {args.clock} clock; {len(o['parts'])} parts + {table.overhead_ms:.3f} ms call overhead, "
              f"cold fraction {o['cold_fraction']:.2f})")
        if args.detail:
            for p in o["parts"]:
                print(f"  {p['ms']:8.3f}  {p['key']}")
    return 0


def configure_search(p: argparse.ArgumentParser) -> None:
    from mobilevision.deploy.latency_table import LUT_RUNTIMES

    p.add_argument("--budget-ms", type=float, required=True, help="latency budget (ms, table prediction)")
    _add_measure_args(p, LUT_RUNTIMES, "square input size the latency is for")
    p.add_argument("--table", default=None, help="latency table JSON (default: the cached one of this device)")
    p.add_argument("--population", type=int, default=16, help="population size (default 16)")
    p.add_argument("--generations", type=int, default=8, help="generations (default 8)")
    p.add_argument("--weights", default="1.0,0.6,0.4", help="fitness weights accuracy-proxy,latency,params")
    p.add_argument("--seed", type=int, default=0)
    common.add_output(p, kind="dir", default="search_results", help="folder for searched.json / model_kwargs.json / "
                                                                    "searched.md (default search_results)")


def run_search(args: argparse.Namespace) -> int:
    from mobilevision.deploy.search import search, write_search

    try:
        weights = tuple(float(v) for v in args.weights.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 3:
        raise ValueError(f"--weights takes three numbers (accuracy-proxy, latency, params), got {args.weights!r}")
    if args.population < 4 or args.generations < 1:
        raise ValueError("--population must be >= 4 and --generations >= 1")
    args.size = common.square(args.input_size, "search") or 224
    r = search(args.budget_ms, args.runtime, args.threads, args.size, args.clock, args.table, args.population,
               args.generations, args.seed, weights, progress=not args.json)
    paths = write_search(r, args.output, {"runtime": args.runtime, "threads": args.threads, "clock": args.clock,
                                          "size": args.size})
    train = (f"mobilevision train moga_searched --data digits --recipe digits "
             f"--set 'model_kwargs={json.dumps({'layers': r.layers})}'")
    if args.json:
        print(json.dumps({"layers": r.layers, "predicted_ms": r.latency_ms, "params": r.params, "naswot": r.proxy,
                          "files": {k: str(v) for k, v in paths.items()}, "train": train}))
        return 0
    print(paths["md"].read_text().rstrip())
    print(f"wrote {', '.join(str(p) for p in paths.values())}\ntrain it: {train}")
    return 0
