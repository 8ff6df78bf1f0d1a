"""Any image folder with one sub-folder per class, split by folders or by a ``split.txt`` file.

Two layouts, chosen by what is on disk:

- split folders: ``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``, ``root/test/<class>/*.jpg``
  (any of the three; the re-distributed Stanford Cars comes this way);
- one folder per class with a split file: ``root/<class>/*.jpg`` and ``root/split.txt``, one line per image,
  ``<path relative to root> <train|val|test>`` (the class is the first folder of the path). Without
  ``split.txt`` the whole folder is split ``"all"`` (carve splits with ``fgvc.data.train_val_split``).

Classes are the sorted class-folder names over all splits, so every split maps a name to the same label.
Images are files with an ending in ``IMAGE_EXTENSIONS`` (any case); hidden files and folders are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import IMAGE_EXTENSIONS, ReaderDataset, Records, read_table
from .definition import DatasetDef

__all__ = ["DEFINITION", "FOLDER_LAYOUT", "FOLDER_SPLITS", "ImageFolderDataset", "folder_splits", "read_folder"]

FOLDER_SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FILE = "split.txt"

FOLDER_LAYOUT = """\
root/train/<class>/*.jpg, root/val/<class>/*.jpg, root/test/<class>/*.jpg   (split folders)
or
root/<class>/*.jpg and root/split.txt with lines '<path relative to root> <train|val|test>'
or
root/<class>/*.jpg without split.txt: one split, 'all'"""


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not _is_hidden(e.name))


def _images_under(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursively), in sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        found += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if not _is_hidden(f) and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return found


def folder_splits(root: str | os.PathLike) -> list[str]:
    """The splits a folder offers: those listed in ``split.txt``, the split folders present, or ``["all"]``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist. Expected layout:\n{FOLDER_LAYOUT}")
    if (root / SPLIT_FILE).is_file():
        used = {s for _, s in read_table(root / SPLIT_FILE, 2, "folder", FOLDER_LAYOUT, from_right=True)}
        return [s for s in FOLDER_SPLITS if s in used]
    present = [s for s in FOLDER_SPLITS if (root / s).is_dir()]
    return present or ["all"]


def read_folder(root: str | os.PathLike, split: str = "train", *, dataset: str = "folder") -> Records:
    """Records of one split of an image folder (see the module docstring for the layouts)."""
    root = Path(root).expanduser()
    splits = folder_splits(root)
    if split not in splits:
        raise ValueError(
            f"{dataset}: {root} has no split {split!r}; it offers {splits}. Expected layout:\n{FOLDER_LAYOUT}"
        )
    if (root / SPLIT_FILE).is_file():
        rows = read_table(root / SPLIT_FILE, 2, dataset, FOLDER_LAYOUT, from_right=True, unique={0: "image"})
        bad = sorted({s for _, s in rows} - set(FOLDER_SPLITS))
        if bad:
            raise ValueError(f"{dataset}: {root / SPLIT_FILE} names unknown splits {bad}; use train, val or test")
        for rel, _ in rows:
            if len(Path(rel).parts) < 2:
                raise ValueError(
                    f"{dataset}: {root / SPLIT_FILE}: {rel!r} is not inside a class folder (<class>/<file>)"
                )
        classes = sorted({Path(rel).parts[0] for rel, _ in rows})
        chosen = [(root / rel, Path(rel).parts[0]) for rel, s in rows if s == split]
    else:
        tops = [root / s for s in FOLDER_SPLITS if (root / s).is_dir()] or [root]
        classes = sorted({c for top in tops for c in _class_dirs(top)})
        top = root if split == "all" else root / split
        chosen = [(p, c) for c in _class_dirs(top) for p in _images_under(top / c)]
    if not classes:
        raise ValueError(f"{dataset}: no class folders found in {root}. Expected layout:\n{FOLDER_LAYOUT}")
    label_of = {c: k for k, c in enumerate(classes)}
    return Records(
        dataset=dataset,
        root=root,
        split=split,
        paths=[str(p) for p, _ in chosen],
        labels=[label_of[c] for _, c in chosen],
        classes=classes,
        display_names=[c.replace("_", " ") for c in classes],
    )


class ImageFolderDataset(ReaderDataset):
    """A class-per-folder image dataset (see ``FOLDER_LAYOUT``); ``folder_splits(root)`` lists its splits."""

    reader = staticmethod(read_folder)


DEFINITION = DatasetDef("folder", ImageFolderDataset, reader=read_folder, splits=folder_splits)
