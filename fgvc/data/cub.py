"""CUB-200-2011 in its official layout, and the table format it shares with NABirds.

Class ids in ``classes.txt`` may be any subset (e.g. 100 of the 200 species): the classes that have images
get contiguous labels in sorted id order, the same for both splits, and keep their official names
(``"001.Black_footed_Albatross"``; ``display_names`` holds ``"Black footed Albatross"``). ``parts/`` and
``attributes/`` are not read; ``bounding_boxes.txt`` is optional and gives ``boxes`` when present.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch

from .common import ReaderDataset, Records, read_table
from .definition import DatasetDef

__all__ = ["CUB200", "CUB_LAYOUT", "DEFINITION", "cub_display_name", "read_cub", "read_cub_style"]

CUB_LAYOUT = """\
CUB_200_2011/
  images.txt              <image id> <path under images/, e.g. 001.Black_footed_Albatross/x.jpg>
  image_class_labels.txt  <image id> <class id>
  train_test_split.txt    <image id> <1 = train, 0 = test>
  classes.txt             <class id> <class name, e.g. 001.Black_footed_Albatross>
  bounding_boxes.txt      (optional) <image id> <x> <y> <width> <height>, in pixels
  images/001.Black_footed_Albatross/*.jpg ..."""


def find_root(root: str | os.PathLike, marker: str, subfolder: str) -> Path:
    """``root`` itself when it holds ``marker``, else ``root/subfolder`` when that does (the parent folder)."""
    root = Path(root).expanduser()
    if not (root / marker).exists() and (root / subfolder / marker).exists():
        return root / subfolder
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    return root


def read_cub_style(
    root: Path,
    split: str,
    *,
    dataset: str,
    layout: str,
    display_name: Callable[[str], str] = lambda name: name,
) -> Records:
    """Parse the CUB / NABirds tables (images, labels, split, classes, optional boxes) for one split."""
    if split not in ("train", "test"):
        raise ValueError(
            f"{dataset} has the splits 'train' and 'test', got {split!r}; carve a validation split from "
            "'train' with fgvc.data.train_val_split"
        )
    by_image = {0: "image id"}
    images = read_table(root / "images.txt", 2, dataset, layout, unique={0: "image id", 1: "image path"})
    labels = dict(read_table(root / "image_class_labels.txt", 2, dataset, layout, unique=by_image))
    is_train = dict(read_table(root / "train_test_split.txt", 2, dataset, layout, unique=by_image))
    class_names: dict[int, str] = {}
    for cid, name in read_table(root / "classes.txt", 2, dataset, layout, unique={0: "class id"}):
        class_names[_int(cid, root / "classes.txt", dataset)] = name

    for file, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
        absent = [iid for iid, _ in images if iid not in table]
        if absent:
            raise ValueError(
                f"{dataset}: {len(absent)} image ids of images.txt have no line in {root / file}, e.g. {absent[0]}"
            )
    image_class = {iid: _int(labels[iid], root / "image_class_labels.txt", dataset) for iid, _ in images}
    used = sorted(set(image_class.values()))
    unknown = [c for c in used if c not in class_names]
    if unknown:
        raise ValueError(f"{dataset}: class ids {unknown[:5]} are used by images but not listed in {root / 'classes.txt'}")
    id_of: dict[str, int] = {}
    for cid in used:
        first = id_of.setdefault(class_names[cid], cid)
        if first != cid:
            raise ValueError(
                f"{dataset}: {root / 'classes.txt'}: class ids {first} and {cid} have the same name "
                f"{class_names[cid]!r}; each class needs its own name"
            )
    label_of = {cid: k for k, cid in enumerate(used)}

    want = "1" if split == "train" else "0"
    chosen = []
    for iid, rel in images:
        flag = is_train[iid]
        if flag not in ("0", "1"):
            raise ValueError(f"{dataset}: {root / 'train_test_split.txt'}: image {iid} has {flag!r}, expected 1 or 0")
        if flag == want:
            chosen.append((iid, rel))

    boxes = None
    box_file = root / "bounding_boxes.txt"
    if box_file.is_file():
        table = {row[0]: row[1:] for row in read_table(box_file, 5, dataset, layout, unique=by_image)}
        absent = [iid for iid, _ in chosen if iid not in table]
        if absent:
            raise ValueError(f"{dataset}: {len(absent)} images have no line in {box_file}, e.g. {absent[0]}")
        xywh = torch.tensor([_box(table[iid], box_file, iid, dataset) for iid, _ in chosen], dtype=torch.float32)
        xywh = xywh.reshape(-1, 4)
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)  # x, y, width, height -> x0, y0, x1, y1

    classes = [class_names[c] for c in used]
    return Records(
        dataset=dataset,
        root=root,
        split=split,
        paths=[str(root / "images" / rel) for _, rel in chosen],
        labels=[label_of[image_class[iid]] for iid, _ in chosen],
        classes=classes,
        display_names=[display_name(n) for n in classes],
        boxes_pixels=boxes,
    )


def _box(values: list[str], path: Path, iid: str, dataset: str) -> list[float]:
    """One line of ``bounding_boxes.txt`` (x, y, width, height): finite numbers, width and height above 0."""
    try:
        x, y, w, h = (float(v) for v in values)
    except ValueError:
        raise ValueError(f"{dataset}: {path}: image {iid} has the box {' '.join(values)!r}, not 4 numbers") from None
    if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0:
        raise ValueError(
            f"{dataset}: {path}: image {iid} has the box x={x:g} y={y:g} width={w:g} height={h:g}; the width and "
            "height must be above 0"
        )
    return [x, y, w, h]


def _int(value: str, path: Path, dataset: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{dataset}: {path}: class id {value!r} is not an integer") from None


def cub_display_name(name: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    return re.sub(r"^\d+\.", "", name).replace("_", " ")


def read_cub(root: str | os.PathLike, split: str = "train") -> Records:
    """Records of CUB-200-2011 (``root`` is the ``CUB_200_2011`` folder or its parent)."""
    return read_cub_style(
        find_root(root, "images.txt", "CUB_200_2011"), split, dataset="cub", layout=CUB_LAYOUT,
        display_name=cub_display_name,
    )


class CUB200(ReaderDataset):
    """CUB-200-2011 (official layout, see ``CUB_LAYOUT``): split ``"train"`` or ``"test"``."""

    reader = staticmethod(read_cub)


DEFINITION = DatasetDef("cub", CUB200, reader=read_cub, markers=("images.txt",))
