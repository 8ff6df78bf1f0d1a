"""The maps of what a model looks at, computed once per batch and read by kind, layer and head.

    maps = attention_maps(model, images)             # one pass of the model, one of the backbone
    maps.kinds                                       # e.g. ['attention', 'rollout', 'similarity']
    maps.get("attention", layer=3, head=1)           # (B, rows, cols)

Kinds (all (B, rows, cols) over the patch grid, ``backbone.grid_size``):

* ``attention``: the CLS token's attention to each patch in one layer, one head or the head mean
  (every method; the backbone's own attention on the image, the SA stream of DCAL).
* ``rollout``: attention rollout over the layers (``fgvc.layers.rollout``), every method.
* ``similarity``: GLSim's cosine similarity of the CLS token with each patch, which picks its crop box.
* ``glca_queries``: DCAL's local queries (1 where a patch is a GLCA query, else 0), chosen by the rollout.
* ``glca_attention``: DCAL's GLCA attention, from the selected queries to each patch (mean over queries; one
  head or the head mean).
* ``parts``: TransFG's selected parts: how many heads picked each patch (one head: 1 at its part).

TransFG's last block is its part block, which sees the prefix tokens and the selected parts only: its
``attention`` map is the CLS attention to those parts, placed at their patches (0 elsewhere), and its
``rollout`` covers the first L-1 blocks, the ones that see every patch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..layers.rollout import rollout_map
from ..methods.base import FGVCModel, ModelOutput

__all__ = ["MAP_KINDS", "AttentionMaps", "attention_maps", "available_maps", "map_box"]

#: Every map kind, with what it shows.
MAP_KINDS: dict[str, str] = {
    "attention": "CLS attention (one layer, one head or the head mean)",
    "rollout": "attention rollout through the layers",
    "similarity": "GLSim: CLS-patch cosine similarity (picks the crop)",
    "glca_queries": "DCAL: GLCA local queries (top rollout patches)",
    "glca_attention": "DCAL: GLCA attention from the local queries",
    "parts": "TransFG: selected parts (heads per patch)",
}
#: Kinds that depend on the layer; those that depend on the head.
LAYERED = ("attention",)
HEADED = ("attention", "glca_attention", "parts")

_METHOD_KINDS = {"glsim": ("similarity",), "dcal": ("glca_queries", "glca_attention"), "transfg": ("parts",)}


def available_maps(model: FGVCModel) -> list[str]:
    """The map kinds ``model`` has: ``attention`` and ``rollout`` always, then its method's own."""
    return ["attention", "rollout", *_METHOD_KINDS.get(model.method, ())]


@dataclass
class AttentionMaps:
    """Everything needed to draw any map of a batch (see the module doc); read it with ``get``.

    output: the model's evaluation output for the batch.
    cls_rows: per block, (B, heads, T) attention of the CLS token (T = prefix + patches) in the backbone's
        pass over the images; for TransFG the first L-1 blocks only.
    head_means: per block, (B, 1, T, T) attention averaged over heads (what the rollout multiplies). Only
        these reductions are kept, not the (B, heads, T, T) maps: at 448 px a ViT-B's full maps take
        about 350 MB per image.
    part_attention: TransFG's part block attention, (B, heads, prefix + heads, prefix + heads), else None.
    glca_attention: DCAL's GLCA attention, (B, heads, R, T) from the R local queries, else None.
    """

    method: str
    output: ModelOutput
    cls_rows: list[Tensor]
    head_means: list[Tensor]
    grid_size: tuple[int, int]
    num_prefix_tokens: int
    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    patch_stride: tuple[int, int]
    part_attention: Tensor | None = None
    glca_attention: Tensor | None = None
    kinds: list[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """Number of layers ``attention`` can show."""
        return len(self.cls_rows) + (self.part_attention is not None)

    @property
    def num_heads(self) -> int:
        return self.cls_rows[0].shape[1]

    def get(self, kind: str, layer: int = -1, head: int | None = None) -> Tensor:
        """Map ``kind`` as (B, rows, cols) float32. ``layer`` (Python index) for ``attention``; ``head``
        (None: the mean over heads) for ``attention``, ``glca_attention`` and ``parts``."""
        if kind not in self.kinds:
            raise ValueError(f"map {kind!r} is not available for {self.method}; available: {', '.join(self.kinds)}")
        if head is not None and not -self.num_heads <= head < self.num_heads:
            raise ValueError(f"head={head} out of range for {self.num_heads} heads")
        if kind == "attention":
            return self.cls_attention(layer, head)
        if kind == "rollout":
            return rollout_map(self.head_means, self.num_prefix_tokens, self.grid_size)
        if kind == "similarity":
            return self.output.similarity.float()
        if kind == "glca_queries":
            return self._scatter(self.output.extras["glca_queries"], torch.ones_like(self.output.extras["glca_queries"]))
        if kind == "glca_attention":
            a = self.glca_attention.float()  # (B, heads, R, T)
            a = a.mean(1) if head is None else a[:, head]  # (B, R, T)
            return self._grid(a.mean(1)[:, self.num_prefix_tokens :])
        # parts: (B, heads) patch indices
        parts = self.output.extras["part_indices"]
        if head is not None:
            parts = parts[:, [head]]  # (B, 1)
        return self._scatter(parts, torch.ones_like(parts))

    def cls_attention(self, layer: int = -1, head: int | None = None) -> Tensor:
        """(B, rows, cols): attention of the CLS token to each patch in ``layer``, ``head`` (None: mean)."""
        depth = self.depth
        if not -depth <= layer < depth:
            raise ValueError(f"layer={layer} out of range for {depth} layers")
        layer %= depth
        if layer < len(self.cls_rows):
            row = self.cls_rows[layer][:, :, self.num_prefix_tokens :]  # (B, heads, N)
            row = row.mean(1) if head is None else row[:, head]  # (B, N)
            return self._grid(row)
        # TransFG's part block: CLS attention to the parts, placed at their patches
        a = self.part_attention.float()[:, :, 0, self.num_prefix_tokens :]  # (B, heads, K parts)
        a = a.mean(1) if head is None else a[:, head]  # (B, K)
        return self._scatter(self.output.extras["part_indices"], a)

    def _grid(self, values: Tensor) -> Tensor:
        """(B, N) over the patches -> (B, rows, cols)."""
        rows, cols = self.grid_size
        if values.shape[-1] != rows * cols:
            raise ValueError(f"expected {rows}x{cols}={rows * cols} patch values, got {values.shape[-1]}")
        return values.reshape(-1, rows, cols)

    def _scatter(self, index: Tensor, values: Tensor) -> Tensor:
        """Patch indices (B, K) with values (B, K) -> (B, rows, cols), summed where indices repeat."""
        rows, cols = self.grid_size
        out = torch.zeros(index.shape[0], rows * cols, dtype=torch.float32, device=index.device)
        out.scatter_add_(1, index.long(), values.float())
        return out.reshape(-1, rows, cols)


@torch.no_grad()
def attention_maps(model: FGVCModel, images: Tensor) -> AttentionMaps:
    """Run ``model`` (eval mode, no gradient) and its backbone with attention on (B, 3, H, W) images.

    Two passes: the model's own forward (output, GLSim's similarity and box, DCAL's queries and GLCA
    attention, TransFG's parts and part-block attention) and the backbone's, block by block, recording each
    block's attention (``ViTBackbone.record_attention``) and keeping its CLS row and head mean only, so one
    block's full maps are alive at a time. The model's training mode is restored afterwards.
    """
    bb = model.backbone
    device = next(model.parameters()).device
    images = images.to(device)
    was_training = model.training
    model.eval()
    try:
        part_attention = None
        if model.method == "dcal":
            model.return_glca_attention = True
            try:
                output = model(images)
            finally:
                model.return_glca_attention = False
        elif model.method == "transfg":
            with bb.record_attention(blocks=[model.part_block]) as recorded:
                output = model(images)
            part_attention = recorded[0]  # (B, heads, prefix + heads, prefix + heads)
        else:
            output = model(images)
        blocks = list(bb.blocks)
        if part_attention is not None:
            blocks = blocks[:-1]  # a full-token pass through the part block is not what TransFG does
        cls_rows, head_means = [], []
        tokens = bb.embed(images)  # (B, T, D)
        for block in blocks:  # as bb(images, return_attention=True), one block's maps at a time
            with bb.record_attention(blocks=[block]) as recorded:
                tokens = block(tokens, **bb.block_kwargs())  # EVA-02: rotary embeddings
            attn = recorded[0].float()  # (B, heads, T, T)
            # the global token's row: CLS, or for ViTs without one the mean of the patch rows (bb.global_token)
            cls_rows.append(attn[:, :, 0] if bb.has_class_token else attn[:, :, bb.num_prefix_tokens :].mean(2))
            head_means.append(attn.mean(1, keepdim=True))  # (B, 1, T, T)
            del attn, recorded
    finally:
        model.train(was_training)
    return AttentionMaps(
        method=model.method,
        output=output,
        cls_rows=cls_rows,
        head_means=head_means,
        grid_size=bb.grid_size,
        num_prefix_tokens=bb.num_prefix_tokens,
        img_size=bb.img_size,
        patch_size=bb.patch_size,
        patch_stride=bb.patch_stride,
        part_attention=part_attention,
        glca_attention=output.extras.get("glca_attention"),
        kinds=available_maps(model),
    )


def map_box(
    heat: Tensor,
    k: int,
    img_size: tuple[int, int],
    patch_size: tuple[int, int],
    patch_stride: tuple[int, int] | None = None,
) -> Tensor:
    """Box around the k highest cells of (B, rows, cols) maps, in input pixels: (B, 4) int64 (x0, y0, x1, y1),
    exclusive ends, covering the selected patches whole (the last row and column included)."""
    b, rows, cols = heat.shape
    k = max(1, min(k, rows * cols))
    ph, pw = patch_size
    sh, sw = patch_stride if patch_stride is not None else patch_size
    h, w = img_size
    index = heat.reshape(b, -1).topk(k, dim=-1).indices  # (B, k)
    r, c = index // cols, index % cols
    x0, y0 = c.amin(-1) * sw, r.amin(-1) * sh
    x1 = (c.amax(-1) * sw + pw).clamp(max=w)
    y1 = (r.amax(-1) * sh + ph).clamp(max=h)
    return torch.stack([x0, y0, x1, y1], dim=-1)
