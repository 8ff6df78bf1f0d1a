"""What crop IoU can GLSim's box reach at all? The arithmetic behind the demo's crop IoU column.

GLSim's box spans the top-k patches of its CLS-patch similarity; the official code slices the last row and column
off (``include_last=False``) but keeps at least one patch, so a selection spanning ``r x c`` patches gives a box
of ``max(r - 1, 1) x max(c - 1, 1)`` patches (for top-1 both rules give the same box). This script takes the demo's test boxes (no model, no training) and reports the mean IoU with the true
detail box of:

- a *perfect* similarity (each patch's share of the detail), its top-k, with the official box and with the
  last row and column kept;
- the best box any selection of patches can give, with each box rule (the span of every patch the detail touches).

    python benchmarks/glsim_box_arithmetic.py            # the demo: a 31 px detail on 128 px images, top-8
    python benchmarks/glsim_box_arithmetic.py --hard --top-k 2
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from fgvc.layers.geometry import PatchGrid, box_iou_pairs
from fgvc.studies.demo import FULL, HARD


def span_cells(touched: torch.Tensor) -> torch.Tensor:
    """(B, 2) flat indices of the first and last corner of the span of the True cells of (B, rows, cols) masks:
    ``PatchGrid.box`` of them is the box of the whole span, under either box rule."""
    rows, cols = touched.any(2), touched.any(1)  # (B, rows), (B, cols)
    first_r, last_r = rows.float().argmax(1), rows.shape[1] - 1 - rows.flip(1).float().argmax(1)
    first_c, last_c = cols.float().argmax(1), cols.shape[1] - 1 - cols.flip(1).float().argmax(1)
    n_cols = touched.shape[2]
    return torch.stack([first_r * n_cols + first_c, last_r * n_cols + last_c], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hard", action="store_true", help="the hard setting (a 7 px detail)")
    parser.add_argument("--top-k", type=int, default=8, help="patches GLSim keeps (default: 8, official)")
    parser.add_argument("--detail-px", type=int, default=None, help="another detail side (px)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    s = HARD if args.hard else FULL
    if args.detail_px is not None:
        s = replace(s, detail_px=args.detail_px)
    s = replace(s, seed=args.seed)
    test = s.splits()["test"]
    patch = 8  # fgvc_synth_vit_tiny's patch size
    grid = PatchGrid(s.img_size // patch, s.img_size // patch, (patch, patch))
    boxes = test.input_boxes * s.img_size  # (N, 4) true detail boxes, pixels
    cover = grid.coverage(boxes)  # (N, rows, cols): each patch's share of the detail
    ties = 1e-6 * torch.rand(cover.shape, generator=torch.Generator().manual_seed(0))  # break ties at random

    def iou(pred: torch.Tensor) -> float:
        return box_iou_pairs(pred.float(), boxes).mean().item()

    print(f"{len(test)} test boxes of a {s.detail_px} px detail on {s.img_size} px images, {patch} px patches")
    print("| box | official (last row and column dropped) | last row and column kept |")
    print("|---|---|---|")
    perfect = [iou(grid.top_box(cover + ties, args.top_k, include_last=last)) for last in (False, True)]
    print(f"| top-{args.top_k} of a perfect similarity | {perfect[0]:.2f} | {perfect[1]:.2f} |")
    best = [iou(grid.box(span_cells(cover > 0), include_last=last)) for last in (False, True)]
    print(f"| the span of every patch the detail touches (best possible) | {best[0]:.2f} | {best[1]:.2f} |")


if __name__ == "__main__":
    main()
