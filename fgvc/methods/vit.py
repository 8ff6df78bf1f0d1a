"""The plain baseline: the backbone's pooled feature and one linear head.

On a ViT the pooled token is the CLS token after the final norm (or timm's pooling for ViTs without one); on
any other timm classifier (ResNet, ConvNeXt, Swin: ``fgvc.backbones.classifier.TimmBackbone``) it is timm's own
pooled pre-logits feature, so ``head`` plays the role of timm's classifier exactly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import FGVCModel, ModelOutput, register_model


@register_model("vit")
class ViT(FGVCModel):
    """Plain fine-tuned backbone (a ViT, or any timm classifier): what every FGVC method is compared against."""

    display_name = "ViT"
    needs_vit = False

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
