"""Where a dataset is on this machine: the first of several folders that holds it, and the real CUB subset
that fgvc's tests and notebooks fall back to.

    root = find_dataset("cub", "data/CUB_200_2011", cub_subset())   # None when neither holds CUB
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MARKERS", "cub_subset", "find_dataset"]

#: The file or folder whose presence says that a folder holds the dataset (its official layout).
MARKERS: dict[str, tuple[str, ...]] = {
    "cub": ("images.txt",),
    "cars": ("devkit", "stanford_cars/devkit"),
    "aircraft": ("data/images_variant_trainval.txt", "fgvc-aircraft-2013b/data/images_variant_trainval.txt"),
    "nabirds": ("images.txt",),
    "flowers": ("imagelabels.mat", "flowers-102/imagelabels.mat"),
}

SUBSET_NAME = "CUB_200_2011_subset100"


def find_dataset(dataset: str, *roots: str | os.PathLike | None) -> Path | None:
    """The first of ``roots`` that holds ``dataset`` in its official layout (``MARKERS``), else None.

    None entries are skipped, so optional locations can be passed as they are.
    """
    if dataset not in MARKERS:
        raise ValueError(f"no marker known for {dataset!r}; known: {', '.join(MARKERS)}")
    for root in roots:
        if root is None or str(root) == "":
            continue
        path = Path(root).expanduser()
        if any((path / marker).exists() for marker in MARKERS[dataset]):
            return path
    return None


def cub_subset(start: str | os.PathLike | None = None) -> Path | None:
    """The real 100-species CUB subset (``shared/data/CUB_200_2011_subset100``), or None when absent.

    Looked for in ``$FGVC_CUB_SUBSET``, then in ``shared/data`` beside each folder from ``start`` (default: the
    working directory) up to the root, so a notebook in ``notebooks/`` and a test at the repository root find
    the same folder.
    """
    env = os.environ.get("FGVC_CUB_SUBSET")
    if env:
        return find_dataset("cub", env)
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        found = find_dataset("cub", folder / "shared" / "data" / SUBSET_NAME)
        if found is not None:
            return found
    return None
