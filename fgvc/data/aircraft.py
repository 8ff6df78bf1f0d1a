"""FGVC-Aircraft (2013b), read by ``torchvision.datasets.FGVCAircraft`` from an existing folder.

torchvision parses the image lists (``download=False``: nothing is fetched); fgvc adds the boxes of
``data/images_box.txt`` (1-based, last pixel included, so ``(xmin - 1, ymin - 1, xmax, ymax)`` 0-based with
exclusive ends) and removes the 20-pixel copyright banner at the bottom of every image, as the dataset's
README asks (``remove_banner=False`` keeps it). Splits: ``train``, ``val``, ``trainval``, ``test`` (recipes
train on ``trainval`` and test on ``test``, as the papers do); the label level is ``annotation_level``:
``"variant"`` (100 classes), ``"family"`` (70) or ``"manufacturer"`` (30).

``FGVCAircraft.hierarchy`` maps each class up to the coarser levels (a variant's family and manufacturer,
read from the same images' lines in the official files, ``aircraft_hierarchy``): ``fgvc.evaluate`` then
also scores a variant-level model's predictions at the family and manufacturer levels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .common import ImageDataset, Records, missing_annotation, read_table
from .definition import DatasetDef
from .hierarchy import Hierarchy, coarse_function

__all__ = [
    "AIRCRAFT_LAYOUT", "DEFINITION", "AIRCRAFT_SPLITS", "FGVCAircraft", "aircraft_hierarchy", "read_aircraft",
]

AIRCRAFT_SPLITS: tuple[str, ...] = ("train", "val", "trainval", "test")
# The label levels, fine to coarse (dict order).
_LEVEL_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
_FOLDER = "fgvc-aircraft-2013b"
BANNER_PIXELS = 20

AIRCRAFT_LAYOUT = """\
fgvc-aircraft-2013b/
  data/variants.txt, data/families.txt, data/manufacturers.txt     class names
  data/images_<variant|family|manufacturer>_<train|val|trainval|test>.txt   <image> <class name>
  data/images_box.txt        (optional) <image> <xmin> <ymin> <xmax> <ymax>, 1-based pixels
  data/images/*.jpg"""


def read_aircraft(
    root: str | os.PathLike,
    split: str = "train",
    *,
    annotation_level: str = "variant",
    remove_banner: bool = True,
) -> Records:
    """Records of FGVC-Aircraft (``root`` is the ``fgvc-aircraft-2013b`` folder or its parent)."""
    from torchvision.datasets import FGVCAircraft as TorchvisionAircraft

    if split not in AIRCRAFT_SPLITS:
        raise ValueError(f"aircraft has the splits {list(AIRCRAFT_SPLITS)}, got {split!r}")
    if annotation_level not in _LEVEL_FILES:
        raise ValueError(f"annotation_level must be one of {list(_LEVEL_FILES)}, got {annotation_level!r}")
    root = Path(root).expanduser()
    base = root if root.name == _FOLDER else root / _FOLDER
    if not base.is_dir():
        hint = " (torchvision reads it from a folder with exactly this name: rename or symlink it)" if (
            (root / "data" / "images").is_dir()
        ) else ""
        raise FileNotFoundError(f"aircraft: {base} does not exist{hint}. Expected layout:\n{AIRCRAFT_LAYOUT}")
    data = base / "data"
    for needed in (_LEVEL_FILES[annotation_level], f"images_{annotation_level}_{split}.txt"):
        if not (data / needed).is_file():
            raise missing_annotation(data / needed, "aircraft", AIRCRAFT_LAYOUT)
    if not (data / "images").is_dir():
        raise FileNotFoundError(f"aircraft: image folder {data / 'images'} is missing. Expected layout:\n{AIRCRAFT_LAYOUT}")

    tv = TorchvisionAircraft(base.parent, split=split, annotation_level=annotation_level, download=False)
    paths, labels = list(getattr(tv, "_image_files", [])), list(getattr(tv, "_labels", []))
    if len(paths) != len(labels) or (not paths and len(tv)):
        raise RuntimeError("this torchvision version's FGVCAircraft no longer exposes _image_files / _labels")

    boxes = None
    box_file = data / "images_box.txt"
    if box_file.is_file():
        rows = read_table(box_file, 5, "aircraft", AIRCRAFT_LAYOUT, unique={0: "image id"})
        table = {row[0]: row[1:] for row in rows}
        ids = [Path(p).stem for p in paths]
        absent = [i for i in ids if i not in table]
        if absent:
            raise ValueError(f"aircraft: {len(absent)} images have no line in {box_file}, e.g. {absent[0]}")
        xyxy = torch.tensor([[float(v) for v in table[i]] for i in ids], dtype=torch.float32).reshape(-1, 4)
        boxes = xyxy - torch.tensor([1.0, 1.0, 0.0, 0.0])
    return Records(
        dataset="aircraft",
        root=base,
        split=split,
        paths=[str(p) for p in paths],
        labels=[int(x) for x in labels],
        classes=list(tv.classes),
        boxes_pixels=boxes,
        crop_bottom=BANNER_PIXELS if remove_banner else 0,
    )


def aircraft_hierarchy(
    root: str | os.PathLike, classes: list[str], annotation_level: str = "variant"
) -> Hierarchy:
    """The coarser levels of each of ``classes`` (names at ``annotation_level``, in label order).

    ``{"family": [...], "manufacturer": [...]}`` for variants (``{"manufacturer": [...]}`` for families):
    the coarse label of a class is that of its images, read from the ``images_<level>_<split>.txt`` lines of
    the same image ids in every split the folder has. A level without its files is left out; a class given
    two labels at a level, an image listed at one level but not the other, or a class no image maps is an
    error naming it. ``root``: the ``fgvc-aircraft-2013b`` folder or its parent.
    """
    levels = list(_LEVEL_FILES)
    if annotation_level not in levels:
        raise ValueError(f"annotation_level must be one of {levels}, got {annotation_level!r}")
    root = Path(root).expanduser()
    data = (root if root.name == _FOLDER else root / _FOLDER) / "data"
    out: Hierarchy = {}
    for level in levels[levels.index(annotation_level) + 1 :]:
        pairs: list[tuple[str, str]] = []
        for split in AIRCRAFT_SPLITS:
            fine_file = data / f"images_{annotation_level}_{split}.txt"
            coarse_file = data / f"images_{level}_{split}.txt"
            if not (fine_file.is_file() and coarse_file.is_file()):
                continue
            fine, coarse = (  # image id -> class name
                {r[0]: r[1] for r in read_table(f, 2, "aircraft", AIRCRAFT_LAYOUT, unique={0: "image id"})}
                for f in (fine_file, coarse_file)
            )
            unpaired = sorted(set(fine) ^ set(coarse))
            if unpaired:
                where = fine_file.name if unpaired[0] in fine else coarse_file.name
                raise ValueError(
                    f"aircraft: {len(unpaired)} images are listed in only one of {fine_file.name} and "
                    f"{coarse_file.name}, e.g. {unpaired[0]} (in {where})"
                )
            pairs += [(fine[image], coarse[image]) for image in sorted(fine)]
        if not pairs:
            continue
        table = coarse_function(pairs, level, f"aircraft ({data}, images_{annotation_level}/{level}_*.txt)")
        missing = [c for c in classes if c not in table]
        if missing:
            raise ValueError(
                f"aircraft: no image maps {len(missing)} {annotation_level} classes to a {level}, "
                f"e.g. {missing[0]!r}"
            )
        out[level] = [table[c] for c in classes]
    return out


class FGVCAircraft(ImageDataset):
    """FGVC-Aircraft (see ``AIRCRAFT_LAYOUT``): ``train``, ``val``, ``trainval`` or ``test``.

    ``hierarchy``: the coarser levels of every class (``aircraft_hierarchy``), read on first access.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Callable[[Any], Any] | None = None,
        *,
        annotation_level: str = "variant",
        remove_banner: bool = True,
        skip_corrupt: bool | str = False,
    ) -> None:
        records = read_aircraft(root, split, annotation_level=annotation_level, remove_banner=remove_banner)
        super().__init__(records, transform, skip_corrupt)
        self.annotation_level = annotation_level
        self._hierarchy: Hierarchy | None = None

    @property
    def hierarchy(self) -> Hierarchy | None:
        """``{level: [coarse label per class]}`` for the levels above ``annotation_level`` (None: none)."""
        if self._hierarchy is None:
            self._hierarchy = aircraft_hierarchy(self.root, self.classes, self.annotation_level)
        return self._hierarchy or None


# "trainval" (train + val) is accepted too, but is not a disjoint split. Recipes train on it: the dataset's
# train split (3,334 images) is half of what the field trains on; trainval (6,667) is the papers' training
# set and GLSim's data/aircraft/train_val.csv, tested on test (3,333).
DEFINITION = DatasetDef(
    "aircraft", FGVCAircraft, reader=read_aircraft, splits=("train", "val", "test"),
    markers=("data/images_variant_trainval.txt", "fgvc-aircraft-2013b/data/images_variant_trainval.txt"),
    train_split="trainval",
)
