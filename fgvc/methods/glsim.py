"""GLSim: global-local similarity for efficient fine-grained recognition (Rios et al., 2024).

Faithful to the official code (arkel23/GLSim, ``glsim/model_utils/glsim.py``):

1. The image goes through the encoder; on the last layer's tokens *after the final norm*, the cosine
   similarity between the CLS token and every patch token is computed.
2. Under ``no_grad``, the top-k patches (default k=8) are selected; their bounding box in patch units is
   ``[row_min, row_max] x [col_min, col_max]``. As in the official code the box ends at ``row_max * P``
   (exclusive), so the last selected row and column fall outside it; a box is at least one patch wide
   (``end = max(end, start + P)``). ``inclusive_box=True`` keeps the last row and column instead
   (``end = (row_max + 1) * P``), which is the box one would naively expect.
3. The box is cut from the model's input tensor (already normalized) and resized bilinearly to the input
   resolution with ``align_corners=True`` (the official ``F.upsample_bilinear``). The official code calls
   the row index ``x``; here boxes are (x0, y0, x1, y1) with x = column, y = row, like torchvision.
4. The crop goes through the *same* encoder (same weights). The two CLS tokens (global, crop) form a
   sequence of two tokens that one pre-norm transformer block (the aggregator) refines; a LayerNorm and one
   linear head on the first token give the logits. One cross-entropy loss trains everything.

``crop_at_inference=False`` skips the crop pass in evaluation (the aggregator then sees the global token
only): plain-ViT cost, usually lower accuracy.

Also as the official code (``glsim/model_utils/transformer.py``, ``glsim.py``):

* stochastic depth: the official ``BlockVanilla`` gives every block the same ``DropPath(sd)`` and the
  aggregator is built with the same ``sd``. ``drop_path_schedule="constant"`` (default) does this with the
  common ``drop_path_rate``: every backbone block and the aggregator drop at that rate.
  ``"linear"`` keeps timm's rule (0 in the first block rising to the rate in the last, none in the aggregator);
* the aggregator starts as the official ``init_weights`` leaves it: Xavier-uniform weights in every linear
  layer (q, k and v each as its own D x D matrix, as the official separate projections) and biases drawn
  from N(0, 1e-6); LayerNorms at ones / zeros. The head starts at zero.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from .base import FGVCModel, ModelOutput, register_model

__all__ = ["GLSim", "cls_patch_similarity", "crop_and_resize", "init_aggregator_official", "select_box"]

DROP_PATH_SCHEDULES = ("constant", "linear")


def cls_patch_similarity(
    tokens: Tensor, num_prefix_tokens: int, grid_size: tuple[int, int], global_token: Tensor | None = None
) -> Tensor:
    """Cosine similarity of the CLS token (index 0) with every patch token.

    tokens: (B, T, D) with T = num_prefix_tokens + rows * cols.  Returns (B, rows, cols).
    global_token: (B, D) used instead of the CLS token (ViTs without one: ``ViTBackbone.global_token``).
    """
    cls = tokens[:, :1] if global_token is None else global_token[:, None]  # (B, 1, D)
    patches = tokens[:, num_prefix_tokens:]  # (B, N, D)
    rows, cols = grid_size
    if patches.shape[1] != rows * cols:
        raise ValueError(f"expected {rows}x{cols}={rows * cols} patch tokens, got {patches.shape[1]}")
    return F.cosine_similarity(cls, patches, dim=-1).reshape(-1, rows, cols)


def select_box(
    similarity: Tensor,
    k: int,
    patch_size: tuple[int, int],
    img_size: tuple[int, int],
    *,
    inclusive: bool = False,
) -> Tensor:
    """Box around the top-k most similar patches, in input pixels.

    similarity: (B, rows, cols).  Returns (B, 4) int64 (x0, y0, x1, y1), ends exclusive. The default
    reproduces the official end ``row_max * P`` (last selected row / column left out, at least one patch
    kept); ``inclusive=True`` ends at ``(row_max + 1) * P``.
    """
    b, rows, cols = similarity.shape
    if not 1 <= k <= rows * cols:
        raise ValueError(f"top_k={k} must be between 1 and the number of patches ({rows}x{cols}={rows * cols})")
    ph, pw = patch_size
    h, w = img_size
    index = similarity.reshape(b, -1).topk(k, dim=-1).indices  # (B, k)
    r, c = index // cols, index % cols  # patch row, column
    r0, r1 = r.amin(-1), r.amax(-1)
    c0, c1 = c.amin(-1), c.amax(-1)
    if inclusive:
        r1, c1 = r1 + 1, c1 + 1
    y0, x0 = r0 * ph, c0 * pw
    y1 = torch.clamp(torch.maximum(r1 * ph, y0 + ph), max=h)
    x1 = torch.clamp(torch.maximum(c1 * pw, x0 + pw), max=w)
    return torch.stack([x0, y0, x1, y1], dim=-1)


def crop_and_resize(images: Tensor, boxes: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Cut each box out of (B, C, H, W) images and resize it to ``size`` (default H, W).

    Bilinear with ``align_corners=True``, as the official ``F.upsample_bilinear``.
    """
    size = tuple(images.shape[-2:]) if size is None else size
    crops = [
        F.interpolate(img[None, :, y0:y1, x0:x1], size=size, mode="bilinear", align_corners=True)
        for img, (x0, y0, x1, y1) in zip(images, boxes.tolist(), strict=True)
    ]
    return torch.cat(crops, dim=0)


@torch.no_grad()
def init_aggregator_official(block: nn.Module) -> None:
    """Xavier-uniform linear weights, N(0, 1e-6) biases (official ``init_weights``); norms reset to 1 / 0.

    timm's fused ``qkv`` (3D x D) is initialised as three D x D matrices, the official separate q, k, v.
    """
    for module in block.modules():
        if isinstance(module, nn.LayerNorm):
            module.reset_parameters()
        elif isinstance(module, nn.Linear):
            out_features, in_features = module.weight.shape
            chunks = 3 if module is getattr(getattr(block, "attn", None), "qkv", None) else 1
            for w in module.weight.split(out_features // chunks, dim=0):
                nn.init.xavier_uniform_(w)
            if module.bias is not None:
                nn.init.normal_(module.bias, std=1e-6)


@register_model("glsim")
class GLSim(FGVCModel):
    """Global-local similarity: crop the patches most similar to CLS, re-encode, aggregate both CLS tokens.

    Options: ``top_k`` (8), ``inclusive_box`` (False: official exclusive end), ``crop_at_inference``
    (True), ``aggregator_heads`` (default ``embed_dim // 64``, at least 1), ``drop_path_schedule``
    (``"constant"``: official, every block and the aggregator at ``drop_path_rate``; ``"linear"``: timm's).
    """

    def __init__(
        self,
        *,
        top_k: int = 8,
        inclusive_box: bool = False,
        crop_at_inference: bool = True,
        aggregator_heads: int | None = None,
        drop_path_schedule: str = "constant",
        **common: Any,
    ) -> None:
        options = dict(
            top_k=top_k,
            inclusive_box=inclusive_box,
            crop_at_inference=crop_at_inference,
            aggregator_heads=aggregator_heads,
            drop_path_schedule=drop_path_schedule,
        )
        if drop_path_schedule not in DROP_PATH_SCHEDULES:
            raise ValueError(f"drop_path_schedule must be one of {DROP_PATH_SCHEDULES}, got {drop_path_schedule!r}")
        super().__init__(options=options, **common)
        bb = self.backbone
        if bb.patch_stride != bb.patch_size:
            raise ValueError(
                f"GLSim's box maps patch rows and columns to pixels at the patch size; overlapping patches "
                f"(patch_stride={bb.patch_stride[0]}) are not supported"
            )
        rows, cols = bb.grid_size
        if not 1 <= top_k <= rows * cols:
            raise ValueError(
                f"top_k={top_k} must be between 1 and the {rows}x{cols}={rows * cols} patches at img_size "
                f"{bb.img_size[0]}x{bb.img_size[1]}"
            )
        self.top_k = top_k
        self.inclusive_box = inclusive_box
        self.crop_at_inference = crop_at_inference
        dim = bb.embed_dim
        heads = aggregator_heads or max(dim // 64, 1)
        rate = float(self.config["drop_path_rate"])
        aggregator_rate = 0.0
        if drop_path_schedule == "constant" and rate > 0:
            for block in bb.blocks:  # the official DropPath(sd) in every block, in place of timm's 0 -> rate
                if not (hasattr(block, "drop_path1") and hasattr(block, "drop_path2")):
                    raise ValueError(f"drop_path_schedule='constant' needs timm Blocks, got {type(block).__name__}")
                block.drop_path1, block.drop_path2 = DropPath(rate), DropPath(rate)
            aggregator_rate = rate
        eps = {} if self.norm_eps is None else {"norm_layer": partial(nn.LayerNorm, eps=self.norm_eps)}
        self.aggregator = Block(dim, num_heads=heads, mlp_ratio=4.0, qkv_bias=True, drop_path=aggregator_rate, **eps)
        init_aggregator_official(self.aggregator)
        self.aggregator_norm = nn.LayerNorm(dim, eps=1e-6 if self.norm_eps is None else self.norm_eps)
        self.head = nn.Linear(dim, self.num_classes)
        nn.init.zeros_(self.head.weight)  # as the official code: the new head starts at zero
        nn.init.zeros_(self.head.bias)

    @torch.no_grad()
    def select(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Final-norm tokens (B, T, D) -> similarity (B, rows, cols) and boxes (B, 4) in input pixels."""
        bb = self.backbone
        similarity = cls_patch_similarity(tokens, bb.num_prefix_tokens, bb.grid_size, bb.global_token(tokens))
        boxes = select_box(similarity, self.top_k, bb.patch_size, bb.img_size, inclusive=self.inclusive_box)
        return similarity, boxes

    def forward(self, x: Tensor) -> ModelOutput:
        tokens = self.backbone(x).tokens  # (B, T, D), after the final norm
        similarity, boxes = self.select(tokens.detach())
        cls_tokens = [self.backbone.global_token(tokens)]  # global CLS (B, D)
        if self.training or self.crop_at_inference:
            crops = crop_and_resize(x, boxes)  # (B, 3, H, W), no gradient to the selection
            cls_tokens.append(self.backbone.global_token(self.backbone(crops).tokens))  # crop CLS (B, D)
        z = self.aggregator(torch.stack(cls_tokens, dim=1))  # (B, 2, D)
        z = self.aggregator_norm(z)[:, 0]  # (B, D)
        return ModelOutput(logits=self.head(z), embedding=z, boxes=boxes, similarity=similarity)
