"""How small can GLSim's crop pass be before accuracy drops? (issue 17: the crop pass's size against top-1)

fgvc's compact-box variant of GLSim (``glsim_top2``: top-2 patches, inclusive box) with its crop re-encoded at a fraction of
the input size (``crop_size``), fine-tuned as ``fgvc demo --hard`` does (same data, schedule, seeds, shipped
backbone). A smaller crop pass is cheaper (its tokens scale with the square of ``crop_size``) but magnifies the
detail less. Also prints each size's share of the encoder's tokens at 224 and 448 px with 16 px patches (the
``fgvc benchmark`` sizes), which sets its throughput against the plain ViT's.

    python benchmarks/glsim_crop_size.py --sizes 0.5,0.5625,0.625,0.75 --seeds 0,1,2
    python benchmarks/glsim_crop_size.py --sizes 0.25,0.375 --learned-pe --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import replace

import torch.nn.functional as F
from torch import Tensor

from fgvc.layers.geometry import crop_and_resize
from fgvc.methods.base import list_models, register_model
from fgvc.methods.glsim import GLSim, resolve_crop_size
from fgvc.studies.demo import FULL, HARD, run_demo, summarize_seeds


def register_crop(size: float, learned_pe: bool = False) -> str:
    """Register ``glsim_top2_crop{size}``: ``glsim_top2`` whose crop pass runs at ``size`` of the input; with
    ``learned_pe`` (``..._pe``), with its own position embedding (``crop_pos_embed="learned"``)."""
    name = f"glsim_top2_crop{size:g}{'_pe' if learned_pe else ''}"
    if name not in list_models():
        pe = "learned" if learned_pe else "resampled"

        class Cropped(GLSim):
            __init__ = functools.partialmethod(
                GLSim.__init__, top_k=2, inclusive_box=True, crop_size=size, crop_pos_embed=pe
            )

        Cropped.__name__ = f"GLSimTop2Crop{size:g}{'PE' if learned_pe else ''}".replace(".", "_")
        register_model(name)(Cropped)
    return name


def register_detail_only(size: float) -> str:
    """Register ``glsim_top2_detail{size}``, a diagnostic: ``glsim_top2`` whose crop is resized to ``size`` of the
    input (what a ``crop_size=size`` pass sees) and back up to full size before its full-size pass. It costs as
    much as full size, but holds only the smaller crop's information at the resolution the backbone was
    pretrained at: if it scores like full size, the smaller pass loses to the unfamiliar input size (and
    resampled position embeddings), not to lost detail."""
    name = f"glsim_top2_detail{size:g}"
    if name not in list_models():

        class DetailOnly(GLSim):
            __init__ = functools.partialmethod(GLSim.__init__, top_k=2, inclusive_box=True)

            def crop_pass(self, x: Tensor, embedded: Tensor | None, boxes: Tensor) -> Tensor:
                bb = self.backbone
                small = resolve_crop_size(size, bb.img_size, bb.patch_size)
                crops = crop_and_resize(x, boxes, small)  # (B, 3, h, w): a crop_size=size pass's input
                crops = F.interpolate(crops, size=bb.img_size, mode="bilinear", align_corners=True)
                return bb.global_token(bb(crops).tokens)

        DetailOnly.__name__ = f"GLSimTop2Detail{size:g}".replace(".", "_")
        register_model(name)(DetailOnly)
    return name


def token_share(size: float, img: int, patch: int = 16) -> float:
    """The crop pass's tokens over the input's, at ``img`` px with ``patch`` px patches (fgvc's rounding)."""
    h, w = resolve_crop_size(size, (img, img), (patch, patch))
    return (h // patch) * (w // patch) / (img // patch) ** 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.5,0.5625,0.625,0.75", help="crop_size fractions, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--detail-only", default="", help="diagnostic: full-size passes fed crops resized to these "
                        "sizes and back (see register_detail_only), comma-separated")
    parser.add_argument("--learned-pe", action="store_true", help="the crop passes with their own position "
                        "embedding (crop_pos_embed='learned')")
    parser.add_argument("--default-setting", action="store_true", help="the demo's 31 px detail instead of --hard's")
    parser.add_argument("--out", default="runs/glsim_crop_size")
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",") if s]
    for size in sizes:
        print(f"crop_size {size:g}: crop pass tokens / encoder tokens {token_share(size, 224):.2f} at 224 px, "
              f"{token_share(size, 448):.2f} at 448 px; at {HARD.img_size} px with 8 px patches "
              f"{token_share(size, HARD.img_size, 8):.2f}")
    methods = [register_crop(s, args.learned_pe) for s in sizes]
    methods += [register_detail_only(float(s)) for s in args.detail_only.split(",") if s]
    settings = replace(FULL if args.default_setting else HARD, methods=tuple(methods))
    rows = run_demo(settings=settings, seeds=[int(s) for s in args.seeds.split(",")], out_dir=args.out,
                    progress=False)
    print(summarize_seeds(rows))


if __name__ == "__main__":
    main()
