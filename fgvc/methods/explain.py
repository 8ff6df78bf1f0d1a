"""What a method can show and what it selects with: the value types of ``FGVCModel``'s explanation contract.

Every method explains a batch with ``model.explain(x)``, which returns an ``Explanation``: the evaluation
output and, by name, maps over the patch grid. The maps a method has are ``model.map_info()``: the plain
ViT's (``COMMON_MAPS``: CLS attention per layer and head, attention rollout), which every method inherits from
``FGVCModel``, then the method's own (``own_maps``, e.g. a selection map or its selected tokens). Visualization,
Grad-CAM, the explorer, ``fgvc benchmark`` and ``fgvc demo`` read only this contract, never a method's name.

``SelectionStep`` is a method's token or region selection as ``fgvc benchmark`` times and counts it (the
cost a method adds on top of the encoder to decide where to look).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..layers.rollout import rollout_map
from .output import ModelOutput

__all__ = [
    "COMMON_MAPS", "Explanation", "GridMap", "MapInfo", "SelectionStep", "backbone_attention", "explaining",
    "scatter_to_grid", "tokens_to_grid",
]


@dataclass(frozen=True)
class MapInfo:
    """One map a method can explain: its panel title, what it shows, and how it is drawn and indexed.

    mask: a selection of cells (1 chosen, 0 not): drawn as an outline, not a tint.
    per_head: has one map per attention head besides the heads combined (``GridMap.heads``).
    per_layer: has one map per layer (only ``attention``: ``Explanation.attention``).
    shows_box: the map that chose ``output.boxes``: the box is drawn on it.
    """

    title: str
    description: str
    mask: bool = False
    per_head: bool = False
    per_layer: bool = False
    shows_box: bool = False


#: The maps of every method (the plain ViT's): what ``FGVCModel.explain`` computes from the backbone.
COMMON_MAPS: dict[str, MapInfo] = {
    "attention": MapInfo("CLS attention", "CLS attention (one layer, one head or the head mean)", per_head=True,
                         per_layer=True),
    "rollout": MapInfo("rollout", "attention rollout through the layers"),
}


@dataclass
class GridMap:
    """One map over the patch grid: ``all`` (B, rows, cols) float32 with the heads combined (their mean, or
    for selections their count), and ``heads`` (B, heads, rows, cols) per head for maps that have heads."""

    all: Tensor
    heads: Tensor | None = None

    def get(self, head: int | None = None) -> Tensor:
        """(B, rows, cols): one head's map, or the heads combined (``head`` None, or a map without heads)."""
        return self.all if head is None or self.heads is None else self.heads[:, head]


@dataclass
class Explanation:
    """What ``FGVCModel.explain`` returns for a batch.

    output: the model's evaluation output (``boxes``: the region the method selected, when it crops).
    attention: per layer, the global token's (CLS's) attention to every patch, with one map per head.
    maps: the other maps by name (``rollout`` and the method's ``own_maps``).
    """

    output: ModelOutput
    attention: list[GridMap]
    maps: dict[str, GridMap] = field(default_factory=dict)


@dataclass(frozen=True)
class SelectionStep:
    """A method's selection step for ``fgvc benchmark``: ``run()`` selects from one encoder pass already made.

    name: what it computes (``"similarity + top-8 + box"``); reference: a costlier textbook version shown for
    comparison (e.g. a full T x T product), not what the method runs.
    """

    name: str
    run: Callable[[], Any]
    reference: bool = False


@contextlib.contextmanager
def explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradient within the context; the model's training mode is restored on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def tokens_to_grid(values: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """(..., N) values over the patches, raster order -> (..., rows, cols)."""
    rows, cols = grid_size
    if values.shape[-1] != rows * cols:
        raise ValueError(f"expected {rows}x{cols}={rows * cols} patch values, got {values.shape[-1]}")
    return values.reshape(*values.shape[:-1], rows, cols)


def scatter_to_grid(index: Tensor, values: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Patch indices (B, K) with values (B, K) -> (B, rows, cols) float32, summed where indices repeat."""
    rows, cols = grid_size
    out = torch.zeros(index.shape[0], rows * cols, dtype=torch.float32, device=index.device)
    out.scatter_add_(1, index.long(), values.float())
    return out.reshape(-1, rows, cols)


def backbone_attention(
    backbone: nn.Module, x: Tensor, blocks: Sequence[nn.Module] | None = None
) -> tuple[list[GridMap], GridMap]:
    """The CLS attention of every block in ``blocks`` (default: all) and their rollout, over (B, 3, H, W) ``x``.

    One pass through the blocks, recording one block's (B, heads, T, T) attention at a time
    (``ViTBackbone.record_attention``) and keeping only its CLS row and head mean: at 448 px a ViT-B's full maps
    take about 350 MB per image. For ViTs without a CLS token the row is the mean of the patch rows
    (``ViTBackbone.global_token``). Returns (per block a ``GridMap`` with heads, the rollout ``GridMap``).
    """
    bb = backbone
    if not hasattr(bb, "record_attention"):
        raise ValueError(f"attention maps need a ViT backbone (patch tokens and attention); this model's is a "
                         f"{type(bb).__name__}")
    blocks = list(bb.blocks) if blocks is None else list(blocks)
    prefix, grid = bb.num_prefix_tokens, bb.grid_size
    attention, head_means = [], []
    tokens = bb.embed(x)  # (B, T, D)
    for block in blocks:  # as bb(x, return_attention=True), one block's maps at a time
        with bb.record_attention(blocks=[block]) as recorded:
            tokens = block(tokens, **bb.block_kwargs())  # EVA-02: rotary embeddings
        attn = recorded[0].float()  # (B, heads, T, T)
        row = attn[:, :, 0] if bb.has_class_token else attn[:, :, prefix:].mean(2)  # (B, heads, T)
        row = row[:, :, prefix:]  # (B, heads, N)
        attention.append(GridMap(tokens_to_grid(row.mean(1), grid), heads=tokens_to_grid(row, grid)))
        head_means.append(attn.mean(1, keepdim=True))  # (B, 1, T, T): what the rollout multiplies
        del attn, recorded
    rollout = GridMap(rollout_map(head_means, prefix, grid))
    return attention, rollout
