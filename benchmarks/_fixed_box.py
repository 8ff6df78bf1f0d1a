"""A cost instrument for the benchmark scripts: GLSim whose box is fixed, so a crop's cost can be set.

With random weights (all the benchmarks use them) GLSim's top-8 patches fall anywhere and their box covers
nearly the whole image, which is the worst case for ``crop_mode="tokens"`` (its cost follows the box). A trained
model's box is smaller and data-dependent. ``glsim_fixed_box`` runs GLSim unchanged (the selection is computed
and its cost counted) but crops the centred box of ``box_side`` of each side (0.5: a quarter of the patches),
so the tokens pass can be timed at a known box size. Registered for these scripts only; not a method.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fgvc.methods.base import list_models, register_model
from fgvc.methods.glsim import GLSim

__all__ = ["FIXED_BOX", "FixedBoxGLSim"]

FIXED_BOX = "glsim_fixed_box"


class FixedBoxGLSim(GLSim):
    """GLSim cropping the centred box of ``box_side`` (a fraction of each side, whole patches); its crop pass is
    ``crop_mode`` (the box's tokens by default), GLSim's other options as given."""

    def __init__(self, *, box_side: float = 0.5, crop_mode: str = "tokens", **options: Any) -> None:
        super().__init__(crop_mode=crop_mode, **options)
        rows, cols = self.backbone.grid_size
        ph, pw = self.backbone.patch_size
        nr, nc = max(round(rows * box_side), 1), max(round(cols * box_side), 1)
        r0, c0 = (rows - nr) // 2, (cols - nc) // 2
        self.register_buffer("fixed_box", torch.tensor([c0 * pw, r0 * ph, (c0 + nc) * pw, (r0 + nr) * ph]),
                             persistent=False)

    @torch.no_grad()
    def select(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        similarity, boxes = super().select(tokens)  # computed as always, then replaced
        return similarity, self.fixed_box.expand_as(boxes).clone()


if FIXED_BOX not in list_models():
    register_model(FIXED_BOX)(FixedBoxGLSim)
