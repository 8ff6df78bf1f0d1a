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
  one size reads a smaller input poorly through resampled embeddings, which a learned one can adapt to
  (docs/results.md, "GLSim past its two-pass bound").
* ``crop_mode="tokens"``: no second image. The crop pass re-encodes the global pass's own embedded tokens
  inside the box (patch embedding plus each patch's position embedding, CLS in front): the box at the input
  resolution, attended to alone. Boxes differ per image, so the sequences are padded to the batch's largest
  box and a key mask keeps padding out of attention (no mask when all boxes hold as many patches). Its cost
  follows the box: a box of n patches costs an encoder pass over 1 + n tokens, the whole image at worst.
  Padding was chosen over a fixed number of top-k tokens so that the pass sees the same region as the
  official crop (the box, not scattered patches).

A cheaper global pass (also beyond the official code; None, the default, is the official full pass):

* ``glance_size`` (pixels, or a float fraction of ``img_size`` rounded to whole patches): the model still
  takes the full-resolution input, but the global pass encodes it downscaled to ``glance_size``
  (``F.interpolate(..., mode="bilinear", antialias=True, align_corners=False)``: antialiasing low-pass
  filters as a resize of the image file would, instead of sampling every other pixel; ``align_corners=False``
  makes glance pixel i cover input pixels [i * s, (i + 1) * s), the frame the box mapping assumes), with the
  position embeddings resampled to the glance grid (``ViTBackbone.pos_embed_at``, as ``crop_size``). The
  similarity and the top-k box come from the glance grid; the box is mapped to input pixels
  (``glance_box_to_input``: starts floored, ends ceiled, clipped, at least one pixel) and the crop is cut
  from the **full-resolution** input, then resized to ``crop_size`` as usual. ``output.selection_map`` is the
  glance similarity on the input's patch grid (each input patch takes the glance cell under its centre), so
  that the pointing game and the maps of ``fgvc.viz`` place it as every other map; the glance grid's own map
  is ``output.extras["glance_similarity"]``.

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

import argparse
import math
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
from .base import FGVCModel, ModelOutput, create_model, register_model
from .declare import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIT_HEADS_BY_WIDTH,
    MethodRecipes,
    OfficialFormat,
    block_count,
    strip_prefixes,
)
from .explain import Explanation, GridMap, MapInfo, SelectionStep

__all__ = [
    "GLSim", "box_token_sequence", "convert_glsim_official", "crop_and_resize", "glance_box_to_input",
    "glance_map_to_input_grid", "init_aggregator_official", "patch_similarity", "resolve_crop_size",
    "resolve_glance_size",
]

DROP_PATH_SCHEDULES = ("constant", "linear")
CROP_MODES = ("resize", "tokens")
CROP_POS_EMBEDS = ("resampled", "learned")


def patch_similarity(query: Tensor, patches: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Cosine similarity of one token per image (B, D) with its patch tokens (B, rows * cols, D) -> (B, rows, cols)."""
    return F.cosine_similarity(query[:, None], patches, dim=-1).reshape(-1, *grid_size)


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


def resolve_glance_size(
    glance_size: int | float | Sequence[int] | None, img_size: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, int] | None:
    """GLSim's ``glance_size`` option -> (h, w) pixels of the global pass, or None for the input itself.

    A float in (0, 1] is a fraction of ``img_size`` rounded to whole patches (at least one); an int or (h, w)
    must be at most the input and a multiple of the patch stride. The input's own size is no glance (None).
    """
    (sh, sw), (h_in, w_in) = stride, img_size
    if glance_size is None:
        return None
    if isinstance(glance_size, float):
        if not 0 < glance_size <= 1:
            raise ValueError(f"a fractional glance_size must be in (0, 1], got {glance_size}")
        size = (max(round(h_in * glance_size / sh), 1) * sh, max(round(w_in * glance_size / sw), 1) * sw)
    else:
        size = to_2tuple(glance_size)
        h, w = size
        if h > h_in or w > w_in:
            raise ValueError(f"glance_size {h}x{w} is larger than the {h_in}x{w_in} input it downscales")
        if h < sh or w < sw or h % sh or w % sw:
            raise ValueError(f"glance_size {h}x{w} must be a positive multiple of the patch stride {sh}x{sw}")
    return None if size == tuple(img_size) else size


def glance_box_to_input(boxes: Tensor, glance_size: Sequence[int], img_size: Sequence[int]) -> Tensor:
    """Boxes (B, 4) (x0, y0, x1, y1) in glance pixels -> the same region in input pixels, int64.

    The rule: with the input ``W`` wide and the glance ``w`` wide, ``x0 -> floor(x0 * W / w)`` and
    ``x1 -> ceil(x1 * W / w)`` (exact integer arithmetic; rows alike), so the input box covers the glance box
    whole (exactly its image for whole scale factors); then starts are clipped to [0, W - 1], ends to W, and
    an end is at least its start + 1 (one pixel).
    """
    (gh, gw), (h, w) = glance_size, img_size
    b = boxes.long()
    num = torch.tensor([w, h], device=b.device)
    den = torch.tensor([gw, gh], device=b.device)
    starts = torch.div(b[:, :2] * num, den, rounding_mode="floor")  # (B, 2) x0, y0
    ends = -torch.div(-b[:, 2:] * num, den, rounding_mode="floor")  # (B, 2) x1, y1: ceil
    starts = torch.minimum(starts.clamp(min=0), num - 1)
    ends = torch.maximum(torch.minimum(ends, num), starts + 1)
    return torch.cat([starts, ends], dim=1)


def glance_map_to_input_grid(maps: Tensor, grid_size: Sequence[int]) -> Tensor:
    """Maps (B, gr, gc) on the glance grid -> (B, rows, cols) on the input's patch grid (``grid_size``).

    Each input patch takes the value of the glance cell under its centre: row ``r`` reads glance row
    ``floor((r + 1/2) * gr / rows)`` (non-overlapping patches; a whole factor repeats each glance cell).
    """
    (gr, gc), (rows, cols) = maps.shape[-2:], grid_size
    r = torch.div((2 * torch.arange(rows, device=maps.device) + 1) * gr, 2 * rows, rounding_mode="floor")
    c = torch.div((2 * torch.arange(cols, device=maps.device) + 1) * gc, 2 * cols, rounding_mode="floor")
    return maps[:, r][:, :, c]


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
    # exporting / compiling: a length known without reading the boxes (every patch, the padding masked out)
    recording = torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
    m = grid.num_patches if recording else int(counts.max())
    # inside patches first, in raster order: distinct keys, so a plain sort (ONNX has no stable one) is exact
    key = (~inside).long() * grid.num_patches + torch.arange(grid.num_patches, device=inside.device)  # (B, N)
    order = key.argsort(dim=-1)[:, :m]  # (B, M)
    picked = patches.gather(1, order.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))  # (B, M, D)
    sequence = torch.cat([prefix, picked], dim=1)  # (B, P + M, D)
    if not recording and bool((counts == m).all()):
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
    ``crop_pos_embed`` (``"resampled"``: the backbone's, resampled to ``crop_size``; ``"learned"``: its own);
    and the cheaper global pass ``glance_size`` (None: the input, official; pixels or a fraction such as 0.5).
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
        # the global pass on the input at half its side; the crop, cut from the full-resolution input, encoded
        # at that size with its own position embedding
        "glance": dict(glance_size=0.5, crop_size=0.5, crop_pos_embed="learned"),
        "glance_top2": dict(top_k=2, inclusive_box=True, glance_size=0.5, crop_size=0.5, crop_pos_embed="learned"),
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
        glance_size: int | float | Sequence[int] | None = None,
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
        if glance_size is not None:  # recorded only when set: checkpoints of the other options stay as they were
            options["glance_size"] = list(glance_size) if isinstance(glance_size, Sequence) else glance_size
        if crop_pos_embed not in CROP_POS_EMBEDS:
            raise ValueError(f"crop_pos_embed must be one of {CROP_POS_EMBEDS}, got {crop_pos_embed!r}")
        if drop_path_schedule not in DROP_PATH_SCHEDULES:
            raise ValueError(f"drop_path_schedule must be one of {DROP_PATH_SCHEDULES}, got {drop_path_schedule!r}")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
        if crop_mode == "tokens" and crop_size is not None:
            raise ValueError("crop_mode='tokens' encodes the box at the input resolution; crop_size is for 'resize'")
        if crop_mode == "tokens" and glance_size is not None:
            raise ValueError("crop_mode='tokens' re-encodes the global pass's tokens; glance_size is for 'resize'")
        super().__init__(options=options, **common)
        bb = self.backbone
        if bb.patch_stride != bb.patch_size:
            raise ValueError(
                f"GLSim's box maps patch rows and columns to pixels at the patch size; overlapping patches "
                f"(patch_stride={bb.patch_stride[0]}) are not supported"
            )
        #: (h, w) of the global pass's input, or None: the input itself (official)
        self.glance_size = resolve_glance_size(glance_size, bb.img_size, bb.patch_stride)
        glance = self.glance_size or bb.img_size
        rows, cols = self.global_grid.grid_size
        if not 1 <= top_k <= rows * cols:
            raise ValueError(
                f"top_k={top_k} must be between 1 and the {rows}x{cols}={rows * cols} patches at "
                f"{'glance_size' if self.glance_size else 'img_size'} {glance[0]}x{glance[1]}"
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
        if self.glance_size is not None and rotary:
            raise ValueError(f"glance_size needs absolute position embeddings to resample; {bb.name} has rotary ones")
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

    @property
    def global_grid(self) -> PatchGrid:
        """Where the global pass's patch tokens lie on its input: the glance grid, or the backbone's."""
        bb = self.backbone
        if self.glance_size is None:
            return bb.patch_grid
        return PatchGrid(*bb.grid_at(self.glance_size), bb.patch_size, bb.patch_stride, self.glance_size,
                         bb.num_prefix_tokens)

    def glance(self, x: Tensor) -> Tensor:
        """Input (B, 3, H, W) -> the global pass's input (B, 3, h, w) at ``glance_size`` (module doc: which resize)."""
        return F.interpolate(x, size=self.glance_size, mode="bilinear", antialias=True, align_corners=False)

    def global_pass(self, x: Tensor) -> Tensor:
        """Input (B, 3, H, W) -> the global pass's final-norm tokens (B, P + rows * cols, D), at the glance size
        with the position embeddings resampled to its grid when ``glance_size`` is set."""
        if self.glance_size is None:
            return self.backbone(x).tokens
        return self.backbone(self.glance(x), img_size=self.glance_size).tokens

    @staticmethod
    def _select_on(tokens: Tensor, grid: PatchGrid, global_token: Tensor, top_k: int,
                   inclusive: bool) -> tuple[Tensor, Tensor]:
        _, patches = grid.split(tokens)  # (B, N, D)
        similarity = patch_similarity(global_token, patches, grid.grid_size)
        return similarity, grid.top_box(similarity, top_k, include_last=inclusive)

    @torch.no_grad()
    def select(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Global-pass tokens (B, T, D), final norm -> similarity (B, rows, cols) on the global pass's grid and
        boxes (B, 4) in input pixels (with ``glance_size``: the glance box mapped by ``glance_box_to_input``)."""
        bb = self.backbone
        similarity, boxes = self._select_on(tokens, self.global_grid, bb.global_token(tokens), self.top_k,
                                            self.inclusive_box)
        if self.glance_size is not None:
            boxes = glance_box_to_input(boxes, self.glance_size, bb.img_size)
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
            embedded, tokens = None, self.global_pass(x)  # (B, T, D); T of the glance grid with glance_size
        similarity, boxes = self.select(tokens.detach())
        cls_tokens = [self.backbone.global_token(tokens)]  # global CLS (B, D)
        if self.training or self.crop_at_inference:
            cls_tokens.append(self.crop_pass(x, embedded, boxes))  # crop CLS (B, D), cut from the full input
        z = self.run_block(self.aggregator, torch.stack(cls_tokens, dim=1))  # (B, 2, D)
        z = self.aggregator_norm(z)[:, 0]  # (B, D)
        if self.glance_size is None:
            return ModelOutput(logits=self.head(z), embedding=z, boxes=boxes, selection_map=similarity)
        on_input = glance_map_to_input_grid(similarity, bb.grid_size)  # (B, rows, cols) of the input's grid
        return ModelOutput(logits=self.head(z), embedding=z, boxes=boxes, selection_map=on_input,
                           extras={"glance_similarity": similarity})

    def explain(self, x: Tensor) -> Explanation:
        """The plain ViT's maps and ``similarity`` (``output.selection_map``), the map that chose the crop box
        (``output.boxes``). With ``glance_size`` the similarity is the glance grid's, shown on the input's patch
        grid as every map is; ``attention`` and ``rollout`` are, as for every method, the backbone's at the
        input size (not the glance pass's)."""
        explanation = super().explain(x)
        explanation.maps["similarity"] = GridMap(explanation.output.selection_map.float())
        return explanation

    def selection_steps(self, tokens: Tensor, attentions: Sequence[Tensor] | None) -> list[SelectionStep]:
        """``select`` as the forward runs it: the CLS-patch similarity of the final-norm tokens, its top-k and
        their box. With ``glance_size``, tokens of a pass at the input size (what ``fgvc benchmark`` hands) are
        selected on the input's grid: the cost of the glance grid's selection, bounded from above."""
        grid = self.global_grid
        if self.glance_size is None or tokens.shape[1] == grid.num_prefix_tokens + grid.num_patches:
            return [SelectionStep(f"similarity + top-{self.top_k} + box", lambda: self.select(tokens))]
        bb = self.backbone
        return [SelectionStep(f"similarity + top-{self.top_k} + box", lambda: self._select_on(
            tokens, bb.patch_grid, bb.global_token(tokens), self.top_k, self.inclusive_box))]


# ------------------------------------------------------------------------- the official code's checkpoints
# ``glsim-official``: ``torch.save`` of ``arkel23/GLSim``'s trainer (``glsim/train_utils/trainer.py::
# save_model``): ``{"config": argparse.Namespace, "epoch", "model", "accuracy", "optimizer"}``, ``model`` the
# state dict of the ``VisionTransformer`` wrapper around ``ViTGLSim`` (keys ``model.patch_embedding.weight``,
# ``model.encoder.blocks.0.attn.proj_q.weight``, ..., a ``module.`` prefix after DistributedDataParallel).
# GLSim runs (``dynamic_anchor``: the crop of the ``dynamic_top`` patches most similar to CLS, one aggregator
# block) become fgvc ``glsim`` models; plain ViT runs of the same code (no crop) fgvc ``vit`` models. Settings
# come from the recorded config where it has them (image size, ``dynamic_top``, ``layer_norm_eps``, heads),
# else from the official defaults (``glsim/model_utils/configs.py``: LayerNorm eps 1e-12, not timm's 1e-6)
# and from the tensor shapes (width, depth, MLP size, patch size, position embeddings).
GLSIM_DEFAULT_LAYER_NORM_EPS = 1e-12  # official ViTConfig default (glsim/model_utils/configs.py)


def _official_config(obj: dict[str, Any]) -> dict[str, Any]:
    cfg = obj.get("config")
    if isinstance(cfg, argparse.Namespace):
        return vars(cfg)
    return dict(cfg) if isinstance(cfg, dict) else {}


def _official_block(state: dict[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    """One official ``BlockVanilla`` (separate q, k, v projections) as a timm ``Block`` (one fused qkv)."""
    out = {
        f"{dst}attn.qkv.weight": torch.cat([state[f"{src}attn.proj_{n}.weight"] for n in "qkv"]),
        f"{dst}attn.qkv.bias": torch.cat([state[f"{src}attn.proj_{n}.bias"] for n in "qkv"]),
    }
    for a, b in (("proj", "attn.proj"), ("norm1", "norm1"), ("norm2", "norm2"), ("pwff.fc1", "mlp.fc1"),
                 ("pwff.fc2", "mlp.fc2")):
        out[f"{dst}{b}.weight"] = state[f"{src}{a}.weight"]
        out[f"{dst}{b}.bias"] = state[f"{src}{a}.bias"]
    return out


def convert_glsim_official(obj: dict[str, Any]) -> FGVCModel:
    """An official GLSim (``ViTGLSim``) checkpoint, already loaded, as an fgvc ``glsim`` (or ``vit``) model."""
    cfg = _official_config(obj)
    state = strip_prefixes(dict(obj["model"]), "module.", "model.")
    if "patch_embed.proj.weight" in state:
        raise ValueError(
            "this GLSim checkpoint uses the official code's timm backbone variant (TIMMViT); fgvc converts the "
            "ViTGLSim models (model_name vit_t16 ... vit_h14)"
        )
    conv = state["patch_embedding.weight"]  # (D, 3, P, P)
    dim, patch = conv.shape[0], conv.shape[-1]
    depth = block_count(state, "encoder.blocks.")
    mlp = state["encoder.blocks.0.pwff.fc1.weight"].shape[0]
    heads = int(cfg.get("num_attention_heads") or VIT_HEADS_BY_WIDTH.get(dim, max(dim // 64, 1)))
    eps = float(cfg.get("layer_norm_eps") or GLSIM_DEFAULT_LAYER_NORM_EPS)
    if "class_token" not in state:
        raise ValueError("the official checkpoint has no class token (classifier without 'cls'): not supported")
    if "encoder_norm.weight" not in state:
        raise ValueError("the official checkpoint has no encoder_norm: not supported (fgvc's ViTs end with a norm)")
    tokens = state["positional_embedding.pos_embedding"].shape[1] - 1
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{tokens} position embeddings are not a square grid (the official code asserts one)")
    img_size = side * patch
    if cfg.get("image_size") not in (None, img_size):
        raise ValueError(f"config image_size {cfg['image_size']} but the position embeddings are for {img_size} px")
    num_classes = state["head.weight"].shape[0]
    mapped: dict[str, Tensor] = {
        "backbone.vit.patch_embed.proj.weight": conv,
        "backbone.vit.patch_embed.proj.bias": state["patch_embedding.bias"],
        "backbone.vit.cls_token": state["class_token"],
        "backbone.vit.pos_embed": state["positional_embedding.pos_embedding"],
        "backbone.vit.norm.weight": state["encoder_norm.weight"],
        "backbone.vit.norm.bias": state["encoder_norm.bias"],
        "head.weight": state["head.weight"],
        "head.bias": state["head.bias"],
    }
    for i in range(depth):
        mapped.update(_official_block(state, f"encoder.blocks.{i}.", f"backbone.vit.blocks.{i}."))
    common = dict(
        backbone="vit_base_patch16_224",
        num_classes=num_classes,
        img_size=img_size,
        norm_eps=eps,
        backbone_kwargs=dict(patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp / dim),
    )
    crop = any(k.startswith("aggregator.") for k in state)
    if not crop:  # the official code's plain ViT: CLS after the final norm, one linear head
        model = create_model("vit", **common)
    else:
        if cfg.get("sim_metric") not in (None, "cos"):
            raise ValueError(f"sim_metric {cfg['sim_metric']!r}: fgvc's GLSim implements the cosine similarity")
        if block_count(state, "aggregator.blocks.") != 1 or "aggregator_norm.weight" not in state:
            raise ValueError("fgvc's GLSim has one aggregator block and an aggregator norm; this checkpoint differs")
        if any(k.startswith("reducer.") for k in state):
            raise ValueError("a linear reducer (representation_size != hidden_size) is not supported")
        if cfg.get("num_anchors") not in (None, 1) or cfg.get("anchor_random"):
            raise ValueError("only the official dynamic anchor (one crop of the top patches) is supported")
        agg_dim = state["aggregator.blocks.0.norm1.weight"].shape[0]
        model = create_model(
            "glsim", top_k=int(cfg.get("dynamic_top") or 2), aggregator_heads=max(agg_dim // 64, 1), **common
        )
        mapped.update(_official_block(state, "aggregator.blocks.0.", "aggregator."))
        mapped["aggregator_norm.weight"] = state["aggregator_norm.weight"]
        mapped["aggregator_norm.bias"] = state["aggregator_norm.bias"]
    unused = set(state) - _official_used(state, depth, crop)
    if unused:
        raise ValueError(f"official GLSim checkpoint has weights fgvc does not know: {sorted(unused)[:5]}")
    model.load_state_dict(mapped, strict=True)
    return model


def _official_used(state: dict[str, Tensor], depth: int, crop: bool) -> set[str]:
    used = {"patch_embedding.weight", "patch_embedding.bias", "class_token", "positional_embedding.pos_embedding",
            "encoder_norm.weight", "encoder_norm.bias", "head.weight", "head.bias",
            "anchor_class_token"}  # created by the official model, never used in its forward
    prefixes = [f"encoder.blocks.{i}." for i in range(depth)]
    if crop:
        prefixes.append("aggregator.blocks.0.")
        used |= {"aggregator_norm.weight", "aggregator_norm.bias"}
    return used | {k for k in state if k.startswith(tuple(prefixes))}


OFFICIAL_FORMAT = OfficialFormat(
    name="glsim-official",
    description="the official GLSim trainer's (a dict with 'config' and 'model': ViTGLSim keys)",
    keys=("patch_embedding.weight", "encoder.blocks."),
    convert=convert_glsim_official,
)


# ------------------------------------------------------------------------------------------- recipes
PAPER = "Rios, Hu, Lai: Global-Local Similarity for Efficient Fine-Grained Image Recognition with Vision Transformers, 2024"


def recipe_settings(dataset: str, size: int) -> tuple[dict, dict, dict, list[str]]:
    """GLSim, from arkel23/GLSim (README.md:128-133: tools/train.py --cfg configs/<ds>_ft_is224_medaugs.yaml
    --lr 0.01 --model_name vit_b16 --cfg_method configs/methods/glsim.yaml [--image_size 448])."""
    # resize: glsim/other_utils/build_args.py:60-71: int(S / 0.875) for cars, int(S * 1.34) otherwise; the
    # test resize is the same (:73-74). Square: square_resize_random_crop is the default crop (:76-79), i.e.
    # Resize((r, r), BICUBIC) then RandomCrop(S) (glsim/data_utils/build_transform.py:116-120); test:
    # Resize((r, r), BICUBIC) then CenterCrop(S) (:164-167).
    r = int(size / 0.875) if dataset == "cars" else int(size * 1.34)
    model = dict(
        drop_path_rate=0.1,  # sd: 0.1 (configs/augs/medaugs.yaml:4)
        # DropPath(sd) in every block (glsim/model_utils/transformer.py:88-91, 114-117) and in the aggregator
        # (glsim/model_utils/glsim.py:73-82), not timm's linear 0 -> sd
        drop_path_schedule="constant",
        top_k=8,  # dynamic_top: 8 (glsim/other_utils/build_args.py:266)
        # position embeddings resampled to the input's grid with scipy.ndimage.zoom(order=1)
        # (glsim/model_utils/download_load_pt_weights.py, resize_pos_embedding)
        pos_embed_interpolation="scipy_zoom",
        backbone_kwargs=dict(
            pretrained_cfg_overlay=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")
        ),  # build_transform.py:90-91 (ImageNet statistics), :118-119 and :165-166 (bicubic)
    )
    data = dict(
        resize=[r, r],
        trivial_augment=True,  # trivial_aug: True (configs/augs/medaugs.yaml:7; build_transform.py:152-153)
        random_erasing=0.3,  # re: 0.3 (configs/augs/medaugs.yaml:5)
        # RandomErasing(p=re, scale=(0.02, re_sh), ratio=(re_r1, 3.3)) (build_transform.py:171-173), re_sh 0.4
        # and re_r1 0.3 (build_args.py:354-355): the ratio is torchvision's default, the scale is not
        random_erasing_scale=[0.02, 0.4],
    )  # horizontal flip: configs/augs/medaugs.yaml:1 (always on in fgvc)
    train = dict(
        epochs=50,  # build_args.py:125
        batch_size=8,  # build_args.py:138
        # opt 'sgd' (build_args.py:172) through timm 0.9.12's create_optimizer (tools/train.py:79;
        # requirements.txt: timm==0.9.12), which builds SGD with Nesterov momentum: fgvc's "sgd" is the same
        optimizer="sgd",
        momentum=0.9,  # build_args.py:184
        # build_args.py:176 and the README command (README.md:128). scripts/run.sh:19, 99-103 instead sweeps
        # {0.03, 0.01, 0.003, 0.001} with --train_trainval, which (store_false, build_args.py:374-376) trains on
        # train.csv and evaluates on val.csv (glsim/data_utils/datasets.py:41-54): a choice on a validation
        # split. fgvc: fgvc train --sweep train.lr=0.03,0.01,0.003,0.001
        lr=0.01,
        weight_decay=0.0,  # build_args.py:186
        warmup_steps=500,  # build_args.py:210; cosine per step (:193, glsim/train_utils/scheduler.py:23-32)
        min_lr=1e-5,  # build_args.py:205 (the warmup starts at warmup_lr 1e-6, :203: see docs/recipes.md, the deviations)
        label_smoothing=0.1,  # ls: True (configs/augs/medaugs.yaml:3), smoothing 0.1 (build_args.py:361)
        grad_clip=1.0,  # clip_grad 1.0 (build_args.py:182)
    )
    notes = [
        f"GLSim, official code (arkel23/GLSim): square resize {r} x {r} "
        + ("(int(S / 0.875), its Cars rule)" if dataset == "cars" else "(int(S * 1.34))")
        + f" then crop {size}, bicubic,",
        "ImageNet mean / std, flip, TrivialAugmentWide, RandomErasing 0.3 (area 2-40%), label smoothing 0.1,",
        "drop-path 0.1 in every block and the aggregator, SGD (Nesterov, as timm's 'sgd') momentum 0.9, lr 0.01,",
        "batch 8, 50 epochs, 500 warmup steps, cosine to 1e-5, weight decay 0, gradient clipping 1.0, top-k 8.",
        "lr 0.01 is the README's and build_args.py's; the official scripts/run.sh sweeps 0.03, 0.01, 0.003, 0.001",
        "on a validation split: fgvc train --config NAME --sweep train.lr=0.03,0.01,0.003,0.001 runs it.",
        "The official run trains on the whole training split and evaluates the final epoch: protocol paper.",
    ]
    return model, data, train, notes


def _not_reported(dataset: str, size: int) -> str:
    if dataset in ("cars", "aircraft"):
        return f"{PAPER}: its results table (Table 4) has no Stanford Cars or FGVC-Aircraft column"
    return f"{PAPER}: reports {dataset} at 224 px only (Table 4)"


RECIPES = MethodRecipes(
    settings=recipe_settings,
    expected={
        ("cub", 224): (90.93, f"{PAPER}, Table 4 (224 px): 90.93 +- 0.24"),
        ("nabirds", 224): (89.11, f"{PAPER}, Table 4 (224 px): 89.11 +- 0.16"),
        ("cub", 448): (
            92.1,
            f"{PAPER}, accuracy / throughput bar chart on CUB (GLSim*, 448 px; also assets/acc_tp_cub.png in "
            "arkel23/GLSim): about 92.1, read off the bar, not from a table",
        ),
    },
    not_reported=_not_reported,
)
