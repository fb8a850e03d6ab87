"""`mobilevision profile | bench | export | quantize`: thin layers over `mobilevision.deploy`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import common


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def configure_profile(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    common.add_input_size(p, help="input size (default: the model's default size)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run_profile(args: argparse.Namespace) -> int:
    from mobilevision.deploy.profiling import profile

    info = profile(args.model, args.input_size)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    c, h, w = info["input_size"]
    print(f"{info['model']}  input {c}x{h}x{w}, batch 1")
    print(f"  params        {info['params'] / 1e6:.3f} M")
    print(f"  MACs          {info['macs'] / 1e9:.4f} G")
    print(f"  activations   {_fmt_bytes(info['activation_bytes'])} (sum of layer outputs, fp32), "
          f"largest {_fmt_bytes(info['peak_activation_bytes'])}")
    print(f"\n  {'stage':<6}{'module':<24}{'out shape':>18}{'reduction':>10}{'params(M)':>11}{'GMACs':>9}"
          f"{'cum.GMACs':>11}")
    num = common.or_dash
    for r in info["stages"]:
        shape = "x".join(map(str, r["shape"])) if r["shape"] else "-"
        red = r["reduction"] if r["reduction"] is not None else "-"
        print(f"  {r['stage']:<6}{r['module']:<24}{shape:>18}{red:>10}{num(r['params'], '.3f', 1e6):>11}"
              f"{num(r['macs'], '.4f', 1e9):>9}{num(r['cum_macs'], '.4f', 1e9):>11}")
    return 0


def configure_bench(p: argparse.ArgumentParser) -> None:
    common.add_model(p, multiple=True, help="model names")
    p.add_argument("--backend", default="eager",
                   help="eager, compile or onnxruntime: a latency sweep over batches and sizes (default eager); "
                        "all, openvino, executorch or a comma list (e.g. onnxruntime,openvino): one table across "
                        "runtimes and precisions (FP32, OpenVINO bf16, INT8) with file sizes and, with --data, top-1")
    p.add_argument("--checkpoint", default=None, help="runtime table: weights (a digits-trained one for --data digits)")
    common.add_num_classes(p)
    p.add_argument("--data", default=None, help="runtime table: top-1 on 'digits' (val split) or an ImageFolder dir")
    p.add_argument("--calibration", default=None,
                   help="runtime table: INT8 calibration, 'digits' or a directory (default: --data, else digits)")
    p.add_argument("--num-calibration", type=int, default=128, help="INT8 calibration images (default 128)")
    p.add_argument("--precision", default=None,
                   help="runtime table: comma list of fp32, bf16, int8 (default: every precision of each runtime)")
    common.add_batch_size(p, default="1", sweep=True, help="comma-separated batch sizes, e.g. 1,8 (default 1)")
    common.add_input_size(p, sweep=True, help="input size (default: each model's); 224,256 is a sweep of squares")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch / onnxruntime (default 2)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per point (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="warm-up runs per point (default 5)")
    common.add_output(p, kind="dir", default="bench_results",
                      help="directory for CSV / JSON / PNG (default bench_results)")


def run_bench(args: argparse.Namespace) -> int:
    from mobilevision.deploy.bench import benchmark, format_table, write_results

    if args.runs < 1 or args.warmup < 0:
        raise ValueError(f"--runs must be >= 1 and --warmup >= 0, got {args.runs} / {args.warmup}")
    if args.backend not in ("eager", "compile", "onnxruntime"):
        return _run_runtime_bench(args)
    rows = benchmark(args.model, args.backend, args.batch_size, args.input_size, args.threads, args.warmup, args.runs)
    print(format_table(rows))
    paths = write_results(rows, args.output, stem=f"bench_{args.backend}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _run_runtime_bench(args: argparse.Namespace) -> int:
    from mobilevision.deploy.bench import (_parse_ints, benchmark_runtimes, format_runtime_table, parse_backends,
                                           write_runtime_results)

    backends = parse_backends(args.backend)  # a bad name fails before any work
    batches = _parse_ints(args.batch_size or "1", "batch")
    if args.input_size is not None and len(args.input_size) > 1:
        raise ValueError("the runtime table takes one --input-size (each file is exported at it)")
    size = args.input_size[0] if args.input_size else None
    precisions = [p.strip() for p in args.precision.split(",")] if args.precision else None
    if args.checkpoint and len(args.model) > 1:
        raise ValueError("--checkpoint belongs to one model: give one NAME with it")
    rows = []
    for name in args.model:
        for b in batches:
            rows += benchmark_runtimes(name, backends, args.checkpoint, args.num_classes, args.data, args.calibration,
                                       args.num_calibration, precisions, b, size, args.threads, args.warmup,
                                       args.runs, out_dir=None)
    print(format_runtime_table(rows))
    paths = write_runtime_results(rows, args.output, stem="bench_runtimes")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def configure_export(p: argparse.ArgumentParser) -> None:
    common.add_model(p)
    p.add_argument("--checkpoint", default=None, help="weights file or directory (default: random init)")
    common.add_num_classes(p)
    p.add_argument("--format", default="onnx", choices=("onnx", "openvino", "executorch", "tflite", "coreml"),
                   help="onnx (.onnx, onnxruntime), openvino (.xml + .bin IR, OpenVINO CPU plugin), executorch "
                        "(.pte, XNNPACK delegate), tflite (.tflite, LiteRT interpreter) or coreml (.mlpackage; "
                        "checked, not run, off macOS); default onnx")
    common.add_output(p, required=True, help="output file: .onnx, .xml (openvino), .pte (executorch), .tflite or "
                                             ".mlpackage (coreml)")
    p.add_argument("--int8", action="store_true",
                   help="also write an INT8 copy with the runtime's quantizer (onnxruntime QDQ, NNCF, PT2E + "
                        "XNNPACKQuantizer, PT2E + litert-torch's PT2EQuantizer) next to the output, as "
                        "NAME_int8.SUFFIX")
    p.add_argument("--calibration", default="digits",
                   help="INT8 calibration images: 'digits' or a directory of images (default digits)")
    p.add_argument("--num-calibration", type=int, default=128, help="INT8 calibration images (default 128)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic height / width where the model allows (the batch is always dynamic)")
    common.add_input_size(p, help="export size (default: the checkpoint's or the model's size)")
    p.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "legacy"),
                   help="torch.onnx exporter (auto: dynamo, legacy only if dynamo fails)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--atol", type=float, default=1e-4, help="verification tolerance, relative to max(1, |logit|)")
    p.add_argument("--no-nms", action="store_true",
                   help="detectors: export decoded boxes (B, A, 4) and per-class scores (B, A, C) and leave NMS to "
                        "the caller (TFLite / TensorRT); default: NMS inside the graph (ONNX NonMaxSuppression)")


def run_export(args: argparse.Namespace) -> int:
    import mobilevision
    from mobilevision.data.config import resolve_data_config
    from mobilevision.deploy.export import FORMATS, export_form, export_onnx

    from .infer import _task_of

    suffix = FORMATS[args.format]
    if not str(args.output).lower().endswith(suffix):
        raise ValueError(f"--output {args.output}: give a {suffix} file name for --format {args.format}")
    if args.num_calibration < 1:
        raise ValueError(f"--num-calibration must be >= 1, got {args.num_calibration}")
    model = mobilevision.create_model(args.model, checkpoint_path=args.checkpoint, num_classes=args.num_classes).eval()
    # the export size becomes the model's data config, so the graph's metadata and the check agree
    model.data_config = resolve_data_config(model, input_size=args.input_size)
    if _task_of(args.model) == "detect":
        if args.format != "onnx" or args.int8:
            raise ValueError(f"{args.model} is a detector: only --format onnx without --int8 exports it for now")
        return _export_detector(args, model)
    model = export_form(model)  # a segmenter: one logits tensor (B, classes, H, W) at the input size
    if args.format != "onnx":
        return _export_runtime(args, model)
    res = export_onnx(model, args.output, dynamic=args.dynamic, opset=args.opset, exporter=args.exporter)
    print(f"exported {args.model} -> {res.path} ({_fmt_bytes(res.path.stat().st_size)}) with the "
          f"{res.exporter} exporter, opset {args.opset}; dynamic dims: {', '.join(res.dynamic_dims) or 'none'}")
    if res.fallback_reason:
        print(f"  fell back to the legacy exporter: {res.fallback_reason}")
    g = res.graph
    print(f"  graph: {g['num_nodes']} nodes, max tensor rank {g['max_rank']}, ops: "
          + ", ".join(f"{k} {v}" for k, v in g["ops"].items()))
    _check_export(args, model, res, "onnxruntime")
    if args.int8:
        _int8_copy(args, model, res.path)
    return 0


RUNTIME_NAME = {"onnx": "onnxruntime", "openvino": "OpenVINO (CPU, f32)", "executorch": "ExecuTorch (XNNPACK)",
                "tflite": "LiteRT (XNNPACK)", "coreml": "Core ML (mlprogram; runs on macOS only)"}


def _check_export(args: argparse.Namespace, model, res, runtime: str) -> None:
    """The exported file on `runtime` against the unfused PyTorch model at the export size (and another size where
    H and W are dynamic), one line per size; RuntimeError beyond --atol (relative to max(1, |logit|))."""
    from mobilevision.deploy.export import other_size, verify_exported

    h, w = model.data_config.input_size[1:]
    sizes = [(h, w)]
    if "height" in res.dynamic_dims and "width" in res.dynamic_dims:
        sizes.append(other_size(h, w))
    worst = 0.0
    for r in verify_exported(model, res.path, sizes=sizes, fuse_first=False):
        worst = max(worst, r["max_abs_diff"] / max(1.0, r["max_abs_logit"]))
        print(f"  {runtime} vs PyTorch at {r['size'][0]}x{r['size'][1]} on {r['inputs']:<7}: max abs diff "
              f"{r['max_abs_diff']:.2e} (max |logit| {r['max_abs_logit']:.2f}), top-1 agreement {r['top1_agree']:.2f}")
    if worst > args.atol:
        raise RuntimeError(f"{runtime} outputs differ from PyTorch by {worst:.2e} (> --atol {args.atol})")


def _print_quant(rep, threads: int, title: str = "  INT8") -> None:
    """The title line, then the size, latency and top-1 lines of a QuantizeReport."""
    print(f"{title} -> {rep.int8_path}, calibrated on {rep.calibration_images} images")
    print(f"  size     {rep.fp32_bytes / 2**20:8.2f} MiB -> {rep.int8_bytes / 2**20:8.2f} MiB "
          f"({rep.int8_bytes / rep.fp32_bytes:.2f}x)")
    print(f"  latency  {rep.fp32_ms:8.2f} ms -> {rep.int8_ms:8.2f} ms ({rep.latency_ratio:.2f}x, batch 1, "
          f"{threads} threads)")
    if rep.fp32_top1 is not None:
        print(f"  top-1    {rep.fp32_top1 * 100:7.2f} % -> {rep.int8_top1 * 100:7.2f} % "
              f"({(rep.int8_top1 - rep.fp32_top1) * 100:+.2f} points) on {rep.eval_images} labelled images")
    else:
        print(f"  top-1    no labels matching the model's classes; INT8 agrees with FP32 on "
              f"{rep.top1_agreement * 100:.1f} % of {rep.eval_images} images")


def _export_runtime(args: argparse.Namespace, model) -> int:
    """OpenVINO IR or ExecuTorch program of a classifier / segmenter, verified on its runtime against PyTorch
    (FP32 at the export size and, where H / W are dynamic, another size), plus the --int8 copy."""
    from mobilevision.deploy.export import export_model

    if args.exporter != "auto" or args.opset != 18:
        raise ValueError("--exporter and --opset are ONNX options; leave them out for --format " + args.format)
    if args.format == "coreml" and args.int8:
        raise ValueError("--int8 is not available for --format coreml (Core ML runs on macOS only)")
    res = export_model(model, args.output, args.format, dynamic=args.dynamic)
    extra = {"openvino": f" and {res.path.with_suffix('.bin').name}", "coreml": ""}.get(
        args.format, f" (metadata in {res.path.name}.json)")
    print(f"exported {args.model} -> {res.path}{extra} for {RUNTIME_NAME[args.format]}; dynamic dims: "
          f"{', '.join(res.dynamic_dims) or 'none'}")
    g = res.graph
    if args.format == "coreml":
        return _print_coreml(g)
    if "delegate_calls" in g:
        left = ", ".join(f"{k} {v}" for k, v in g["ops_outside_delegate"].items()) or "none"
        print(f"  {g['delegate_calls']} XNNPACK delegate calls; ops outside the delegate: {left}")
    else:
        print(f"  IR: {g['num_nodes']} ops: " + ", ".join(f"{k} {v}" for k, v in g["ops"].items()))
    _check_export(args, model, res, args.format)
    if args.int8:
        _int8_copy(args, model, res.path)
    return 0


def _print_coreml(g: dict) -> int:
    """What was checked of a Core ML package (its graph report) on this machine (it is not run off macOS)."""
    print(f"  MIL program: {g['num_nodes']} ops, max tensor rank {g['max_rank']}, compute precision "
          f"{g['compute_precision']}; ops: " + ", ".join(f"{k} {v}" for k, v in g["ops"].items()))
    fp16 = g["fp16"]
    print(f"  fp16 ranges (PyTorch, {fp16['images']} images): max |activation| {fp16['max_abs_activation']:.3g} "
          f"({fp16['worst_module']}), modules over fp16's 65504: {len(fp16['over_fp16'])}; largest norm sum of "
          f"squares {fp16['norm_sum_squares']:.3g} ({fp16['norm_sum_squares_module']}, kept in fp32)")
    print(f"  half-precision PyTorch: first non-finite module {fp16['nonfinite_modules'] or 'none'}, top-1 "
          f"agreement with FP32 {fp16['top1_agree']:.2f}")
    print("  not run: Core ML prediction needs macOS")
    return 0


def _int8_copy(args: argparse.Namespace, model, fp32_path: Path) -> None:
    """The --int8 copy beside the FP32 file (NAME_int8.SUFFIX), with its report: ONNX and OpenVINO quantize the
    file; ExecuTorch and LiteRT (PT2E) the model itself, compared with the FP32 file on the calibration source."""
    from mobilevision.deploy.bench import time_exported
    from mobilevision.deploy.export import export_model
    from mobilevision.deploy.quantize import calibration_data, quantize_exported, quantize_report
    from mobilevision.deploy.runtime import load_exported

    out = fp32_path.with_name(f"{fp32_path.stem}_int8{fp32_path.suffix}")
    if args.format in ("onnx", "openvino"):
        _print_quant(quantize_exported(fp32_path, out, args.calibration, args.num_calibration, threads=2), 2)
        return
    calib, x_eval, y_eval = calibration_data(model, args.calibration, args.num_calibration,
                                             getattr(model, "labels", None), getattr(model, "num_classes", None))
    export_model(model, out, args.format, dynamic=args.dynamic, fuse_first=False, calibration=calib)
    rep = quantize_report(fp32_path, out, load_exported(fp32_path), load_exported(out), x_eval, y_eval, calib,
                          args.calibration, time_exported(fp32_path, x_eval[:1], 2)["median_ms"],
                          time_exported(out, x_eval[:1], 2)["median_ms"])
    _print_quant(rep, 2)


def _export_detector(args: argparse.Namespace, model) -> int:
    """A detector as ONNX: raw (boxes + per-class scores, batch and size dynamic) or with NMS inside (batch 1),
    checked with onnxruntime against PyTorch on scikit-image's photos at the export size."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from torchvision.transforms.v2 import functional as TF

    from mobilevision.deploy.export import _quiet_export, graph_report
    from mobilevision.deploy.inference import sample_photos
    from mobilevision.tasks.detect.export import NMSDetector, RawDetector

    if not hasattr(model, "nms_thresh"):  # a set-prediction detector (Mobile-Former DETR) has no NMS to put inside
        args.no_nms = True
    h, w = model.data_config.size
    photos = [TF.resize(TF.to_dtype(TF.to_image(p), torch.float32, scale=True), [h, w], antialias=True)
              for p in sample_photos().values()]  # (3, h, w) in [0, 1]: detectors normalise inside
    wrapper = (RawDetector(model) if args.no_nms else NMSDetector(model)).eval()
    outputs = ["boxes", "scores"] if args.no_nms else ["boxes", "scores", "labels"]
    x = torch.stack(photos[:2]) if args.no_nms else photos[0][None]
    dynamic = ({0: torch.export.Dim("batch", min=1, max=1024)},) if args.no_nms else None
    _quiet_export(torch.onnx.export, wrapper, (x,), str(args.output), dynamo=True, input_names=["images"],
                  output_names=outputs, opset_version=args.opset, dynamic_shapes=dynamic)
    report = graph_report(onnx.load(str(args.output)))
    print(f"exported {args.model} -> {args.output} ({'raw outputs, no NMS' if args.no_nms else 'NMS inside'}); "
          f"graph: {report['num_nodes']} nodes, max tensor rank {report['max_rank']}")
    sess = ort.InferenceSession(str(args.output), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, img in enumerate(photos):
        with torch.no_grad():
            ref = [t.numpy() for t in wrapper(img[None])]
        got = sess.run(None, {"images": img[None].numpy()})
        if any(g.shape != r.shape for g, r in zip(got, ref)):
            raise RuntimeError(f"onnxruntime gives {[g.shape for g in got]} detections, PyTorch "
                               f"{[r.shape for r in ref]}")
        if args.no_nms:
            diff = max(float(np.abs(g - r).max(initial=0.0)) for g, r in zip(got, ref))
        else:  # equal scores may come out in another order: compare the sorted scores
            diff = float(np.abs(np.sort(got[1]) - np.sort(ref[1])).max(initial=0.0))
        worst = max(worst, diff)
        print(f"  onnxruntime vs PyTorch on photo {i}: {len(got[0]) if not args.no_nms else got[0].shape[1]} "
              f"{'detections' if not args.no_nms else 'anchors'}, max abs diff {diff:.2e}")
    if worst > 1e-3:
        raise RuntimeError(f"onnxruntime outputs differ from PyTorch by {worst:.2e} (> 1e-3 pixels / score)")
    return 0


def configure_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx_file", metavar="FILE",
                   help="FP32 file written by `mobilevision export`: .onnx (onnxruntime QDQ) or .xml (OpenVINO, NNCF)")
    p.add_argument("--calibration", required=True,
                   help="'digits' or a directory of images (class subdirs for accuracy)")
    common.add_output(p, required=True, help="output INT8 file (.onnx or .xml, as the input)")
    p.add_argument("--num-calibration", type=int, default=128, help="calibration images (default 128)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime threads for the latency measurement")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights")
    p.add_argument("--full-range", action="store_true",
                   help="8-bit weights (default 7-bit: avoids u8s8 saturation on x86 CPUs without VNNI)")


def run_quantize(args: argparse.Namespace) -> int:
    from mobilevision.deploy.quantize import quantize_exported, quantize_onnx

    if args.num_calibration < 1 or args.threads < 1:
        raise ValueError("--num-calibration and --threads must be >= 1")
    src = str(args.onnx_file).lower()
    if src.endswith(".xml"):
        if not str(args.output).lower().endswith(".xml"):
            raise ValueError(f"--output {args.output}: give a .xml file name for an OpenVINO IR")
        if args.per_tensor or args.full_range:
            raise ValueError("--per-tensor and --full-range are onnxruntime options; NNCF quantizes an IR per "
                             "channel with 8-bit weights")
        rep = quantize_exported(args.onnx_file, args.output, args.calibration, args.num_calibration, args.threads)
        _print_quant(rep, args.threads, "INT8 (NNCF post-training, per-channel weights)")
        return 0
    if src.endswith((".pte", ".tflite")):
        fmt = "executorch" if src.endswith(".pte") else "tflite"
        raise ValueError(f"an {'ExecuTorch program' if fmt == 'executorch' else 'LiteRT model'} is quantized from "
                         f"the model: mobilevision export NAME --format {fmt} --int8 --calibration digits|DIR")
    rep = quantize_onnx(args.onnx_file, args.output, args.calibration, args.num_calibration, args.threads,
                        per_channel=not args.per_tensor, reduce_range=not args.full_range)
    _print_quant(rep, args.threads, f"INT8 (QDQ, {'per-tensor' if args.per_tensor else 'per-channel'} weights)")
    return 0
