"""The methods, one module each, all registered in one registry (``create_model`` / ``list_models``)."""

from . import dcal, glsim, transfg, vit  # noqa: F401  (importing registers the methods)
from .base import (
    BASELINE,
    FGVCModel,
    ModelOutput,
    create_model,
    list_models,
    model_class,
    model_options,
    register_model,
    unregister_model,
)
from .dcal import DCAL
from .explain import Explanation, GridMap, MapInfo, SelectionStep
from .glsim import GLSim
from .transfg import TransFG
from .vit import ViT

#: The methods fgvc ships, in the order its tables and figures list them (``fgvc demo``, ``fgvc benchmark``).
SHIPPED_METHODS = ("vit", "glsim", "dcal", "transfg")

__all__ = [
    "BASELINE", "DCAL", "Explanation", "FGVCModel", "GLSim", "GridMap", "MapInfo", "ModelOutput", "SHIPPED_METHODS",
    "SelectionStep", "TransFG", "ViT", "create_model", "list_models", "model_class", "model_options",
    "register_model", "unregister_model",
]
