"""CUB-200-2011 in its official layout, and the table format it shares with NABirds.

Class ids in ``classes.txt`` may be any subset (e.g. 100 of the 200 species): the classes that have images
get contiguous labels in sorted id order, the same for both splits, and keep their official names
(``"001.Black_footed_Albatross"``; ``display_names`` holds ``"Black footed Albatross"``). ``attributes/`` is
not read; ``bounding_boxes.txt`` is optional and gives ``boxes`` when present, and ``parts/parts.txt`` with
``parts/part_locs.txt`` (optional, both or neither) give ``part_names`` and ``parts_pixels`` (``read_cub_parts``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .common import ReaderDataset, Records, read_table
from .definition import DatasetDef

__all__ = [
    "CUB200", "CUB_LAYOUT", "DEFINITION", "cub_display_name", "read_cub", "read_cub_parts", "read_cub_style",
]

CUB_LAYOUT = """\
CUB_200_2011/
  images.txt              <image id> <path under images/, e.g. 001.Black_footed_Albatross/x.jpg>
  image_class_labels.txt  <image id> <class id>
  train_test_split.txt    <image id> <1 = train, 0 = test>
  classes.txt             <class id> <class name, e.g. 001.Black_footed_Albatross>
  bounding_boxes.txt      (optional) <image id> <x> <y> <width> <height>, in pixels
  parts/parts.txt         (optional, with part_locs.txt) <part id> <part name, e.g. beak>
  parts/part_locs.txt     <image id> <part id> <x> <y> <visible 0/1>, in pixels (x = y = 0 when not visible)
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


def _int(value: str, path: Path, dataset: str, what: str = "class id") -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{dataset}: {path}: {what} {value!r} is not an integer") from None


def cub_display_name(name: str) -> str:
    """``"001.Black_footed_Albatross"`` -> ``"Black footed Albatross"``."""
    return re.sub(r"^\d+\.", "", name).replace("_", " ")


def read_cub(root: str | os.PathLike, split: str = "train") -> Records:
    """Records of CUB-200-2011 (``root`` is the ``CUB_200_2011`` folder or its parent)."""
    return read_cub_style(
        find_root(root, "images.txt", "CUB_200_2011"), split, dataset="cub", layout=CUB_LAYOUT,
        display_name=cub_display_name,
    )


def read_cub_parts(root: str | os.PathLike, paths: Sequence[str]) -> tuple[list[str], torch.Tensor] | None:
    """The part names and, per image of ``paths`` (as ``read_cub`` gives them), its parts; None without the files.

    Returns ``(names, parts)``: the names of ``parts/parts.txt`` in part-id order and a (N, P, 3) float32
    tensor (x, y, visible) in original pixels, visible 1 or 0. Every image needs one line per part in
    ``parts/part_locs.txt``; one of the two files without the other is an error.
    """
    root = find_root(root, "images.txt", "CUB_200_2011")
    names_file, locs_file = root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"
    if not names_file.is_file() and not locs_file.is_file():
        return None
    for present, absent in ((names_file, locs_file), (locs_file, names_file)):
        if present.is_file() and not absent.is_file():
            raise FileNotFoundError(f"cub: {present} is there but {absent} is missing; parts need both files")
    by_id = {}
    for pid, name in read_table(names_file, 2, "cub", CUB_LAYOUT, unique={0: "part id", 1: "part name"}):
        by_id[_int(pid, names_file, "cub", "part id")] = name
    part_ids = sorted(by_id)
    index_of = {pid: k for k, pid in enumerate(part_ids)}
    image_id = {str(root / "images" / rel): iid for iid, rel in read_table(root / "images.txt", 2, "cub", CUB_LAYOUT)}
    wanted = {image_id[p]: n for n, p in enumerate(paths)}
    parts = torch.zeros(len(paths), len(part_ids), 3, dtype=torch.float32)  # (N, P, 3) x, y, visible
    seen = torch.zeros(len(paths), len(part_ids), dtype=torch.bool)
    for iid, pid, x, y, visible in read_table(locs_file, 5, "cub", CUB_LAYOUT):
        n = wanted.get(iid)
        if n is None:
            continue  # an image of the other split
        k = index_of.get(_int(pid, locs_file, "cub", "part id"))
        if k is None:
            raise ValueError(f"cub: {locs_file}: image {iid} has part id {pid}, which {names_file} does not list")
        if seen[n, k]:
            raise ValueError(f"cub: {locs_file}: image {iid} has two lines for part {pid}; each must appear once")
        try:
            xy = (float(x), float(y))
        except ValueError:
            raise ValueError(f"cub: {locs_file}: image {iid} part {pid} has x={x!r} y={y!r}, not numbers") from None
        if visible not in ("0", "1") or not all(map(math.isfinite, xy)):
            raise ValueError(
                f"cub: {locs_file}: image {iid} part {pid} has x={x} y={y} visible={visible}; expected finite x, y "
                "and visible 1 or 0"
            )
        parts[n, k] = torch.tensor([xy[0], xy[1], float(visible)])
        seen[n, k] = True
    if not bool(seen.all()):
        n, k = (int(v) for v in (~seen).nonzero()[0])
        raise ValueError(
            f"cub: {locs_file}: {int((~seen).sum())} (image, part) pairs have no line, e.g. image "
            f"{image_id[paths[n]]} part {part_ids[k]}"
        )
    return [by_id[pid] for pid in part_ids], parts


class CUB200(ReaderDataset):
    """CUB-200-2011 (official layout, see ``CUB_LAYOUT``): split ``"train"`` or ``"test"``.

    With ``parts/parts.txt`` and ``parts/part_locs.txt`` present: ``part_names`` (P names, the official 15)
    and ``parts_pixels``, (N, P, 3) x, y, visible in original pixels (``read_cub_parts``); without them both
    are None. ``fgvc.data.EvalParts`` maps the parts into the model's input frame for ``fgvc.evaluate``.
    """

    reader = staticmethod(read_cub)

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
        *,
        skip_corrupt: bool | str = False,
    ) -> None:
        super().__init__(root, split, transform, skip_corrupt=skip_corrupt)
        parts = read_cub_parts(self.root, [path for path, _ in self.samples])  # the images kept, in order
        self.part_names: list[str] | None = None if parts is None else parts[0]
        self.parts_pixels: torch.Tensor | None = None if parts is None else parts[1]


DEFINITION = DatasetDef("cub", CUB200, reader=read_cub, markers=("images.txt",))
