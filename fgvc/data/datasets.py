"""``build_dataset``: one entry point for every dataset by name, and the splits each one offers.

Each dataset module defines its ``DEFINITION`` (a ``DatasetDef``: class, reader, splits); this module only
collects them by name. ``register_dataset`` adds another.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from .aircraft import DEFINITION as AIRCRAFT
from .cars import DEFINITION as CARS
from .common import Records
from .cub import DEFINITION as CUB
from .definition import DatasetDef
from .flowers import DEFINITION as FLOWERS
from .folder import DEFINITION as FOLDER
from .nabirds import DEFINITION as NABIRDS
from .synthetic import DEFINITION as SYNTHETIC

__all__ = [
    "DATASETS",
    "READERS",
    "build_dataset",
    "dataset_definition",
    "dataset_splits",
    "list_datasets",
    "register_dataset",
]

_DEFINITIONS: dict[str, DatasetDef] = {}
#: Dataset classes by name (``"synthetic"`` is ``SyntheticFGVC``, generated rather than read).
DATASETS: dict[str, type[Dataset]] = {}
#: Annotation readers of the file-backed datasets: ``reader(root, split, **options) -> Records``.
READERS: dict[str, Callable[..., Records]] = {}


def register_dataset(definition: DatasetDef) -> DatasetDef:
    """Make ``definition`` available by its name to ``build_dataset``, recipes and ``fgvc data check``."""
    _DEFINITIONS[definition.name] = definition
    DATASETS[definition.name] = definition.cls
    if definition.reader is not None:
        READERS[definition.name] = definition.reader
    return definition


for _definition in (CUB, CARS, AIRCRAFT, NABIRDS, FLOWERS, FOLDER, SYNTHETIC):
    register_dataset(_definition)


def list_datasets() -> list[str]:
    """The names ``build_dataset`` accepts."""
    return list(_DEFINITIONS)


def dataset_definition(name: str) -> DatasetDef:
    """The ``DatasetDef`` registered as ``name``."""
    if name not in _DEFINITIONS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list_datasets()} (or 'folder' for any image folder)")
    return _DEFINITIONS[name]


def dataset_splits(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """The disjoint splits of a dataset (FGVC-Aircraft also accepts ``"trainval"``, train + val)."""
    return dataset_definition(name).split_names(root)


def build_dataset(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    transform: Callable[[Any], Any] | None = None,
    **options: Any,
) -> Dataset:
    """A dataset by name: ``"cub"``, ``"cars"``, ``"aircraft"``, ``"nabirds"``, ``"flowers"``, ``"folder"`` or
    ``"synthetic"``.

    Items are ``(transform(image), label)`` (a PIL RGB image without a transform); every dataset is an
    ``FGVCDataset``: ``classes``, ``targets`` and, where it has boxes, ``boxes`` (fractions of the original
    image) and ``boxes_pixels``. ``options`` go to the dataset: ``skip_corrupt`` for the file-backed ones,
    ``annotation_level`` / ``remove_banner`` for aircraft, ``num_samples`` / ``num_classes`` /
    ``image_size`` / ``seed`` ... for synthetic (whose ``root`` is ignored and may be None).

        train = build_dataset("cub", "data/CUB_200_2011", "train", build_transforms(model, train=True))
    """
    return dataset_definition(name).build(root, split, transform, **options)
