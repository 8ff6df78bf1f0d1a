"""The result of any fgvc model's forward: one kind of object in training and in evaluation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from torch import Tensor

from ..backbones.vit import shape_repr

__all__ = ["ModelOutput"]


@dataclass
class ModelOutput:
    """The result of any fgvc model's forward.

    logits: (B, C) class scores used for prediction.
    embedding: (B, D) the image embedding (for retrieval and analysis), when the method has one.
    boxes: (B, 4) selected region as (x0, y0, x1, y1) input pixels, exclusive ends, for methods that crop.
    selection_map: (B, rows, cols) the map over patches the method selects with (GLSim's CLS-patch
        similarity, DCAL's attention rollout), for methods that select; ``evaluate`` scores its peak
        (the pointing game).
    extras: method-specific tensors that the method's own loss reads (never the training loop).
    """

    logits: Tensor
    embedding: Tensor | None = None
    boxes: Tensor | None = None
    selection_map: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def similarity(self) -> Tensor | None:
        """Deprecated name of ``selection_map`` (read-only), kept so that code written for it still reads."""
        warnings.warn("ModelOutput.similarity is deprecated: use ModelOutput.selection_map",
                      DeprecationWarning, stacklevel=2)
        return self.selection_map

    def __repr__(self) -> str:
        """Shapes, not values: ``ModelOutput(logits=(2, 10), embedding=(2, 64), extras={features: (2, 64)})``."""
        parts = [f"{f}={shape_repr(getattr(self, f))}" for f in ("logits", "embedding", "boxes", "selection_map")]
        parts = [p for p in parts if not p.endswith("=None")]
        if self.extras:
            parts.append("extras={" + ", ".join(f"{k}: {shape_repr(v)}" for k, v in self.extras.items()) + "}")
        return "ModelOutput(" + ", ".join(parts) + ")"
