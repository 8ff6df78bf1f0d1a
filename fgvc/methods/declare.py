"""What a method's module may declare for the generic code, beside its registered class.

A method is one file: the generic code finds these module-level names through the registry
(``fgvc.methods.base.declared``), never by importing a method by name.

* ``OFFICIAL_FORMAT``: an ``OfficialFormat``, the checkpoints of the method's official code that
  ``fgvc convert`` and ``fgvc.load_model`` read (``fgvc.storage.convert`` loads the file safely, picks the
  format by its keys and calls its ``convert``).
* ``RECIPES``: a ``MethodRecipes``, the settings of the method's shipped recipes, one per dataset and size
  (``scripts/make_recipes.py`` writes them to ``fgvc/recipes/<method>_<dataset>_<size>.yaml``).

Also here: the helpers the official-checkpoint converters read state dicts with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from .base import FGVCModel

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "MethodRecipes", "OfficialFormat", "VIT_HEADS_BY_WIDTH", "block_count",
    "strip_prefixes",
]

#: (model, data, train) settings and the comment lines of one recipe.
RecipeParts = tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[str]]


@dataclass(frozen=True)
class OfficialFormat:
    """A checkpoint format of a method's official code, as the method module's ``OFFICIAL_FORMAT``."""

    #: What ``fgvc.load_model(format=...)`` and ``fgvc convert --format`` call it, e.g. ``"glsim-official"``.
    name: str
    #: What its files hold, in the error that lists the known formats.
    description: str
    #: Key prefixes of its ``"model"`` state dict (``module.`` / ``model.`` stripped), any of which identifies it.
    keys: tuple[str, ...]
    #: (the loaded checkpoint dict, keyword options) -> the fgvc model with the same outputs.
    convert: Callable[..., FGVCModel]


@dataclass(frozen=True)
class MethodRecipes:
    """The settings of a method's shipped recipes, as the method module's ``RECIPES``."""

    #: (dataset, size) -> (model, data, train) settings and the comment lines of the recipe; None: ``settings_of``'s.
    settings: Callable[[str, int], RecipeParts] | None = None
    #: A method whose recipe settings these recipes reuse (the plain baseline trained with DCAL's), named in
    #: ``notes`` lines put first.
    settings_of: str | None = None
    notes: tuple[str, ...] = ()
    #: (dataset, size) -> (the paper's top-1, its source) where a paper reports exactly that setting.
    expected: Mapping[tuple[str, int], tuple[float, str]] = field(default_factory=dict)
    #: (dataset, size) -> why the recipe has no expected top-1.
    not_reported: Callable[[str, int], str] = lambda dataset, size: "no paper number for this setting"


# Both official codes normalize Google's ViT-B/16 weights with the ImageNet statistics (GLSim
# glsim/data_utils/build_transform.py:90-91, MEANS / STDS['imagenet'] at :9 and :19, custom_mean_std off by
# default, glsim/other_utils/build_args.py:140; TransFG utils/data_utils.py:25, 29, 43, 53, 82, 86), not with
# the 0.5 / 0.5 of timm's config for these weights. The recipes set them on the model (timm's
# pretrained_cfg_overlay), so training, evaluation, prediction and the figures all use them.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

#: Attention heads of the ViT family of each width (ViT-Ti, S, B, L, H): official checkpoints that store no config.
VIT_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def strip_prefixes(state: dict[str, Tensor], *prefixes: str) -> dict[str, Tensor]:
    """``state`` without each prefix that every key has (``module.`` after DistributedDataParallel, ...)."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def block_count(state: dict[str, Tensor], prefix: str) -> int:
    """How many numbered blocks ``<prefix><i>.`` the state dict has."""
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0
