"""The methods, one module each, all registered in one registry (``create_model`` / ``list_models``).

Shipping a method is its module plus one import line below (importing it registers it; the order of these
lines is the order fgvc's tables and figures list the methods). Everything else the package reads from the
method's module through the registry (``fgvc.methods.declare``: its official checkpoint format, its recipes).
"""

# One line per shipped method, in the shipped order.
# isort: off
from .vit import ViT
from .glsim import GLSim
from .dcal import DCAL
from .transfg import TransFG
# isort: on

from .base import (
    BASELINE,
    FGVCModel,
    ModelOutput,
    UnknownMethodError,
    create_model,
    list_models,
    model_class,
    model_options,
    register_model,
    shipped_methods,
    unregister_model,
)
from .explain import Explanation, GridMap, MapInfo, SelectionStep

#: The methods fgvc ships, in the order its tables and figures list them (``fgvc demo``, ``fgvc benchmark``).
SHIPPED_METHODS = tuple(shipped_methods())

__all__ = [
    "BASELINE", "DCAL", "Explanation", "FGVCModel", "GLSim", "GridMap", "MapInfo", "ModelOutput", "SHIPPED_METHODS",
    "SelectionStep", "TransFG", "UnknownMethodError", "ViT", "create_model", "list_models", "model_class",
    "model_options", "register_model", "shipped_methods", "unregister_model",
]
