"""Where a dataset is on this machine: the first of several folders that holds it, and the real CUB subset
that fgvc's tests and notebooks fall back to.

    root = find_dataset("cub", "data/CUB_200_2011", cub_subset())   # None when neither holds CUB
"""

from __future__ import annotations

import os
from pathlib import Path

from .datasets import dataset_definition, list_datasets

__all__ = ["MARKERS", "cub_subset", "find_dataset"]

#: The files or folders whose presence says that a folder holds the dataset (its official layout), from the
#: datasets' definitions (``DatasetDef.markers``).
MARKERS: dict[str, tuple[str, ...]] = {
    name: dataset_definition(name).markers for name in list_datasets() if dataset_definition(name).markers
}

SUBSET_NAME = "CUB_200_2011_subset100"


def find_dataset(dataset: str, *roots: str | os.PathLike | None) -> Path | None:
    """The first of ``roots`` that holds ``dataset`` in its official layout (``MARKERS``), else None.

    None entries are skipped, so optional locations can be passed as they are.
    """
    markers = dataset_definition(dataset).markers if dataset in list_datasets() else ()
    if not markers:
        known = [n for n in list_datasets() if dataset_definition(n).markers]
        raise ValueError(f"no marker known for {dataset!r}; known: {', '.join(known)}")
    for root in roots:
        if root is None or str(root) == "":
            continue
        path = Path(root).expanduser()
        if any((path / marker).exists() for marker in markers):
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
