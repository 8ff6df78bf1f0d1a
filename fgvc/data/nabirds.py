"""NABirds in its official layout (the CUB table format, with string image ids and a class hierarchy).

``classes.txt`` lists every node of the hierarchy (species, sexes / plumages, and their parents); only the
classes that have images are kept, with contiguous labels in sorted class-id order, the same for both
splits. ``hierarchy.txt`` is not needed to classify and is not read.
"""

from __future__ import annotations

import os

from .common import ReaderDataset, Records
from .cub import find_root, read_cub_style
from .definition import DatasetDef

__all__ = ["DEFINITION", "NABIRDS_LAYOUT", "NABirds", "read_nabirds"]

NABIRDS_LAYOUT = """\
nabirds/
  images.txt              <image id> <path under images/, e.g. 0817/<uuid>.jpg>
  image_class_labels.txt  <image id> <class id>
  train_test_split.txt    <image id> <1 = train, 0 = test>
  classes.txt             <class id> <class name, e.g. Bewick's Wren>
  bounding_boxes.txt      (optional) <image id> <x> <y> <width> <height>, in pixels
  hierarchy.txt           (not read) <child class id> <parent class id>
  images/0817/*.jpg ..."""


def read_nabirds(root: str | os.PathLike, split: str = "train") -> Records:
    """Records of NABirds (``root`` is the ``nabirds`` folder or its parent)."""
    return read_cub_style(find_root(root, "images.txt", "nabirds"), split, dataset="nabirds", layout=NABIRDS_LAYOUT)


class NABirds(ReaderDataset):
    """NABirds (official layout, see ``NABIRDS_LAYOUT``): split ``"train"`` or ``"test"``."""

    reader = staticmethod(read_nabirds)


DEFINITION = DatasetDef("nabirds", NABirds, reader=read_nabirds, markers=("images.txt",))
