"""Stanford Cars: the devkit layout (as torchvision's ``StanfordCars`` reads it), or one folder per class.

The devkit's ``.mat`` files are read with ``scipy.io.loadmat`` like torchvision does, but here the boxes are
kept too. The devkit gives ``bbox_x1..bbox_y2`` as MATLAB pixel coordinates (1-based, last pixel included);
they become 0-based boxes with exclusive ends: ``(x1 - 1, y1 - 1, x2, y2)``. Class ids are 1-based in the
``.mat`` files: label = class id - 1, names from ``cars_meta.mat``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import ReaderDataset, Records, missing_annotation
from .definition import DatasetDef
from .folder import FOLDER_SPLITS, folder_splits, read_folder

__all__ = ["CARS_LAYOUT", "DEFINITION", "cars_splits", "StanfordCars", "read_cars"]

CARS_LAYOUT = """\
stanford_cars/
  devkit/cars_meta.mat             class_names (196 names, in class-id order)
  devkit/cars_train_annos.mat      annotations: bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1-based), fname
  cars_test_annos_withlabels.mat   the same for the test images (also accepted inside devkit/)
  cars_train/*.jpg
  cars_test/*.jpg
or one folder per class: stanford_cars/train/<class>/*.jpg, stanford_cars/test/<class>/*.jpg"""

_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        import scipy.io
    except ImportError:
        raise ImportError("reading the Stanford Cars devkit needs scipy: pip install scipy") from None
    if not path.is_file():
        raise missing_annotation(path, "cars", CARS_LAYOUT)
    try:
        return scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as e:  # scipy raises several types for a bad file
        raise ValueError(f"cars: cannot read {path}: {e}") from e


def _scalar(value: Any) -> Any:
    """A field of a loaded MATLAB struct (a number, a string or a one-element array) as a plain value."""
    array = np.asarray(value)
    return array.item() if array.size == 1 else value


def _number(value: Any, what: str) -> float:
    """A finite number, else an error saying which field of which annotation."""
    try:
        number = float(_scalar(value))
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {value!r}, not a number") from None
    if not np.isfinite(number):
        raise ValueError(f"{what} is {number}, not a finite number")
    return number


def _integer(value: Any, what: str) -> int:
    """A whole number (3 or 3.0), else an error: ``int()`` would silently turn a class id 3.7 into 3."""
    number = _number(value, what)
    if not number.is_integer():
        raise ValueError(f"{what} is {number:g}, not an integer")
    return int(number)


def _devkit_root(root: Path) -> Path | None:
    for candidate in (root, root / "stanford_cars"):
        if (candidate / "devkit").is_dir():
            return candidate
    return None


def read_cars(root: str | os.PathLike, split: str = "train") -> Records:
    """Records of Stanford Cars (``root`` is the ``stanford_cars`` folder or its parent)."""
    root = Path(root).expanduser()
    base = _devkit_root(root)
    if base is None:
        for candidate in (root, root / "stanford_cars"):
            if any((candidate / s).is_dir() for s in FOLDER_SPLITS):
                return read_folder(candidate, split, dataset="cars")
        raise FileNotFoundError(f"cars: no Stanford Cars found in {root}. Expected layout:\n{CARS_LAYOUT}")
    if split not in ("train", "test"):
        raise ValueError(
            f"cars has the splits 'train' and 'test', got {split!r}; carve a validation split from 'train' "
            "with fgvc.data.train_val_split"
        )
    devkit = base / "devkit"
    if split == "train":
        annos_path, image_dir = devkit / "cars_train_annos.mat", base / "cars_train"
    else:
        annos_path, image_dir = base / "cars_test_annos_withlabels.mat", base / "cars_test"
        if not annos_path.is_file() and (devkit / annos_path.name).is_file():
            annos_path = devkit / annos_path.name
    if not annos_path.is_file() and split == "test" and (devkit / "cars_test_annos.mat").is_file():
        raise FileNotFoundError(
            f"cars: {annos_path} is missing; devkit/cars_test_annos.mat has no class labels, the test labels "
            f"come in cars_test_annos_withlabels.mat. Expected layout:\n{CARS_LAYOUT}"
        )
    classes = [str(c) for c in np.atleast_1d(_loadmat(devkit / "cars_meta.mat").get("class_names", []))]
    if not classes:
        raise ValueError(f"cars: {devkit / 'cars_meta.mat'} has no 'class_names'")
    id_of: dict[str, int] = {}
    for cid, name in enumerate(classes, 1):
        first = id_of.setdefault(name, cid)
        if first != cid:
            raise ValueError(
                f"cars: {devkit / 'cars_meta.mat'}: class ids {first} and {cid} have the same name {name!r}; "
                "each class needs its own name"
            )
    annos = _loadmat(annos_path)
    if "annotations" not in annos:
        raise ValueError(f"cars: {annos_path} has no 'annotations' struct")
    annotations = np.atleast_1d(annos["annotations"])
    names = annotations.dtype.names or ()
    absent = [f for f in _FIELDS if f not in names]
    if absent:
        raise ValueError(f"cars: the annotations in {annos_path} lack the fields {absent} (have {list(names)})")

    paths, labels, boxes = [], [], []
    first_of: dict[str, int] = {}
    for k, a in enumerate(annotations):
        fname = str(_scalar(a["fname"]))
        where = f"cars: {annos_path}, annotation {k} ({fname})"
        first = first_of.setdefault(fname, k)
        if first != k:
            raise ValueError(
                f"cars: {annos_path}: fname {fname!r} in annotations {first} and {k}; each image must appear once"
            )
        cid = _integer(a["class"], f"{where}: class id")
        if not 1 <= cid <= len(classes):
            raise ValueError(f"{where}: class id {cid} is outside 1..{len(classes)}")
        paths.append(str(image_dir / fname))
        labels.append(cid - 1)
        x1, y1, x2, y2 = (_number(a[f], f"{where}: {f}") for f in _FIELDS[:4])
        if not (x1 <= x2 and y1 <= y2):  # MATLAB pixels, both ends included: x1 == x2 is one pixel wide
            raise ValueError(
                f"{where}: the box (bbox_x1, bbox_y1, bbox_x2, bbox_y2) = ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is "
                "inverted; it needs bbox_x1 <= bbox_x2 and bbox_y1 <= bbox_y2"
            )
        boxes.append((x1 - 1.0, y1 - 1.0, x2, y2))
    return Records(
        dataset="cars",
        root=base,
        split=split,
        paths=paths,
        labels=labels,
        classes=classes,
        boxes_pixels=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
    )


class StanfordCars(ReaderDataset):
    """Stanford Cars (devkit or class-folder layout, see ``CARS_LAYOUT``): split ``"train"`` or ``"test"``."""

    reader = staticmethod(read_cars)


def cars_splits(root: str | os.PathLike) -> list[str]:
    """``train`` and ``test`` in the devkit layout; a train / val / test folder tree's own splits otherwise."""
    root = Path(root).expanduser()
    if _devkit_root(root) is None:
        for candidate in (root, root / "stanford_cars"):
            if any((candidate / s).is_dir() for s in FOLDER_SPLITS):
                return folder_splits(candidate)
    return ["train", "test"]


DEFINITION = DatasetDef(
    "cars", StanfordCars, reader=read_cars, splits=cars_splits, markers=("devkit", "stanford_cars/devkit")
)
