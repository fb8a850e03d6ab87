"""`mobilevision models` and `mobilevision info`."""
from __future__ import annotations

import argparse
import json

from . import common


def configure_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. 'mobilenetv3*'")
    p.add_argument("--count", action="store_true",
                   help="also measure params and MACs of each model (on the meta device; about 1 s per model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_models(args: argparse.Namespace) -> int:
    from mobilevision import create_model
    from mobilevision.models.registry import get_config, list_models, published_figures

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; try `mobilevision models` for all of them")
    pub = published_figures()
    rows = []
    for name in names:
        cfg = get_config(name)
        params = macs = None
        if args.count:  # building and counting every model is slow: only on request
            from mobilevision.deploy.profiling import count_on_meta

            params, macs = count_on_meta(lambda: create_model(name), cfg.input_size)
        p = pub.get(name, {})
        rows.append({
            "model": name, "input": cfg.input_size[-1],
            "params_m": params / 1e6 if params is not None else None,
            "gmacs": macs / 1e9 if macs is not None else None,
            "published_params_m": p.get("params_m"), "published_gmacs": p.get("gmacs"), "paper": p.get("paper", ""),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = (f"{'model':<32}{'input':>6}{'params(M)':>11}{'GMACs':>9}{'pub.params':>12}{'pub.GMACs':>11}  "
            "paper (top-1 / MACs / params)")
    print(head)
    print("-" * len(head))
    num = common.or_dash
    for r in rows:
        print(f"{r['model']:<32}{r['input']:>6}{num(r['params_m'], '.3f'):>11}{num(r['gmacs'], '.4f'):>9}"
              f"{num(r['published_params_m'], '.3f'):>12}{num(r['published_gmacs'], '.4f'):>11}  {r['paper']}")
    if not args.count:
        print("(measured params / MACs: add --count)")
    return 0


def configure_info(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def run_info(args: argparse.Namespace) -> int:
    import torch

    from mobilevision import create_model
    from mobilevision.models.registry import get_config, model_info

    info = model_info(args.model)
    cfg = get_config(args.model)
    with torch.device("meta"):
        model = create_model(args.model)
    info["stages"] = [dict(f) for f in model.feature_info]
    info["num_features"] = model.num_features
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['name']}  (family: {info['family']})")
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation"):
        print(f"  {key:<14}{info[key]}")
    if "published" in info:
        pubd = info["published"]
        print(f"  {'published':<14}{pubd['params_m']} M params, {pubd['gmacs']} GMACs; paper: {pubd['paper']}")
        print(f"  {'source':<14}{pubd['source']}")
    w = cfg.weights
    src = w.hf_hub_id or w.url or (w.note or "none")
    print(f"  {'weights':<14}{src}")
    print(f"\n  {'stage':<6}{'module':<28}{'channels':>9}{'reduction':>11}")
    for i, f in enumerate(info["stages"]):
        print(f"  {i:<6}{f['module']:<28}{f['num_chs']:>9}{f['reduction']:>11}")
    print(f"  head features: {info['num_features']}")
    return 0
