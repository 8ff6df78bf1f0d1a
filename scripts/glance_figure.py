"""Draws docs/images/glance_two_looks.png: GLSim's glance variant, its two looks on four test images.

    HF_HUB_OFFLINE=1 python scripts/glance_figure.py        # docs/images/glance_two_looks.png, CPU, minutes

Fine-tunes ``glsim_glance`` (the global pass at half the input side, the crop cut from the full-resolution
input and encoded at the glance size with its own position embedding) from fgvc's shipped backbone on the
demo's synthetic data with a smaller detail (``--detail-px``, default 24 px of 128: three cells of the glance
grid), then draws ``fgvc.viz.plot_glance`` on the first test images and prints the test top-1 and crop IoU.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

import fgvc
from fgvc.methods.base import resolve_method
from fgvc.studies.demo import FULL
from fgvc.viz import plot_glance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/glance_two_looks.png", help="the PNG (default: %(default)s)")
    parser.add_argument("--train", type=int, default=1000, help="training images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (default: %(default)s)")
    parser.add_argument("--detail-px", type=int, default=24, help="detail side at 128 px (default: %(default)s)")
    parser.add_argument("--images", type=int, default=4, help="test images drawn (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = replace(FULL, train=args.train, val=200, test=300, epochs=args.epochs, detail_px=args.detail_px)
    data = settings.splits()
    method, options = resolve_method("glsim_glance")
    model = fgvc.create_model(method, num_classes=settings.class_count, **settings.model_options(), **options)
    fgvc.fit(model, data["train"], data["val"], **settings.fit_options(), out_dir=None, progress=False)
    model.eval()
    test = data["test"]
    result = fgvc.evaluate(model, test, progress=False)
    print(f"glsim_glance, {args.train} images, {args.epochs} epochs, {args.detail_px} px detail: "
          f"test top-1 {result.top1:.1f}%, crop IoU {result.mean_iou:.3f} ({len(test)} images)")

    n = args.images
    images = torch.stack([test[i][0] for i in range(n)])  # (n, 3, 128, 128)
    h, w = images.shape[-2:]
    gt_boxes = test.input_boxes[:n] * torch.tensor([w, h, w, h])  # true boxes in input pixels
    fig = plot_glance(model, images, mean=test.mean, std=test.std, gt_boxes=gt_boxes,
                      targets=[test[i][1] for i in range(n)], class_names=test.classes, indices=list(range(n)),
                      pyplot=False)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
