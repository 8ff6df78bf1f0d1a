"""Does data loading starve the model? Decoded + augmented images per second with 0, 1 and 2 workers, next
to the model's training throughput at the same input size, measured in the same run.

Images: the real CUB subset in ``../shared/data`` when present (227 x 227 JPEGs, already cropped to the
bird), and a folder of synthetic JPEGs at 500 x 375 written to a temporary folder, the typical size of the
official CUB / Stanford Cars photos (decoding cost grows with the stored size, not the model's input).
``--root`` / ``--dataset`` point at your own copy instead.

Pipeline: the recipes' training transform (resize 1.34 x S, random crop S, flip, TrivialAugmentWide,
RandomErasing 0.3, normalize) through a ``DataLoader`` (batch 32, shuffled, ``pin_memory`` on CUDA); the
loader's first batch (worker start-up) is timed apart. Model: one training step (forward, the method's
loss, backward, AdamW) on random tensors, ``--batch-size`` images, median of ``--repeats``.

If the loader's images/s is below the model's, the GPU (or CPU) waits on data: add workers (each worker
is one CPU core), or pre-resize the dataset. Run on the machine that trains: figures depend on its cores.

    python benchmarks/data_loading.py                               # CUB subset + 500x375 JPEGs, 224 and 448
    python benchmarks/data_loading.py --root data/CUB_200_2011 --dataset cub --device cuda \\
        --backbone vit_base_patch16_224 --img-size 448
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import timed
from PIL import Image
from torch.utils.data import DataLoader

import fgvc
from fgvc.data import build_dataset, build_transforms

REAL_CUB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "CUB_200_2011_subset100"


def write_jpeg_folder(root: Path, count: int, size: tuple[int, int] = (500, 375), classes: int = 10) -> Path:
    """``root/train/<class>/*.jpg``: smooth random images (JPEG-compressible like photos) of ``size``."""
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(count):
        low = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((w, h), Image.BILINEAR)
        path = root / "train" / f"class{i % classes:02d}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=90)
    return root


def loader_rate(dataset, workers: int, batch_size: int, batches: int, pin: bool) -> tuple[float, float]:
    """(images/s after the first batch, seconds to the first batch) of a shuffled DataLoader."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=pin)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            images, _ = next(it)
        except StopIteration:
            break
        seen += len(images)
    return seen / (time.perf_counter() - start), first


def model_rate(method: str, backbone: str, img_size: int, batch_size: int, device: torch.device, repeats: int) -> float:
    """Training images/s of one method (forward + loss + backward + AdamW step) on random tensors."""
    model = fgvc.create_model(method, backbone=backbone, num_classes=200, img_size=img_size).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    y = torch.randint(0, 200, (batch_size,), device=device)

    def step() -> None:
        loss = model.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return batch_size / timed(step, device, repeats=repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="a dataset folder (default: the shared CUB subset)")
    parser.add_argument("--dataset", default="cub", help="its layout (default: %(default)s)")
    parser.add_argument("--img-size", type=int, nargs="+", default=[224, 448], help="input sizes (default: 224 448)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (default: 0 1 2)")
    parser.add_argument("--loader-batch-size", type=int, default=32, help="images per loaded batch (default: 32)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per loader (default: 6)")
    parser.add_argument("--method", default="glsim", help="model whose training throughput is shown")
    parser.add_argument("--backbone", default="deit_tiny_patch16_224", help="timm backbone (random weights)")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch for the model (default: 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed training steps (default: 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic")

    sources: list[tuple[str, str, str]] = []  # (label, layout, root)
    if args.root is not None:
        sources.append((f"{args.dataset} at {args.root}", args.dataset, args.root))
    elif (REAL_CUB / "images.txt").is_file():
        sources.append(("CUB subset (227x227 JPEG)", "cub", str(REAL_CUB)))
    tmp = tempfile.TemporaryDirectory()
    if args.root is None:
        count = args.loader_batch_size * (args.batches + 2)
        sources.append(("500x375 JPEG (official size)", "folder", str(write_jpeg_folder(Path(tmp.name), count))))

    print(f"torch threads {torch.get_num_threads()}, device {device}, loader batch {args.loader_batch_size}")
    print("| images | input | workers | loader images/s | first batch (s) | model train images/s | loader / model |")
    print("|---|---|---|---|---|---|---|")
    for size in args.img_size:
        rate = model_rate(args.method, args.backbone, size, args.batch_size, device, args.repeats)
        transform = build_transforms(
            config, train=True, img_size=size, resize=round(1.34 * size), trivial_augment=True, random_erasing=0.3
        )
        for label, layout, root in sources:
            data = build_dataset(layout, root, "train", transform)
            for workers in args.workers:
                loaded, first = loader_rate(
                    data, workers, args.loader_batch_size, args.batches, pin=device.type == "cuda"
                )
                print(
                    f"| {label} | {size} | {workers} | {loaded:.0f} | {first:.2f} | {rate:.1f} "
                    f"({args.method}, {args.backbone}) | {loaded / rate:.2f} |"
                )
    tmp.cleanup()


if __name__ == "__main__":
    main()
