"""Oxford Flowers-102 in its official layout (the files torchvision's ``Flowers102`` reads).

The two ``.mat`` files are read with scipy, as torchvision does; torchvision's own reader is not used because
it insists on the files' published checksums (a re-saved or test copy would be refused), but its list of the
102 class names is. Splits: ``train`` (10 images per class), ``val`` (10 per class) and ``test`` (the rest).
No boxes.
"""

from __future__ import annotations

import os

import numpy as np

from .common import ReaderDataset, Records, missing_annotation
from .cub import find_root
from .definition import DatasetDef

__all__ = ["DEFINITION", "FLOWERS_LAYOUT", "FLOWERS_SPLITS", "Flowers102", "read_flowers"]

FLOWERS_SPLITS: tuple[str, ...] = ("train", "val", "test")
_SET_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}

FLOWERS_LAYOUT = """\
flowers-102/
  imagelabels.mat     'labels': (8189,) class of image_00001.jpg ... (1..102)
  setid.mat           'trnid', 'valid', 'tstid': image numbers of each split
  jpg/image_00001.jpg ..."""


def read_flowers(root: str | os.PathLike, split: str = "train") -> Records:
    """Records of Flowers-102 (``root`` is the ``flowers-102`` folder or its parent)."""
    from scipy.io import loadmat
    from torchvision.datasets import Flowers102 as TorchvisionFlowers

    if split not in FLOWERS_SPLITS:
        raise ValueError(f"flowers has the splits {list(FLOWERS_SPLITS)}, got {split!r}")
    base = find_root(root, "imagelabels.mat", "flowers-102")
    for name in ("imagelabels.mat", "setid.mat"):
        if not (base / name).is_file():
            raise missing_annotation(base / name, "flowers", FLOWERS_LAYOUT)
    labels = np.asarray(loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]).reshape(-1)
    ids = np.asarray(loadmat(base / "setid.mat", squeeze_me=True)[_SET_KEYS[split]]).reshape(-1)
    classes = list(TorchvisionFlowers.classes)
    bad = [int(i) for i in ids if not 1 <= i <= len(labels)]
    if bad:
        raise ValueError(f"flowers: setid.mat lists image {bad[0]} but imagelabels.mat has {len(labels)} images")
    if labels.min() < 1 or labels.max() > len(classes):
        raise ValueError(f"flowers: imagelabels.mat has labels outside 1..{len(classes)}")
    return Records(
        dataset="flowers",
        root=base,
        split=split,
        paths=[str(base / "jpg" / f"image_{int(i):05d}.jpg") for i in ids],
        labels=[int(labels[i - 1]) - 1 for i in ids],
        classes=classes,
    )


class Flowers102(ReaderDataset):
    """Oxford Flowers-102 (official layout, see ``FLOWERS_LAYOUT``): ``train``, ``val`` or ``test``."""

    reader = staticmethod(read_flowers)


DEFINITION = DatasetDef(
    "flowers", Flowers102, reader=read_flowers, splits=FLOWERS_SPLITS,
    markers=("imagelabels.mat", "flowers-102/imagelabels.mat"),
)
