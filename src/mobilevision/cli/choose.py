"""`mobilevision choose | lut | search`: pick a backbone for this machine and a latency budget."""
from __future__ import annotations

import argparse
import json

from . import common


def _add_measure_args(p: argparse.ArgumentParser, runtimes: tuple[str, ...]) -> None:
    p.add_argument("--runtime", default="eager", choices=runtimes, help="where latency is measured (default eager)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch / the runtime (default 2)")


# ---------------------------------------------------------------- choose
def configure_choose(p: argparse.ArgumentParser) -> None:
    from mobilevision.deploy.choose import RUNTIMES, TASKS

    p.add_argument("--budget-ms", type=float, required=True, help="latency budget per batch in milliseconds")
    _add_measure_args(p, RUNTIMES)
    p.add_argument("--size", type=int, default=224, help="square input side in pixels (default 224)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--task", default="classify", choices=TASKS, help="classify (default); detect / segment: not yet")
    p.add_argument("--family", action="append", default=None,
                   help="restrict to these families (repeatable or a comma list, e.g. mobilenetv3,moga)")
    p.add_argument("--model", action="append", default=None, help="restrict to these models (repeatable)")
    p.add_argument("--refresh", action="store_true", help="measure again instead of reading the cache")
    p.add_argument("--cache-dir", default=None, help="latency cache folder (default $MOBILEVISION_CACHE or "
                                                      "~/.cache/mobilevision)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_output(p, kind="dir", default="choose_results", help="folder for choose.json / .csv / .png "
                                                                    "(default choose_results)")


def _split(values):
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()] or None


def run_choose(args: argparse.Namespace) -> int:
    from mobilevision.deploy.choose import choose, format_choice, verdict, write_choice

    c = choose(args.budget_ms, args.runtime, args.threads, args.size, args.batch, families=_split(args.family),
               names=_split(args.model), task=args.task, refresh=args.refresh, cache=args.cache_dir,
               progress=not (args.no_progress or args.json))
    paths = write_choice(c, args.output)
    if args.json:
        print(json.dumps({**c.to_dict(), "files": {k: str(v) for k, v in paths.items()}}, indent=2))
    else:
        print(format_choice(c))
        print(f"{len(c.measured)} measured now, {len(c.rows) - len(c.measured)} from {c.cache}")
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    if c.best is None and not args.json:
        return 1
    return 0 if c.best is not None else 1
