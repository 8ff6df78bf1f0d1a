"""The plain ViT baseline: the backbone's pooled token (CLS after the final norm) and one linear head."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import FGVCModel, ModelOutput, register_model


@register_model("vit")
class ViT(FGVCModel):
    """Plain fine-tuned ViT: what every FGVC method is compared against."""

    def __init__(self, **common: Any) -> None:
        super().__init__(**common)
        self.head = nn.Linear(self.backbone.embed_dim, self.num_classes)
        # the new head starts at zero (as GLSim's official code and big_vision's fine-tuning): a random head
        # would dominate the logits for many steps at a fine-tuning learning rate
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> ModelOutput:
        tokens = self.backbone(x).tokens  # (B, T, D)
        feature = self.backbone.pool(tokens)  # (B, D)
        return ModelOutput(logits=self.head(feature), embedding=feature)
