"""The dataset contract: what fgvc reads from a dataset besides its items.

Every fgvc dataset derives from ``FGVCDataset``, whose docstring is the one place the attributes are defined.
Training, evaluation and the views (``SubsetDataset``, ``EvalBoxes``) also accept any map-style dataset of
``(image, label)`` items with ``targets``; they read the optional attributes through the functions below,
which give None where a dataset lacks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = [
    "BOX_ATTRIBUTES",
    "FGVCDataset",
    "boxes_pixels_of",
    "classes_of",
    "display_names_of",
    "input_boxes_of",
    "num_classes_of",
    "targets_of",
]

#: The per-sample box attributes, (N, ...) each: a view of some samples takes the same rows of every one.
BOX_ATTRIBUTES: tuple[str, ...] = ("boxes", "boxes_pixels", "image_sizes", "input_boxes")


class FGVCDataset(Dataset):
    """A fine-grained dataset: items ``(image, label)`` and these attributes (None where a dataset has none).

    - ``targets``: the int label of every sample, in order. Splits, label checks and per-class metrics read it
      without loading any image.
    - ``classes``: class names in label order (None: unnamed classes, shown as their labels).
    - ``display_names``: readable class names in label order (default: ``classes``).
    - ``boxes``: (N, 4) ground-truth boxes as fractions (x0, y0, x1, y1) of the *original* image.
    - ``boxes_pixels``: (N, 4) the same boxes in original pixels (exclusive ends); ``image_sizes``: (N, 2)
      original (width, height). ``EvalBoxes`` maps them into the model's input frame.
    - ``input_boxes``: (N, 4) boxes as fractions of the *model input*, after the test transform: what
      ``fgvc.evaluate`` scores crop IoU and the pointing game against. A dataset read from disk has none
      (its test transform crops); ``EvalBoxes`` gives them, and ``SyntheticFGVC`` (drawn at the input size)
      has them itself.
    - ``num_classes``: ``len(classes)``, or the largest label + 1 for unnamed classes.
    """

    targets: Sequence[int]
    classes: Sequence[str] | None = None
    display_names: Sequence[str] | None = None
    boxes: torch.Tensor | None = None
    boxes_pixels: torch.Tensor | None = None
    image_sizes: torch.Tensor | None = None
    input_boxes: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return num_classes_of(self)


def targets_of(data: Any) -> Sequence[int] | None:
    """The ``targets`` (int labels) of any dataset, or None."""
    return getattr(data, "targets", None)


def classes_of(data: Any) -> Sequence[str] | None:
    """The ``classes`` (names in label order) of any dataset, or None."""
    return getattr(data, "classes", None)


def display_names_of(data: Any) -> Sequence[str] | None:
    """The ``display_names`` of any dataset, or None."""
    return getattr(data, "display_names", None)


def input_boxes_of(data: Any) -> torch.Tensor | None:
    """The ``input_boxes`` (fractions of the model input) of any dataset, or None."""
    return getattr(data, "input_boxes", None)


def boxes_pixels_of(data: Any) -> torch.Tensor | None:
    """The ``boxes_pixels`` (original pixels) of any dataset, or None."""
    return getattr(data, "boxes_pixels", None)


def num_classes_of(data: Any) -> int:
    """``len(classes)`` of any dataset, else its largest label + 1 (0 without either)."""
    names = classes_of(data)
    if names is not None:
        return len(names)
    targets = targets_of(data)
    return 0 if targets is None else int(max(targets, default=-1)) + 1
