"""The methods, one module each, all registered in one registry (``create_model`` / ``list_models``)."""

from . import dcal, glsim, transfg, vit  # noqa: F401  (importing registers the methods)
from .base import FGVCModel, ModelOutput, create_model, list_models, model_options, register_model
from .dcal import DCAL
from .glsim import GLSim
from .transfg import TransFG
from .vit import ViT

__all__ = [
    "DCAL", "FGVCModel", "GLSim", "ModelOutput", "TransFG", "ViT", "create_model", "list_models", "model_options",
    "register_model",
]
