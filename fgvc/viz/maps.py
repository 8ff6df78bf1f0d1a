"""The maps of what a model looks at, computed once per batch and read by kind, layer and head.

    maps = attention_maps(model, images)             # the model's explain(): its forward, then its backbone's
    maps.kinds                                       # e.g. ['attention', 'rollout', 'similarity']
    maps.get("attention", layer=3, head=1)           # (B, rows, cols)

Kinds (all (B, rows, cols) over the patch grid, ``backbone.grid_size``) are what the model explains
(``model.map_info()``, the contract of ``fgvc.methods.explain``):

* ``attention``: the CLS token's attention to each patch in one layer, one head or the head mean (every
  method: the backbone's own attention on the image; a method may add layers of its own, such as a part block
  that sees the selected tokens only).
* ``rollout``: attention rollout over the layers (``fgvc.layers.rollout``), every method.
* the method's own maps (``model.own_maps``): e.g. GLSim's ``similarity``, DCAL's ``glca_queries`` and
  ``glca_attention``, TransFG's ``parts``; each ``MapInfo`` says what it shows and whether it has heads or
  is a selection of cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..layers.geometry import PatchGrid
from ..methods.base import FGVCModel, ModelOutput
from ..methods.explain import COMMON_MAPS, GridMap, MapInfo

__all__ = ["AttentionMaps", "attention_maps", "available_maps", "map_box"]

def available_maps(model: FGVCModel) -> list[str]:
    """The map kinds ``model`` has: ``attention`` and ``rollout`` always, then its method's own."""
    return list(model.map_info())


@dataclass
class AttentionMaps:
    """Everything needed to draw any map of a batch (see the module doc); read it with ``get``.

    output: the model's evaluation output for the batch.
    attention: per layer, the CLS attention to the patches with one map per head (``GridMap``).
    maps: the other kinds by name (``rollout`` and the method's own).
    info: every kind's ``MapInfo`` (title, description, mask, per head / per layer).
    """

    method: str
    output: ModelOutput
    attention: list[GridMap]
    maps: dict[str, GridMap]
    grid_size: tuple[int, int]
    num_prefix_tokens: int
    img_size: tuple[int, int]
    patch_size: tuple[int, int]
    patch_stride: tuple[int, int]
    info: dict[str, MapInfo] = field(default_factory=lambda: dict(COMMON_MAPS))
    kinds: list[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        """Number of layers ``attention`` can show."""
        return len(self.attention)

    @property
    def num_heads(self) -> int:
        return self.attention[0].heads.shape[1]

    def get(self, kind: str, layer: int = -1, head: int | None = None) -> Tensor:
        """Map ``kind`` as (B, rows, cols) float32. ``layer`` (Python index) for ``attention``; ``head``
        (None: the heads combined) for the kinds with heads."""
        if kind not in self.kinds:
            raise ValueError(f"map {kind!r} is not available for {self.method}; available: {', '.join(self.kinds)}")
        if head is not None and not -self.num_heads <= head < self.num_heads:
            raise ValueError(f"head={head} out of range for {self.num_heads} heads")
        if kind == "attention":
            return self.cls_attention(layer, head)
        return self.maps[kind].get(head)

    def cls_attention(self, layer: int = -1, head: int | None = None) -> Tensor:
        """(B, rows, cols): attention of the CLS token to each patch in ``layer``, ``head`` (None: mean)."""
        depth = self.depth
        if not -depth <= layer < depth:
            raise ValueError(f"layer={layer} out of range for {depth} layers")
        return self.attention[layer % depth].get(head)

    def describe(self, kind: str, layer: int = -1, head: int | None = None) -> str:
        """A panel title: ``"CLS attention, layer 2/12, head 3"``, ``"rollout"``, ``"GLCA attention, heads mean"``."""
        info = self.info.get(kind)
        text = info.title if info is not None else kind
        if info is not None and info.per_layer:
            text += f", layer {layer % self.depth + 1}/{self.depth}"
        if info is not None and info.per_head:
            text += ", heads mean" if head is None else f", head {head}"
        return text


def attention_maps(model: FGVCModel, images: Tensor) -> AttentionMaps:
    """Every map ``model`` explains for (B, 3, H, W) images (``model.explain``: eval mode, no gradient, the
    model's training mode restored), with the grid geometry needed to draw them."""
    bb = model.backbone
    device = next(model.parameters()).device
    explanation = model.explain(images.to(device))
    info = model.map_info()
    return AttentionMaps(
        method=model.method,
        output=explanation.output,
        attention=explanation.attention,
        maps=explanation.maps,
        grid_size=bb.grid_size,
        num_prefix_tokens=bb.num_prefix_tokens,
        img_size=bb.img_size,
        patch_size=bb.patch_size,
        patch_stride=bb.patch_stride,
        info=info,
        kinds=list(info),
    )


def map_box(
    heat: Tensor,
    k: int,
    img_size: tuple[int, int],
    patch_size: tuple[int, int],
    patch_stride: tuple[int, int] | None = None,
) -> Tensor:
    """Box around the k highest cells of (B, rows, cols) maps, in input pixels: (B, 4) int64 (x0, y0, x1, y1),
    exclusive ends, covering the selected patches whole (the last row and column included). ``k`` is clipped
    to the number of cells (``PatchGrid.top_box``)."""
    _, rows, cols = heat.shape
    grid = PatchGrid(rows, cols, patch_size, patch_stride, img_size)
    return grid.top_box(heat, max(1, min(k, grid.num_patches)))
