"""The adapters over timm that every method builds on.

* ``vit``: ``ViTBackbone``, the adapter over timm's ViT family (tokens, blocks, attention maps, any input size);
* ``classifier``: ``TimmBackbone``, any other timm classifier behind the plain baseline;
* ``shipped``: the backbones whose weights ship with fgvc (``fgvc/weights/``), by name.
"""

from .classifier import TimmBackbone
from .shipped import SHIPPED_BACKBONES, ShippedBackbone, list_shipped, shipped_backbone
from .vit import EncoderOutput, ViTBackbone

__all__ = [
    "SHIPPED_BACKBONES",
    "EncoderOutput",
    "ShippedBackbone",
    "TimmBackbone",
    "ViTBackbone",
    "list_shipped",
    "shipped_backbone",
]
