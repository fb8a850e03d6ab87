"""GPU paths and GPU throughput against timm, side by side in one run (needs a CUDA device).

For each model: our logits vs timm's with the same weights on the GPU (fp32), torch.compile equality,
then inference and training throughput (bf16 autocast, channels_last) of ours and timm's, as a ratio.

    python benchmarks/gpu_check.py --models mobilenetv3_large_100 convnextv2_atto --batch 128
"""
from __future__ import annotations

import argparse
import csv
import json
import time

import torch

import mobilevision


def _throughput(fn, batch: int, iters: int) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - start)


def _bench_pair(name: str, batch: int, iters: int) -> dict:
    import timm
    from safetensors.torch import save_file

    dev = torch.device("cuda")
    ref = timm.create_model(name).to(dev).eval()
    path = f"/tmp/{name}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in ref.state_dict().items()}, path)
    ours = mobilevision.create_model(name, checkpoint_path=path).to(dev).eval()
    size = ours.default_cfg["input_size"][-1]
    x = torch.randn(8, 3, size, size, device=dev)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
        compiled = torch.compile(ours)
        cdiff = (compiled(x) - ours(x)).abs().max().item()
    row = {"model": name, "size": size, "batch": batch, "max_abs_diff_vs_timm": diff, "compile_max_abs_diff": cdiff}
    xb = torch.randn(batch, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (batch,), device=dev)
    for label, model in (("ours", ours), ("timm", ref)):
        model = model.to(memory_format=torch.channels_last)
        model.eval()

        def infer():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(xb)

        row[f"{label}_infer_img_s"] = _throughput(infer, batch, iters)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        def train_step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(xb), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        row[f"{label}_train_img_s"] = _throughput(train_step, batch, max(5, iters // 2))
    row["infer_ratio_ours_over_timm"] = row["ours_infer_img_s"] / row["timm_infer_img_s"]
    row["train_ratio_ours_over_timm"] = row["ours_train_img_s"] / row["timm_train_img_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[
        "mobilenetv3_large_100", "mobilenetv2_100", "efficientnet_b0", "mobilevit_xxs",
        "convnextv2_atto", "convnext_tiny", "poolformerv2_s12", "caformer_s18"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", default="gpu_check.csv")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check needs a CUDA device")
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.models:
        row = _bench_pair(name, args.batch, args.iters)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        rows.append(row)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
