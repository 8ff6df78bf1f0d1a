"""GLSim: global-local similarity for efficient fine-grained recognition (Rios et al., 2024).

Faithful to the official code (arkel23/GLSim, ``glsim/model_utils/glsim.py``):

1. The image goes through the encoder; on the last layer's tokens *after the final norm*, the cosine
   similarity between the CLS token and every patch token is computed.
2. Under ``no_grad``, the top-k patches (default k=8) are selected; their bounding box in patch units is
   ``[row_min, row_max] x [col_min, col_max]``. As in the official code the box ends at ``row_max * P``
   (exclusive), so the last selected row and column fall outside it; a box is at least one patch wide
   (``end = max(end, start + P)``, also official), so for ``top_k=1`` both rules give the same one-patch box.
   ``inclusive_box=True`` keeps the last row and column instead (``end = (row_max + 1) * P``), which is the
   box one would naively expect.
3. The box is cut from the model's input tensor (already normalized) and resized bilinearly to the input
   resolution with ``align_corners=True`` (the official ``F.upsample_bilinear``). The official code calls
   the row index ``x``; here boxes are (x0, y0, x1, y1) with x = column, y = row, like torchvision.
4. The crop goes through the *same* encoder (same weights). The two CLS tokens (global, crop) form a
   sequence of two tokens that one pre-norm transformer block (the aggregator) refines; a LayerNorm and one
   linear head on the first token give the logits. One cross-entropy loss trains everything.

``crop_at_inference=False`` skips the crop pass in evaluation (the aggregator then sees the global token
only): plain-ViT cost, usually lower accuracy.

Cheaper crop passes (options beyond the official code; the default is the official pass above). Two encoder
passes at the input resolution bound GLSim at half a plain ViT's throughput; these shrink the second one:

* ``crop_size``: the crop is resized to this size instead of the input's (an int or (h, w) in pixels, or a
  float fraction of ``img_size``, rounded to whole patches) and encoded with the position embeddings
  resampled to its grid (``ViTBackbone.pos_embed_at``). ``0.5`` encodes a quarter of the tokens; a small
  box is still enlarged (a 3 x 3-patch box at 224 px becomes 112 px).
* ``crop_pos_embed="learned"`` (with ``crop_size``): the smaller pass gets its own position embedding, a new
  parameter that starts as the resampled one and is fine-tuned with the new layers. A backbone pretrained at
  one size reads a smaller input poorly through resampled embeddings; in fgvc's hard synthetic benchmark this
  gave back most of what ``crop_size=0.5`` lost (README, "GLSim past its two-pass bound").
* ``crop_mode="tokens"``: no second image. The crop pass re-encodes the global pass's own embedded tokens
  inside the box (patch embedding plus each patch's position embedding, CLS in front): the box at the input
  resolution, attended to alone. Boxes differ per image, so the sequences are padded to the batch's largest
  box and a key mask keeps padding out of attention (no mask when all boxes hold as many patches). Its cost
  follows the box: a box of n patches costs an encoder pass over 1 + n tokens, the whole image at worst.
  Padding was chosen over a fixed number of top-k tokens so that the pass sees the same region as the
  official crop (the box, not scattered patches).

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

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from ..backbones.vit import to_2tuple
from ..layers.geometry import PatchGrid, crop_and_resize
from .base import FGVCModel, ModelOutput, register_model
from .explain import Explanation, GridMap, MapInfo, SelectionStep

__all__ = [
    "GLSim", "box_token_sequence", "cls_patch_similarity", "crop_and_resize", "init_aggregator_official",
    "patch_similarity", "resolve_crop_size", "select_box",
]

DROP_PATH_SCHEDULES = ("constant", "linear")
CROP_MODES = ("resize", "tokens")
CROP_POS_EMBEDS = ("resampled", "learned")


def cls_patch_similarity(
    tokens: Tensor, num_prefix_tokens: int, grid_size: tuple[int, int], global_token: Tensor | None = None
) -> Tensor:
    """Cosine similarity of the CLS token (index 0) with every patch token.

    tokens: (B, T, D) with T = num_prefix_tokens + rows * cols.  Returns (B, rows, cols).
    global_token: (B, D) used instead of the CLS token (ViTs without one: ``ViTBackbone.global_token``).
    """
    prefix, patches = PatchGrid(*grid_size, num_prefix_tokens=num_prefix_tokens).split(tokens)
    query = prefix[:, 0] if global_token is None else global_token  # (B, D)
    return patch_similarity(query, patches, grid_size)


def patch_similarity(query: Tensor, patches: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Cosine similarity of one token per image (B, D) with its patch tokens (B, rows * cols, D) -> (B, rows, cols)."""
    return F.cosine_similarity(query[:, None], patches, dim=-1).reshape(-1, *grid_size)


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
    _, rows, cols = similarity.shape
    grid = PatchGrid(rows, cols, patch_size, img_size=img_size)
    return grid.top_box(similarity, k, include_last=inclusive)


def resolve_crop_size(
    crop_size: int | float | Sequence[int] | None, img_size: tuple[int, int], patch_size: tuple[int, int]
) -> tuple[int, int]:
    """GLSim's ``crop_size`` option -> (h, w) pixels: None is ``img_size``; a float in (0, 1] a fraction of it,
    rounded to whole patches (at least one); an int or (h, w) is taken as given and must tile into patches."""
    ph, pw = patch_size
    if crop_size is None:
        return img_size
    if isinstance(crop_size, float):
        if not 0 < crop_size <= 1:
            raise ValueError(f"a fractional crop_size must be in (0, 1], got {crop_size}")
        return (max(round(img_size[0] * crop_size / ph), 1) * ph, max(round(img_size[1] * crop_size / pw), 1) * pw)
    h, w = to_2tuple(crop_size)
    if h < ph or w < pw or h % ph or w % pw:
        raise ValueError(f"crop_size {h}x{w} must be a positive multiple of the patch size {ph}x{pw}")
    return h, w


def box_token_sequence(
    tokens: Tensor, boxes: Tensor, num_prefix_tokens: int, grid_size: tuple[int, int], patch_size: tuple[int, int]
) -> tuple[Tensor, Tensor | None]:
    """The prefix tokens and the patch tokens inside each box, padded to the longest: the crop as tokens.

    tokens: (B, P + rows * cols, D) embedded tokens (position embeddings added); boxes: (B, 4) (x0, y0, x1, y1)
    input pixels on patch borders, ends exclusive. Returns the sequences (B, P + M, D), patches in raster order
    and M the most patches of a box, and the (B, 1, 1, P + M) boolean key mask (True: a real token), or None
    when no sequence is padded.
    """
    b = tokens.shape[0]
    grid = PatchGrid(*grid_size, patch_size, num_prefix_tokens=num_prefix_tokens)
    prefix, patches = grid.split(tokens)  # (B, P, D), (B, N, D)
    inside = grid.cells_inside(boxes).reshape(b, grid.num_patches)  # (B, N)
    counts = inside.sum(-1)  # (B,)
    m = int(counts.max())
    order = torch.argsort((~inside).to(torch.uint8), dim=-1, stable=True)[:, :m]  # inside patches first, raster
    picked = patches.gather(1, order.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))  # (B, M, D)
    sequence = torch.cat([prefix, picked], dim=1)  # (B, P + M, D)
    if bool((counts == m).all()):
        return sequence, None
    real = torch.arange(m, device=tokens.device).view(1, m) < counts.view(b, 1)  # (B, M)
    mask = torch.cat([real.new_ones(b, num_prefix_tokens), real], dim=1)  # (B, P + M)
    return sequence, mask.view(b, 1, 1, -1)


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
    (``"constant"``: official, every block and the aggregator at ``drop_path_rate``; ``"linear"``: timm's),
    and the cheaper crop passes of the module doc: ``crop_size`` (None: the input size, official; pixels or a
    fraction such as 0.5), ``crop_mode`` (``"resize"``: official; ``"tokens"``: the box's own tokens) and
    ``crop_pos_embed`` (``"resampled"``: the backbone's, resampled to ``crop_size``; ``"learned"``: its own).
    """

    display_name = "GLSim"
    own_maps = {
        "similarity": MapInfo("CLS-patch similarity", "GLSim: CLS-patch cosine similarity (picks the crop)",
                              shows_box=True),
    }
    variants = {
        "nocrop": dict(crop_at_inference=False),  # no crop pass at inference
        "half": dict(crop_size=0.5),  # the crop re-encoded at half the size: a quarter of the tokens
        "half_pe": dict(crop_size=0.5, crop_pos_embed="learned"),  # and with its own position embedding
        "tokens": dict(crop_mode="tokens"),  # the crop pass on the box's own tokens
        # fgvc's compact box around the similarity peak, for details only a few patches wide; last row and
        # column included: with the official exclusive end, two neighbouring patches give a one-patch box
        # (the first row and column of their span), no larger than top-1's
        "top2": dict(top_k=2, inclusive_box=True),
        # the official top-8 with the box's last row and column kept: the official end drops them, so a
        # selection spanning n rows (columns) gives a box of max(n - 1, 1)
        "inclusive": dict(inclusive_box=True),
        "top2_half": dict(top_k=2, inclusive_box=True, crop_size=0.5),  # the same, crop re-encoded at half size
        # and with the half-size pass's own position embedding, learned in fine-tuning
        "top2_half_pe": dict(top_k=2, inclusive_box=True, crop_size=0.5, crop_pos_embed="learned"),
    }
    small_input_options = {"top_k": 4}  # 4 of a small grid's cells

    def __init__(
        self,
        *,
        top_k: int = 8,
        inclusive_box: bool = False,
        crop_at_inference: bool = True,
        aggregator_heads: int | None = None,
        drop_path_schedule: str = "constant",
        crop_size: int | float | Sequence[int] | None = None,
        crop_mode: str = "resize",
        crop_pos_embed: str = "resampled",
        **common: Any,
    ) -> None:
        options = dict(
            top_k=top_k,
            inclusive_box=inclusive_box,
            crop_at_inference=crop_at_inference,
            aggregator_heads=aggregator_heads,
            drop_path_schedule=drop_path_schedule,
            crop_size=list(crop_size) if isinstance(crop_size, Sequence) else crop_size,
            crop_mode=crop_mode,
            crop_pos_embed=crop_pos_embed,
        )
        if crop_pos_embed not in CROP_POS_EMBEDS:
            raise ValueError(f"crop_pos_embed must be one of {CROP_POS_EMBEDS}, got {crop_pos_embed!r}")
        if drop_path_schedule not in DROP_PATH_SCHEDULES:
            raise ValueError(f"drop_path_schedule must be one of {DROP_PATH_SCHEDULES}, got {drop_path_schedule!r}")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
        if crop_mode == "tokens" and crop_size is not None:
            raise ValueError("crop_mode='tokens' encodes the box at the input resolution; crop_size is for 'resize'")
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
        self.crop_mode = crop_mode
        self.crop_size = resolve_crop_size(crop_size, bb.img_size, bb.patch_size)  # (h, w) of the resized crop
        rotary = getattr(bb.vit, "rope", None) is not None  # EVA: rotary embeddings built for one grid
        if crop_mode == "tokens" and (rotary or not bb.has_class_token):
            raise ValueError(f"crop_mode='tokens' needs a CLS token and absolute position embeddings; {bb.name} "
                             f"has {'rotary embeddings' if rotary else 'no CLS token'}")
        if self.crop_size != bb.img_size and rotary:
            raise ValueError(f"crop_size needs absolute position embeddings to resample; {bb.name} has rotary ones")
        self.crop_pos_embed: nn.Parameter | None = None
        if crop_pos_embed == "learned":
            if crop_mode != "resize" or self.crop_size == bb.img_size or bb.vit.pos_embed is None:
                raise ValueError("crop_pos_embed='learned' is for a crop pass at another size than the input "
                                 "(crop_size) on absolute position embeddings")
            with torch.no_grad():  # starts as the resampled embedding; trains at the new layers' rate
                self.crop_pos_embed = nn.Parameter(bb.pos_embed_at(self.crop_size).clone())
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

    def no_weight_decay(self) -> set[str]:
        """The backbone's set and the crop pass's learned position embedding (``crop_pos_embed="learned"``)."""
        return super().no_weight_decay() | {"crop_pos_embed"}

    @torch.no_grad()
    def select(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Final-norm tokens (B, T, D) -> similarity (B, rows, cols) and boxes (B, 4) in input pixels."""
        bb = self.backbone
        _, patches = bb.split_tokens(tokens)  # (B, N, D)
        similarity = patch_similarity(bb.global_token(tokens), patches, bb.grid_size)
        boxes = bb.patch_grid.top_box(similarity, self.top_k, include_last=self.inclusive_box)
        return similarity, boxes

    def crop_pass(self, x: Tensor, embedded: Tensor | None, boxes: Tensor) -> Tensor:
        """The crop's CLS token (B, D): the box resized and re-encoded, or the box's own tokens re-encoded.

        x: (B, 3, H, W) input; embedded: (B, T, D) the global pass's embedded tokens (before the blocks), needed
        by ``crop_mode="tokens"`` only.
        """
        bb = self.backbone
        if self.crop_mode == "tokens":
            if embedded is None:
                raise ValueError("crop_mode='tokens' needs the global pass's embedded tokens")
            sequence, mask = box_token_sequence(embedded, boxes, bb.num_prefix_tokens, bb.grid_size, bb.patch_size)
            return bb.global_token(bb.encode(sequence, attn_mask=mask))  # (B, P + M, D) -> CLS (B, D)
        crops = crop_and_resize(x, boxes, self.crop_size)  # (B, 3, h, w), no gradient to the selection
        if self.crop_pos_embed is not None:  # the crop pass's own position embedding (1, [P +] n, D)
            return bb.global_token(bb.encode(bb.embed(crops, pos_embed=self.crop_pos_embed)))
        other_size = {} if self.crop_size == bb.img_size else {"img_size": self.crop_size}
        return bb.global_token(bb(crops, **other_size).tokens)

    def forward(self, x: Tensor) -> ModelOutput:
        bb = self.backbone
        if self.crop_mode == "tokens":  # the crop pass reuses the embedded tokens (B, T, D)
            embedded = bb.embed(x)
            tokens = bb.encode(embedded)  # (B, T, D), after the final norm
        else:
            embedded, tokens = None, bb(x).tokens
        similarity, boxes = self.select(tokens.detach())
        cls_tokens = [self.backbone.global_token(tokens)]  # global CLS (B, D)
        if self.training or self.crop_at_inference:
            cls_tokens.append(self.crop_pass(x, embedded, boxes))  # crop CLS (B, D)
        z = self.aggregator(torch.stack(cls_tokens, dim=1))  # (B, 2, D)
        z = self.aggregator_norm(z)[:, 0]  # (B, D)
        return ModelOutput(logits=self.head(z), embedding=z, boxes=boxes, similarity=similarity)

    def explain(self, x: Tensor) -> Explanation:
        """The plain ViT's maps and ``similarity``, the map that chose the crop box (``output.boxes``)."""
        explanation = super().explain(x)
        explanation.maps["similarity"] = GridMap(explanation.output.similarity.float())
        return explanation

    def selection_steps(self, tokens: Tensor, attentions: Sequence[Tensor] | None) -> list[SelectionStep]:
        """``select`` as the forward runs it: the CLS-patch similarity of the final-norm tokens, its top-k and
        their box."""
        return [SelectionStep(f"similarity + top-{self.top_k} + box", lambda: self.select(tokens))]
