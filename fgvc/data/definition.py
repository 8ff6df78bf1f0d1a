"""``DatasetDef``: how fgvc builds one named dataset, written beside the dataset in its own module.

``build_dataset``, ``dataset_splits``, ``fgvc data check`` and the recipes read only these definitions, so
what is special about a dataset (its splits, its reader, a generated dataset's own streams) is said once,
where the dataset is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from .common import Records

__all__ = ["DatasetDef"]

Root = str | os.PathLike


@dataclass(frozen=True)
class DatasetDef:
    """One named dataset.

    Attributes:
        name: what ``build_dataset`` and recipes call it.
        cls: the dataset class; a file-backed one is ``cls(root, split, transform, **options)``, a generated
            one (``reader`` None) ``cls(split=split, transform=transform, **options)``.
        reader: ``reader(root, split, **options) -> Records``, the annotation parser (``fgvc data check``
            inspects a folder with it); None for a generated dataset, which has no files and ignores ``root``.
        splits: its disjoint split names, or a function of the root folder giving them (layouts that vary).
        draw_splits: a generated dataset's ``draw_splits(img_size, **options) -> {split: dataset}``: every
            split at once, drawn at the model's input size ``img_size`` (None: the dataset's default) and used
            without a transform. Recipes take its splits as they are instead of building and carving them.
        count_classes: ``count_classes(root, options) -> int`` without building the dataset (default: the
            length of the training split's ``classes``).
        markers: paths whose presence says a folder holds the dataset in its official layout
            (``fgvc.data.find_dataset``); empty where no layout is fixed.
        train_split: the split a recipe trains on unless its ``data.train_split`` names another (the
            validation split of ``protocol: val`` is carved from it); the test split is ``test``.
    """

    name: str
    cls: type[Dataset]
    reader: Callable[..., Records] | None = None
    splits: Sequence[str] | Callable[[Root], list[str]] = ("train", "test")
    draw_splits: Callable[..., dict[str, Dataset]] | None = None
    count_classes: Callable[[Root | None, Mapping[str, Any]], int] | None = None
    markers: tuple[str, ...] = ()
    train_split: str = "train"

    @property
    def needs_root(self) -> bool:
        """Whether the dataset is read from a folder (a generated one is not)."""
        return self.reader is not None

    def root(self, root: Root | None) -> Root:
        """``root``, or the error that this dataset needs one."""
        if root is None:
            raise ValueError(f"dataset {self.name!r} needs a root folder")
        return root

    def build(self, root: Root | None, split: str, transform: Callable[[Any], Any] | None = None,
              **options: Any) -> Dataset:
        """The dataset of ``split`` (see ``fgvc.data.build_dataset``)."""
        if not self.needs_root:
            return self.cls(split=split, transform=transform, **options)
        return self.cls(self.root(root), split, transform, **options)

    def split_names(self, root: Root | None = None) -> list[str]:
        """The disjoint splits (the root folder is read only where the layout decides them)."""
        return list(self.splits) if not callable(self.splits) else self.splits(self.root(root))

    def num_classes(self, root: Root | None, options: Mapping[str, Any]) -> int:
        """The class count of the dataset built with ``options``, without decoding any image."""
        if self.count_classes is not None:
            return self.count_classes(root, options)
        return len(self.build(root, "train", **options).classes)
