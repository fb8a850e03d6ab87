"""Core ML export (`.mlpackage`, an ML program) with `coremltools` from the `torch.export` program, and what can be
checked of it off macOS (Core ML prediction needs macOS; nothing here runs the package).

Precision: Core ML ML programs compute in fp16 by default. The exported FP32 graph has no casts (GRN computes in
float32 only when its input is low precision), so in a plain fp16 program GRN's L2 norm (a sum of squares over
H x W: 3136 terms at 56 x 56), LayerNorm's variance and GroupNorm's (over C x H x W) would be accumulated in fp16,
whose largest value is 65504: the inf / NaN outputs behind users' "detects nothing" reports. `export_coreml` keeps
those ops (`FP32_OPS`: reduce_l2_norm, layer_norm and the reductions / squares GroupNorm lowers to) in fp32 and
everything else in fp16, and checks on this machine (`coreml_report`): the op set, the tensor ranks (none above 5),
that the norm ops really take fp32 inputs in the converted program, and the fp16 ranges of the model's activations
measured in PyTorch (`fp16_ranges`).
"""
from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .export import METADATA_KEY, ExportResult, _quiet_export, export_metadata, prepare_export
from .profiling import eval_pass

FP16_MAX = 65504.0
# MIL op types kept in fp32 inside the fp16 program: they accumulate (squares) over many elements. GRN lowers to
# reduce_l2_norm, LayerNorm to layer_norm, PoolFormer's GroupNorm(1) to reduce_mean / square / sqrt over C x H x W
FP32_OPS = ("reduce_l2_norm", "layer_norm", "reduce_mean", "reduce_sum", "reduce_sum_square", "square", "sqrt")
# aten ops coremltools 9 has no converter for in a torch.export program: decomposed first
_DECOMPOSE = ("addcmul",)


def export_coreml(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int, int] | None = None,
                  dynamic: bool = False, fuse_first: bool = True, metadata: dict | None = None,
                  precision: str = "fp16", fp32_ops: Sequence[str] = FP32_OPS) -> ExportResult:
    """Convert `model` (fused first unless `fuse_first=False`) to a Core ML ML program at `path` (.mlpackage).

    `torch.export` at (1, C, H, W) (Core ML's static shapes; `dynamic` is refused: prediction cannot be checked
    here for other shapes) -> `coremltools.convert(convert_to="mlprogram", minimum_deployment_target=iOS17)`.
    `precision`: "fp16" (fp16 compute, the `fp32_ops` MIL op types kept in fp32) or "fp32". The metadata goes in
    the package's user-defined metadata. The result's `graph` is `coreml_report`'s (ops, ranks, fp32 ops, fp16
    ranges); RuntimeError if a tensor has rank > 5 or a norm op computes in fp16."""
    with contextlib.redirect_stderr(io.StringIO()):  # "Failed to load _MLModelProxy": no Core ML framework here
        import coremltools as ct

    if dynamic:
        raise ValueError("Core ML export here is static (batch 1, the export size): leave out --dynamic")
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"Core ML precision must be fp16 or fp32, got {precision!r}")
    model, cfg, path, example = prepare_export(model, path, input_size, fuse_first, ".mlpackage", "Core ML package")
    c, h, w = cfg.input_size
    from torch._decomp import get_decompositions

    table = get_decompositions([getattr(torch.ops.aten, op) for op in _DECOMPOSE])
    program = _quiet_export(torch.export.export, model, (example,)).run_decompositions(table)
    if precision == "fp16":
        keep = tuple(fp32_ops)
        compute = ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type not in keep)
    else:
        compute = ct.precision.FLOAT32
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars
        ml = _quiet_export(ct.convert, program, convert_to="mlprogram", compute_precision=compute,
                           minimum_deployment_target=ct.target.iOS17,
                           inputs=[ct.TensorType(name="input", shape=(1, c, h, w), dtype=np.float32)])
    report = coreml_report(ml)
    report["compute_precision"] = precision + (f" ({', '.join(keep)} in fp32)" if precision == "fp16" and keep
                                               else "")
    report["fp16"] = fp16_ranges(model, cfg)
    problems = []
    if report["max_rank"] > 5:
        problems.append(f"tensors of rank > 5: {report['high_rank'][:3]}")
    if precision == "fp16" and report["fp16_norm_ops"]:
        problems.append(f"norm ops computing in fp16: {report['fp16_norm_ops'][:3]}")
    if precision == "fp16" and report["fp16"]["over_fp16"]:
        problems.append(f"activations over fp16's {FP16_MAX:g} (inf in an fp16 program): "
                        f"{report['fp16']['over_fp16'][:3]}")
    if problems:
        raise RuntimeError(f"Core ML program {path} is not portable: {'; '.join(problems)}")
    meta = export_metadata(model, cfg, {"exporter": "coremltools.convert(torch.export)", "precision": precision,
                                        "dynamic_dims": [], **(metadata or {})})
    ml.user_defined_metadata[METADATA_KEY] = json.dumps(meta)
    ml.short_description = f"{meta['model'] or 'mobilevision model'}: (1, {c}, {h}, {w}) -> logits"
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    ml.save(str(path))
    return ExportResult(path, "coreml", [], (c, h, w), None, report)


def _walk(block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk(inner)


def coreml_report(ml) -> dict:
    """Op counts, tensor ranks and per-op compute dtypes of a converted ML program (`MLModel._mil_program`).

    Keys: ops (op type -> count), num_nodes, max_rank, high_rank (op outputs of rank > 5), fp16_ops (count of ops
    with an fp16 floating input), fp32_ops (op type -> count of ops computing in fp32, casts excluded),
    fp16_norm_ops (names of `FP32_OPS`-type ops whose input is fp16: should be empty)."""
    from coremltools.converters.mil.mil import types

    prog = ml._mil_program
    if prog is None:
        raise RuntimeError("the Core ML model carries no MIL program (load it from its conversion, not from disk)")
    ops: collections.Counter = collections.Counter()
    fp32: collections.Counter = collections.Counter()
    high, fp16_norm = [], []
    max_rank, n_fp16 = 0, 0
    for fn in prog.functions.values():
        for op in _walk(fn):
            ops[op.op_type] += 1
            for out in op.outputs:
                if out.shape is not None:
                    max_rank = max(max_rank, len(out.shape))
                    if len(out.shape) > 5:
                        high.append(f"{out.name} (rank {len(out.shape)})")
            x = op.inputs.get("x") if op.op_type not in ("const", "cast") else None
            if x is None or not hasattr(x, "dtype"):
                continue
            if x.dtype == types.fp16:
                n_fp16 += 1
                if op.op_type in FP32_OPS:
                    fp16_norm.append(op.name)
            elif x.dtype == types.fp32:
                fp32[op.op_type] += 1
    return {"ops": dict(sorted(ops.items())), "num_nodes": sum(ops.values()), "max_rank": max_rank,
            "high_rank": high, "fp16_ops": n_fp16, "fp32_ops": dict(sorted(fp32.items())),
            "fp16_norm_ops": fp16_norm}


def fp16_ranges(model: nn.Module, cfg, images: torch.Tensor | None = None) -> dict:
    """What an fp16 program would hold, measured in PyTorch on scikit-image's photos (preprocessed with `cfg`) and
    two random inputs.

    FP32 pass with forward hooks on every leaf module: the largest |output| of any module (over `FP16_MAX` means
    inf in fp16), and, for the norm layers Core ML would otherwise run in fp16 (GRN, LayerNorm), the largest
    accumulated sum of squares they compute (GRN: sum over H x W of x^2 per channel; LayerNorm: sum over the
    normalised dims of (x - mean)^2). Then the model in half precision on the same inputs: which modules give
    non-finite outputs, and the top-1 agreement with FP32. Keys: max_abs_activation, worst_module,
    norm_sum_squares (max over GRN / LayerNorm), norm_sum_squares_module, over_fp16 (modules over FP16_MAX),
    nonfinite_modules (half pass), top1_agree."""
    import copy

    from mobilevision.layers.grn import GRN
    from mobilevision.layers.norms import LayerNorm2d

    from .inference import preprocess, sample_photos

    if images is None:
        c, h, w = cfg.input_size
        pics = [preprocess(p, cfg) for p in sample_photos().values()]
        rand = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
        images = torch.cat([torch.stack(pics), rand]) if pics else rand
    stats: dict[str, float] = {}
    sums: dict[str, float] = {}

    def hook(name):
        def fn(mod, inp, out):
            if torch.is_tensor(out) and out.is_floating_point():
                stats[name] = max(stats.get(name, 0.0), float(out.detach().float().abs().max()))
            x = inp[0] if inp and torch.is_tensor(inp[0]) else None
            if x is None:
                return
            x = x.detach().float()
            if isinstance(mod, GRN):
                sums[name] = max(sums.get(name, 0.0), float(x.pow(2).sum(dim=(1, 2)).max()))
            elif isinstance(mod, (nn.LayerNorm, nn.GroupNorm)):
                if isinstance(mod, LayerNorm2d):
                    dims = (1,)
                elif isinstance(mod, nn.LayerNorm):
                    dims = tuple(range(-len(mod.normalized_shape), 0))
                else:
                    dims = tuple(range(1, x.ndim))
                xc = x - x.mean(dim=dims, keepdim=True)
                sums[name] = max(sums.get(name, 0.0), float(xc.pow(2).sum(dim=dims).max()))
        return fn

    leaves = [(n, m) for n, m in model.named_modules() if n and (not list(m.children()) or isinstance(m, GRN))]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    with eval_pass(model, handles):
        ref = model(images).float()
    half = copy.deepcopy(model).half().eval()
    bad: list[str] = []

    def check(name):
        def fn(mod, inp, out):
            if torch.is_tensor(out) and out.is_floating_point() and not torch.isfinite(out).all() and not bad:
                bad.append(name)  # the first module going non-finite
        return fn

    handles = [m.register_forward_hook(check(n)) for n, m in half.named_modules() if n and not list(m.children())]
    with eval_pass(half, handles):
        got = half(images.half()).float()
    worst = max(stats, key=stats.get) if stats else None
    worst_norm = max(sums, key=sums.get) if sums else None
    return {"max_abs_activation": stats.get(worst, 0.0) if worst else 0.0, "worst_module": worst,
            "norm_sum_squares": sums.get(worst_norm, 0.0) if worst_norm else 0.0,
            "norm_sum_squares_module": worst_norm,
            "over_fp16": sorted(n for n, v in stats.items() if v > FP16_MAX), "nonfinite_modules": bad,
            "top1_agree": float((got.argmax(-1) == ref.argmax(-1)).float().mean()) if torch.isfinite(got).all()
            else 0.0, "images": int(len(images))}


def read_coreml_metadata(path: str | os.PathLike) -> dict:
    """The mobilevision metadata in a package's user-defined metadata ({} if there is none); loads no model."""
    with contextlib.redirect_stderr(io.StringIO()):
        import coremltools as ct

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Core ML package not found: {path}")
    ml = ct.models.MLModel(str(path), skip_model_load=True)
    text = ml.user_defined_metadata.get(METADATA_KEY)
    return json.loads(text) if text else {}
