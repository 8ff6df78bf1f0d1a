"""Is GLSim's selection or the backbone's reading what limits it on the synthetic benchmark?

GLSim with an *oracle* box: the crop pass re-encodes a box centred on the true detail (found from the pixels:
only the detail's frame is pure white), ``--oracle-side`` pixels wide, instead of the box its CLS-patch
similarity selects. Everything else (backbone, aggregator, head, schedule, data) is ``fgvc demo``'s. If the
oracle scores far above GLSim, selection is the bottleneck; if it scores about the same, reading is.

    python benchmarks/glsim_oracle_crop.py --hard --oracle-side 24 --seeds 0
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import replace

import torch
from torch import Tensor

from fgvc.methods.base import list_models, register_model
from fgvc.methods.glsim import GLSim
from fgvc.methods.output import ModelOutput
from fgvc.studies.demo import FULL, HARD, format_table, run_demo

ORACLE = "glsim_oracle"


class OracleGLSim(GLSim):
    """GLSim whose crop box is centred on the true detail (``oracle_side`` px wide, at least the detail)."""

    oracle_side: int = 24

    def forward(self, x: Tensor) -> ModelOutput:  # (B, 3, H, W), normalised with mean = std = 0.5
        bb = self.backbone
        tokens = bb(x).tokens
        similarity, _ = self.select(tokens.detach())
        boxes = self.oracle_boxes(x)
        z = self.aggregator(torch.stack([bb.global_token(tokens), self.crop_pass(x, None, boxes)], dim=1))
        z = self.aggregator_norm(z)[:, 0]
        return ModelOutput(logits=self.head(z), embedding=z, boxes=boxes, selection_map=similarity)

    def oracle_boxes(self, x: Tensor) -> Tensor:
        """(B, 4) boxes in input pixels around the pure-white frame, grown to ``oracle_side``."""
        h, w = x.shape[-2:]
        white = (x > 0.999).all(1)  # (B, H, W): pixel value 255 in every channel
        boxes = []
        for mask in white:
            ys, xs = mask.nonzero(as_tuple=True)
            if len(ys) == 0:  # no frame visible: the whole image
                boxes.append([0, 0, w, h])
                continue
            x0, x1, y0, y1 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
            side_x, side_y = max(x1 - x0, self.oracle_side), max(y1 - y0, self.oracle_side)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            bx0 = int(min(max(round(cx - side_x / 2), 0), w - side_x))
            by0 = int(min(max(round(cy - side_y / 2), 0), h - side_y))
            boxes.append([bx0, by0, bx0 + side_x, by0 + side_y])
        return torch.tensor(boxes, dtype=torch.long, device=x.device)  # whole pixels, as GLSim's boxes


def register_top_k(k: int) -> str:
    """Register ``glsim_top{k}``: GLSim whose selection keeps the ``k`` most similar patches, with the box's
    last row and column included (``inclusive_box``: the official exclusive end drops them, at least one patch
    kept, so two neighbouring patches give a one-patch box; for k = 1 the two rules give the same box)."""
    name = f"glsim_top{k}"
    if name not in list_models():

        class TopK(GLSim):
            __init__ = functools.partialmethod(GLSim.__init__, top_k=k, inclusive_box=True)  # options stay visible

        TopK.__name__ = f"GLSimTop{k}"
        register_model(name)(TopK)
    return name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hard", action="store_true", help="the demo's hard setting (7 px detail)")
    parser.add_argument("--oracle-side", type=int, default=24, help="side of the oracle box in pixels")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default=f"glsim,{ORACLE}")
    parser.add_argument("--top-k", default="", help="also standard GLSim with these top-k, e.g. 1,2,4")
    parser.add_argument("--out", default="runs/glsim_oracle")
    args = parser.parse_args(argv)
    if ORACLE not in list_models():
        register_model(ORACLE)(OracleGLSim)
    OracleGLSim.oracle_side = args.oracle_side
    methods = [m for m in args.methods.split(",") if m]
    methods += [register_top_k(int(k)) for k in args.top_k.split(",") if k]
    settings = replace(HARD if args.hard else FULL, methods=tuple(methods))
    rows = run_demo(settings=settings, seeds=[int(s) for s in args.seeds.split(",")], out_dir=args.out,
                         progress=False)
    print(f"oracle box side {args.oracle_side} px, detail {settings.detail_px} px")
    print(format_table(rows))


if __name__ == "__main__":
    main()
