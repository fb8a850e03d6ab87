"""What the peer benchmarks share: our models paired with timm's twin, loaded with the same weights."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from machine import timing_parser

import mobilevision
from mobilevision.models.registry import published_figures

# A representative set: every family with a timm twin, small and mid sizes ('*' for all).
DEFAULT_SET = ("mobilenetv1_100,mobilenetv2_100,mobilenetv3_large_100,mobilenetv3_small_100,efficientnet_b0,"
               "mobilevit_xxs,mobilevit_s,poolformer_s12,convformer_s18,caformer_s18,convnext_tiny,convnextv2_atto")


def timm_pairs(patterns: str, max_params_m: float) -> list[tuple[str, str]]:
    """(our name, timm name) for models matching comma-separated globs whose published.csv row names a timm
    model that timm has, up to `max_params_m` M params."""
    timm_names, pub = set(timm.list_models()), published_figures()
    names = sorted({n for pat in patterns.split(",") for n in mobilevision.list_models(pat)})
    return [(n, pub[n]["parity_with"]) for n in names
            if n in pub and pub[n]["params_m"] <= max_params_m and pub[n]["parity_with"] in timm_names]


def twins(ours_name: str, timm_name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, timm's) in eval mode with timm's random-init weights loaded into ours."""
    ref = timm.create_model(timm_name, pretrained=False).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
        ours = mobilevision.create_model(ours_name, checkpoint_path=path).eval()
    return ours, ref


def each_twin(args: argparse.Namespace):
    """Yield (our name, timm name, ours, timm's) for the pairs `args.models` / `args.max_params` select; a pair
    that cannot be built is skipped with a line saying why."""
    for ours_name, timm_name in timm_pairs(args.models, args.max_params):
        try:
            ours, ref = twins(ours_name, timm_name)
        except ValueError as err:
            print(f"skip {ours_name}: {str(err)[:120]}")
            continue
        yield ours_name, timm_name, ours, ref


def parse_args(doc: str, out: str) -> argparse.Namespace:
    """The timing options plus --models and --max-params, which `each_twin` reads."""
    p = timing_parser(doc, out)
    p.add_argument("--models", default=DEFAULT_SET, help="comma-separated globs over our model names ('*': all)")
    p.add_argument("--max-params", type=float, default=100.0, help="skip models above this many M params")
    return p.parse_args()


def ratio_row(ours_name: str, timm_name: str, size: int, threads: int, t_ours: dict, t_timm: dict, **extra) -> dict:
    """One result row (ours / timm median latency) and its progress line."""
    row = {"model": ours_name, "timm": timm_name, "size": size, "threads": threads,
           "ours_ms": t_ours["median_ms"], "timm_ms": t_timm["median_ms"],
           "ours_p90_ms": t_ours["p90_ms"], "timm_p90_ms": t_timm["p90_ms"],
           "ratio": t_ours["median_ms"] / t_timm["median_ms"], **extra}
    print(f"{ours_name:<26} ours {row['ours_ms']:8.2f} ms  timm {row['timm_ms']:8.2f} ms  ratio {row['ratio']:.3f}",
          flush=True)
    return row


def report(rows: list[dict], extra_cols: list[str], out: str) -> None:
    """Print the table and write the CSV."""
    from mobilevision.deploy.bench import print_rows, write_csv

    print()
    print_rows(rows, ["model", "size", "ours_ms", "timm_ms", "ratio", *extra_cols])
    write_csv(rows, out)
    print(f"wrote {out}")
