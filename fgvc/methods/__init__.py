"""The methods, one module each, all registered in one registry (``create_model`` / ``list_models``)."""

from . import glsim, vit  # noqa: F401  (importing registers the methods)
from .base import FGVCModel, ModelOutput, create_model, list_models, register_model
from .glsim import GLSim
from .vit import ViT

__all__ = ["FGVCModel", "GLSim", "ModelOutput", "ViT", "create_model", "list_models", "register_model"]
