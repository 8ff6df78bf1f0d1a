"""``build_dataset``: one entry point for every dataset by name, and the splits each one offers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .aircraft import FGVCAircraft, read_aircraft
from .cars import StanfordCars, _devkit_root, read_cars
from .common import Records
from .cub import CUB200, read_cub
from .flowers import Flowers102, read_flowers
from .folder import FOLDER_SPLITS, ImageFolderDataset, folder_splits, read_folder
from .nabirds import NABirds, read_nabirds
from .synthetic import SyntheticFGVC

__all__ = ["DATASETS", "READERS", "build_dataset", "dataset_splits", "list_datasets"]

#: Dataset classes by name (``"synthetic"`` is ``SyntheticFGVC``, generated rather than read).
DATASETS: dict[str, type[Dataset]] = {
    "cub": CUB200,
    "cars": StanfordCars,
    "aircraft": FGVCAircraft,
    "nabirds": NABirds,
    "flowers": Flowers102,
    "folder": ImageFolderDataset,
    "synthetic": SyntheticFGVC,
}

#: Annotation readers of the file-backed datasets: ``reader(root, split, **options) -> Records``.
READERS: dict[str, Callable[..., Records]] = {
    "cub": read_cub,
    "cars": read_cars,
    "aircraft": read_aircraft,
    "nabirds": read_nabirds,
    "flowers": read_flowers,
    "folder": read_folder,
}


def list_datasets() -> list[str]:
    """The names ``build_dataset`` accepts."""
    return list(DATASETS)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list_datasets()} (or 'folder' for any image folder)")


def dataset_splits(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """The disjoint splits of a dataset (FGVC-Aircraft also accepts ``"trainval"``, train + val)."""
    _check_name(name)
    if name == "synthetic":
        return ["train", "val", "test"]
    if name in ("aircraft", "flowers"):
        return ["train", "val", "test"]
    if name == "folder":
        return folder_splits(_need_root(name, root))
    if name == "cars":
        root = Path(_need_root(name, root)).expanduser()
        if _devkit_root(root) is None:
            for candidate in (root, root / "stanford_cars"):
                if any((candidate / s).is_dir() for s in FOLDER_SPLITS):
                    return folder_splits(candidate)
    return ["train", "test"]


def _need_root(name: str, root: str | os.PathLike | None) -> str | os.PathLike:
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder")
    return root


def build_dataset(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    transform: Callable[[Any], Any] | None = None,
    **options: Any,
) -> Dataset:
    """A dataset by name: ``"cub"``, ``"cars"``, ``"aircraft"``, ``"nabirds"``, ``"flowers"``, ``"folder"`` or
    ``"synthetic"``.

    Items are ``(transform(image), label)`` (a PIL RGB image without a transform); every dataset has
    ``classes``, ``targets`` and, where it has boxes, ``boxes`` (fractions of the original image) and
    ``boxes_pixels``. ``options`` go to the dataset: ``skip_corrupt`` for the file-backed ones,
    ``annotation_level`` / ``remove_banner`` for aircraft, ``num_samples`` / ``num_classes`` /
    ``image_size`` / ``seed`` ... for synthetic (whose ``root`` is ignored and may be None).

        train = build_dataset("cub", "data/CUB_200_2011", "train", build_transforms(model, train=True))
    """
    _check_name(name)
    if name == "synthetic":
        return SyntheticFGVC(split=split, transform=transform, **options)
    return DATASETS[name](_need_root(name, root), split, transform, **options)
