"""GLSim's crop: ``crop_and_resize_batched`` (index ops for every box at once) against the per-image loop.

The loop is ``crop_and_resize(batched=False)``, the default in eager CPU mode: ``F.interpolate(bilinear, align_corners=True)`` on each image's slice,
with the boxes read on the host (``boxes.tolist()``, a device sync on GPU). Both run on the same images and
boxes (random patch-aligned boxes, 16 px patches, as GLSim's), taking turns each round (which goes first
alternates); the figures are medians over the rounds and the ratio is the median of the rounds' ratios.

    OMP_NUM_THREADS=1 python benchmarks/crop_batched.py --threads 1
    python benchmarks/crop_batched.py --device cuda --batch-size 8 32 128
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import timed
from torch import Tensor

from fgvc.layers.geometry import crop_and_resize, crop_and_resize_batched


def random_boxes(batch: int, img: int, patch: int, generator: torch.Generator) -> Tensor:
    """(B, 4) boxes (x0, y0, x1, y1) on patch borders, at least one patch, anywhere on an ``img`` px image."""
    cells = img // patch
    start = torch.randint(0, cells, (batch, 2), generator=generator)  # (B, 2) first column, row
    span = 1 + (torch.rand(batch, 2, generator=generator) * (cells - start)).long()  # (B, 2) in [1, cells - start]
    return torch.cat([start, start + span], dim=1) * patch  # (B, 4)


def compare(batch: int, img: int, out: int, device: torch.device, rounds: int, patch: int) -> dict:
    """Median seconds of the loop and of the batched op over ``rounds`` interleaved rounds, and their ratio."""
    g = torch.Generator().manual_seed(batch * 1000 + out)
    images = torch.randn(batch, 3, img, img, generator=g).to(device)  # (B, 3, img, img)
    boxes = random_boxes(batch, img, patch, g).to(device)
    size = (out, out)
    fns = {"loop": lambda: crop_and_resize(images, boxes, size, batched=False),
           "batched": lambda: crop_and_resize_batched(images, boxes, size)}
    diff = (fns["loop"]() - fns["batched"]()).abs().max().item()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        timed(fn, device, repeats=1, warmup=1)
    for r in range(rounds):
        for name in (("loop", "batched") if r % 2 == 0 else ("batched", "loop")):
            times[name].append(timed(fns[name], device, repeats=1, warmup=0))
    ratios = [a / b for a, b in zip(times["loop"], times["batched"], strict=True)]
    return dict(loop=statistics.median(times["loop"]), batched=statistics.median(times["batched"]),
                ratio=statistics.median(ratios), diff=diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 32], help="images per batch")
    parser.add_argument("--img-size", type=int, default=448, help="input size (square)")
    parser.add_argument("--out-size", type=int, nargs="+", default=[224, 448], help="crop sizes (square)")
    parser.add_argument("--patch", type=int, default=16, help="boxes lie on borders of patches of this size")
    parser.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, and cuda if "
                        "available)")
    parser.add_argument("--rounds", type=int, default=21, help="timed rounds per case (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.img_size} px images, "
          f"median of {args.rounds} interleaved rounds\n")
    print("| device | batch | crop | loop (ms) | batched (ms) | loop / batched | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in devices:
        device = torch.device(name)
        for batch in args.batch_size:
            for out in args.out_size:
                r = compare(batch, args.img_size, out, device, args.rounds, args.patch)
                print(f"| {name} | {batch} | {out} | {r['loop'] * 1e3:.2f} | {r['batched'] * 1e3:.2f} | "
                      f"{r['ratio']:.2f} | {r['diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
