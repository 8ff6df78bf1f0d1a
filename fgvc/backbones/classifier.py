"""Any timm classifier (ResNet, ConvNeXt, Swin, ...) as the backbone of the plain baseline.

fgvc's methods read ViT tokens and attention (``ViTBackbone``); the plain ``vit`` baseline only needs a pooled
image feature. ``TimmBackbone`` gives exactly that for every other timm model, through timm's own
``forward_features`` and ``forward_head(pre_logits=True)``, so a CNN or Swin number can sit in the same table
as the ViT methods, trained by the same loop and recipes and evaluated the same way. Methods that need a ViT
refuse other backbones at construction, saying so (``is_vit_family``).
"""

from __future__ import annotations

import os
from typing import Any

import timm
from torch import Tensor, nn

from ..io import backbone_state_dict, load_timm_state
from .vit import EncoderOutput, to_2tuple

__all__ = ["VIT_MODULES", "TimmBackbone", "is_vit_family", "timm_module"]

#: timm modules whose models are VisionTransformer-like (patch embedding, prefix tokens, blocks): ViTBackbone.
VIT_MODULES = frozenset({"vision_transformer", "vision_transformer_hybrid", "deit", "eva"})


def timm_module(name: str) -> str | None:
    """The timm module that defines model ``name`` (``resnet18`` -> ``resnet``), or None for unknown names."""
    from timm.models import get_arch_name, is_model
    from timm.models._registry import _model_to_module

    arch = get_arch_name(name)
    return _model_to_module.get(arch) if is_model(arch) else None


def is_vit_family(name: str) -> bool:
    """Whether ``ViTBackbone`` handles ``name``: timm's ViT / DeiT / EVA families, and names timm does not know
    (fgvc's own shipped backbones, or models registered elsewhere, which ``ViTBackbone`` then checks)."""
    module = timm_module(name)
    return module is None or module in VIT_MODULES


class TimmBackbone(nn.Module):
    """A timm classifier without its head: ``forward`` gives its features, ``pool`` the image feature (B, D).

    Args mirror ``ViTBackbone``: ``img_size`` (the input the model is trained and evaluated at; passed to
    timm for models that take it, e.g. Swin), ``pretrained``, ``checkpoint_path`` (a local ``.pth`` /
    ``.safetensors``, read safely), ``drop_path_rate`` and timm keyword arguments. ``tokens`` of the
    ``EncoderOutput`` is whatever ``forward_features`` returns (a (B, C, H, W) map for CNNs, (B, H, W, C) for
    Swin); there are no attention maps. ``vit`` is the timm model itself, whatever its family: the attribute
    has ``ViTBackbone``'s name so that checkpoints store both backbones' weights as ``backbone.vit.*``.
    """

    has_class_token = False
    num_prefix_tokens = 0

    def __init__(
        self,
        name: str,
        *,
        img_size: int | tuple[int, int] = 224,
        pretrained: bool = False,
        checkpoint_path: str | os.PathLike | None = None,
        drop_path_rate: float = 0.0,
        patch_stride: int | None = None,
        pos_embed_interpolation: str | None = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        if patch_stride is not None:
            raise ValueError(f"patch_stride (overlapping patches) needs a ViT backbone; {name} is not one")
        if pos_embed_interpolation is not None:
            raise ValueError(f"pos_embed_interpolation (how ViT position embeddings are resampled) needs a ViT "
                             f"backbone; {name} is not one")
        self.name = name
        self.img_size = to_2tuple(img_size)
        kwargs: dict[str, Any] = dict(num_classes=0, **timm_kwargs)
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        state = None
        if checkpoint_path is not None:  # read safely, loaded strictly once built (as ViTBackbone does)
            state, aside = backbone_state_dict(checkpoint_path)
            pretrained = False
        #: whether timm built the model for ``img_size`` (Swin and other windowed models); CNNs take any size
        self.takes_img_size = True
        # ``vit`` holds the timm model whatever its family (a ResNet, ConvNeXt, Swin, ...): the name is
        # ``ViTBackbone``'s, so that every backbone's weights are stored as ``backbone.vit.*`` (the keys of
        # fgvc's checkpoints, read by ``fgvc.io.backbone_state_dict``) and code that reads the timm model
        # (``backbone.vit``: its pretrained configuration, its no-weight-decay set, ``export_timm``) reads
        # both backbones alike. Renaming it would change the checkpoint format.
        try:
            self.vit = timm.create_model(name, pretrained=pretrained, img_size=self.img_size, **kwargs)
        except TypeError as e:
            if "img_size" not in str(e):
                raise
            self.takes_img_size = False
            self.vit = timm.create_model(name, pretrained=pretrained, **kwargs)
        #: what ``checkpoint_path`` gave (as ``ViTBackbone.load_report``), None otherwise
        self.load_report: dict[str, Any] | None = None
        if state is not None:
            self.load_report = load_timm_state(self.vit, state, os.fspath(checkpoint_path), name)
            self.load_report["left_aside"] += aside

    @property
    def embed_dim(self) -> int:
        """Width of the pooled feature."""
        return self.vit.num_features

    @property
    def data_config(self) -> dict[str, Any]:
        """mean / std / interpolation from the pretrained configuration, input_size at ``img_size``."""
        cfg = dict(timm.data.resolve_model_data_config(self.vit))
        cfg["input_size"] = (3, *self.img_size)
        return cfg

    def forward(self, x: Tensor, *, return_hidden_states: bool = False, return_attention: bool = False) -> EncoderOutput:
        """Images (B, 3, H, W) -> ``EncoderOutput(tokens=forward_features(x))``."""
        if return_hidden_states or return_attention:
            raise ValueError(f"{self.name} is not a ViT: it has no per-layer tokens or attention maps")
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"{self.name} was built for {self.img_size[0]}x{self.img_size[1]} inputs, got "
                f"{x.shape[-2]}x{x.shape[-1]}; build the model with img_size={tuple(x.shape[-2:])}"
            )
        return EncoderOutput(tokens=self.vit.forward_features(x))

    def pool(self, features: Tensor) -> Tensor:
        """Features -> image feature (B, D), the way the timm model pools before its classifier."""
        return self.vit.forward_head(features, pre_logits=True)

    def global_token(self, features: Tensor) -> Tensor:
        """The pooled feature (there is no token for the whole image)."""
        return self.pool(features)
