"""onnxruntime CPU latency of our export (fused, dynamo exporter) vs timm's model exported the same way.

    python benchmarks/bench_onnx.py [--models 'mobilenet*'] [--threads 2] [--out bench_onnx.csv]

Both graphs: batch 1, default size, static shapes, opset 18, the same weights; sessions with all graph
optimisations and a fixed intra-op thread count. Ratio = ours / timm (goal <= 1.0).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from peers import each_twin, parse_args, ratio_row, report

from mobilevision.deploy.bench import paired_times
from mobilevision.deploy.export import export_onnx, ort_session


def main() -> None:
    args = parse_args(__doc__, "bench_onnx.csv")
    torch.set_num_threads(args.threads)
    rows = []
    for ours_name, timm_name, ours, ref in each_twin(args):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            c, h, w = ours.default_cfg["input_size"]
            res = export_onnx(ours, tmp / "ours.onnx", input_size=(c, h, w))
            try:
                export_onnx(ref, tmp / "timm.onnx", input_size=(c, h, w), fuse_first=False, exporter="dynamo")
            except Exception as err:  # noqa: BLE001
                print(f"skip {ours_name}: timm export failed: {str(err)[:120]}")
                continue
            x = torch.randn(1, c, h, w).numpy()
            # no spinning: an idle session's spinning threads would steal the CPU from the one being timed
            s_ours = ort_session(res.path, args.threads, spin=False)
            s_timm = ort_session(tmp / "timm.onnx", args.threads, spin=False)
            t_ours, t_timm = paired_times(lambda: s_ours.run(None, {"input": x}),
                                          lambda: s_timm.run(None, {s_timm.get_inputs()[0].name: x}),
                                          args.runs, args.warmup)
        rows.append(ratio_row(ours_name, timm_name, h, args.threads, t_ours, t_timm, exporter=res.exporter,
                              nodes=res.graph["num_nodes"]))
    report(rows, ["nodes"], args.out)


if __name__ == "__main__":
    main()
