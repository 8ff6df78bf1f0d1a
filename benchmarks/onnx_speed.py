"""CPU inference throughput of an ``fgvc export --onnx`` file in onnxruntime against the same model in PyTorch.

For ``vit`` and ``glsim`` (its two encoder passes and the crop in the exported graph) on one backbone with
random weights (heads included): the model is exported (``fgvc.storage.onnx.export_onnx``), then PyTorch (eager,
``inference_mode``) and onnxruntime take turns on the same batch, one timed run each per round; each ratio is
the median of the rounds' own ratios (onnxruntime images/s over PyTorch's), so that a change of the machine's
load hits both.
Both run on ``--threads`` threads. Prints one table and the load average.

    OMP_NUM_THREADS=1 python benchmarks/onnx_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from _timing import timed

import fgvc
from fgvc.storage.onnx import OnnxModel, export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="deit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per round and side (their median)")
    parser.add_argument("--methods", nargs="+", default=["vit", "glsim"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    print(f"{args.backbone} at {args.img_size} px, batch {args.batch_size}, {args.threads} thread(s), "
          f"torch {torch.__version__}, {args.rounds} rounds; load average before: {os.getloadavg()[0]:.2f}")
    print("| method | PyTorch images/s | onnxruntime images/s | onnxruntime / PyTorch | max abs logit diff |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            model = fgvc.create_model(method, backbone=args.backbone, num_classes=200, img_size=args.img_size,
                                      pretrained=False).eval()
            with torch.no_grad():  # the heads start at zero: random ones, so that the logits differ
                for p in model.parameters():
                    if not p.any():
                        p.normal_(std=0.02)
            onnx_model = OnnxModel(export_onnx(model, Path(tmp) / f"{method}.onnx"), threads=args.threads)
            feed = images.numpy()

            def run_torch(model=model):
                with torch.inference_mode():
                    return model(images).logits

            def run_onnx(onnx_model=onnx_model, feed=feed):
                return onnx_model(feed)["logits"]

            diff = float((run_torch() - torch.from_numpy(run_onnx())).abs().max())
            torch_s, onnx_s = [], []
            for _ in range(args.rounds):
                torch_s.append(timed(run_torch, cpu, args.repeats, warmup=1))
                onnx_s.append(timed(run_onnx, cpu, args.repeats, warmup=1))
            ratio = statistics.median(t / o for t, o in zip(torch_s, onnx_s, strict=True))
            b = args.batch_size
            print(f"| {method} | {b / statistics.median(torch_s):.1f} | {b / statistics.median(onnx_s):.1f} "
                  f"| {ratio:.2f} | {diff:.1e} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
