"""Backbones that ship inside fgvc, pretrained by fgvc itself on its synthetic data (no download).

``create_model(method, backbone="fgvc_synth_vit_tiny", pretrained=True, ...)`` builds the timm architecture
below and loads the weights from ``fgvc/weights/``, resampling the position embeddings to the requested
``img_size`` as for any timm weights. Each weight file has a model card beside it (``NAME.md``): the data,
the objective, the settings, the seed, the time taken and the command that re-creates it
(``fgvc pretrain``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SHIPPED_BACKBONES", "ShippedBackbone", "list_shipped", "shipped_backbone"]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # fgvc/weights/ (package data)


@dataclass(frozen=True)
class ShippedBackbone:
    """A timm ViT architecture, its settings, and the weight file that ships with fgvc."""

    name: str
    timm_name: str
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    img_size: int = 128  # the resolution it was pretrained at

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    @property
    def model_card(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.md"


SHIPPED_BACKBONES: dict[str, ShippedBackbone] = {
    b.name: b
    for b in [
        ShippedBackbone(
            "fgvc_synth_vit_tiny",
            "vit_tiny_patch16_224",
            dict(patch_size=8, embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0),
            img_size=128,
        ),
    ]
}


def shipped_backbone(name: str) -> ShippedBackbone | None:
    """The shipped backbone called ``name`` (a ``.tag`` suffix is ignored), or None."""
    return SHIPPED_BACKBONES.get(name.split(".")[0])


def list_shipped() -> list[str]:
    """Names of the backbones whose weights ship with fgvc."""
    return sorted(n for n, b in SHIPPED_BACKBONES.items() if b.weights.is_file())
