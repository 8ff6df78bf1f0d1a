"""The plain baseline: the backbone's pooled feature and one linear head.

On a ViT the pooled token is the CLS token after the final norm (or timm's pooling for ViTs without one); on
any other timm classifier (ResNet, ConvNeXt, Swin: ``fgvc.backbones.classifier.TimmBackbone``) it is timm's own
pooled pre-logits feature, so ``head`` plays the role of timm's classifier exactly.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import FGVCModel, ModelOutput, register_model
from .declare import MethodRecipes


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


# ------------------------------------------------------------------------------------------- recipes
DCAL_PAPER = "Zhu et al.: Dual Cross-Attention Learning for Fine-Grained Visual Categorization and Object Re-Identification, CVPR 2022, Table 1"
_DCAL_BASELINE = f"{DCAL_PAPER}, its ViT-B/16 baseline (trained with DCAL's settings, which this recipe uses)"

RECIPES = MethodRecipes(
    settings_of="dcal",
    notes=("Plain ViT baseline, trained with DCAL's settings (the baseline DCAL's table reports).",),
    expected={
        ("cub", 448): (90.8, _DCAL_BASELINE),
        ("cars", 448): (92.5, _DCAL_BASELINE),
        ("aircraft", 448): (90.0, _DCAL_BASELINE),
    },
    not_reported=lambda dataset, size: "no paper number for this plain ViT-B/16 setting at this size / on this dataset",
)
