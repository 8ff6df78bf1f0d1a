"""Views of a dataset: a validation split carved from training data, and a subset of the classes.

Why a validation split: checkpoints and hyper-parameters must be chosen on data the final number is not
computed on. Several official fine-grained repositories evaluate on the test split every epoch and report
the best epoch, which picks the luckiest of dozens of test scores and inflates the result. CUB, Cars and
NABirds ship no validation split, so ``train_val_split`` holds out a stratified part of the training split;
``fgvc.fit`` selects ``best.safetensors`` on it, and the test split is evaluated once, at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .contract import FGVCDataset, classes_of, display_names_of, num_classes_of, targets_of

__all__ = ["SubsetDataset", "raw_item", "subset_classes", "train_val_split"]


def raw_item(dataset: Dataset, i: int) -> tuple[Image.Image, int]:
    """Sample ``i`` before any transform: ``dataset.load(i)``, or ``render(i)`` for ``SyntheticFGVC``."""
    if hasattr(dataset, "load"):
        return dataset.load(i)
    if hasattr(dataset, "render") and targets_of(dataset) is not None:
        return dataset.render(i), int(dataset.targets[i])
    raise TypeError(
        f"{type(dataset).__name__} cannot give untransformed images (it has no load(i)); build it with the "
        "transform you need instead of passing one to the subset"
    )


class SubsetDataset(FGVCDataset):
    """Samples ``indices`` of ``dataset``, optionally relabelled and with their own transform.

    Keeps the dataset contract (``FGVCDataset``): ``classes``, ``display_names``, ``targets``, and the rows of
    ``boxes`` / ``boxes_pixels`` / ``image_sizes`` / ``input_boxes`` and of the parts (``part_names``,
    ``parts_pixels``, ``input_parts``) where the parent has them. With ``transform`` the parent's untransformed
    images are used (``load``), so a validation split carved from an augmented training dataset can use the
    test-time transform; ``input_boxes`` and ``input_parts`` are then None, since the frame of the new
    transform's output is not known.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Sequence[int],
        *,
        transform: Callable[[Any], Any] | None = None,
        label_map: dict[int, int] | None = None,
        classes: Sequence[str] | None = None,
        display_names: Sequence[str] | None = None,
    ) -> None:
        n = len(dataset)
        self.indices = [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < n]
        if bad:
            raise IndexError(f"indices {bad[:5]} out of range for a dataset of {n} samples")
        self.dataset = dataset
        self.transform = transform
        self.label_map = dict(label_map) if label_map is not None else None
        parent_targets = targets_of(dataset)
        if parent_targets is None:
            raise TypeError(f"{type(dataset).__name__} has no .targets (a list of int labels)")
        mapped = [int(parent_targets[i]) for i in self.indices]
        self.targets: list[int] = [self.label_map[t] for t in mapped] if self.label_map is not None else mapped
        self.classes: list[str] | None = list(classes) if classes is not None else _copy(classes_of(dataset))
        parent_display = display_names_of(dataset)
        if display_names is not None:
            self.display_names: list[str] | None = list(display_names)
        elif classes is None and parent_display is not None:
            self.display_names = list(parent_display)
        else:
            self.display_names = self.classes
        if transform is not None and not (hasattr(dataset, "load") or hasattr(dataset, "render")):
            raw_item(dataset, 0)  # raises now, with the reason, rather than in a data-loader worker

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> tuple[Image.Image, int]:
        """Sample ``i`` before any transform (with the subset's label)."""
        image, _ = raw_item(self.dataset, self.indices[i])
        return image, self.targets[i]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if self.transform is not None:
            image, label = self.load(i)
            return self.transform(image), label
        image, _ = self.dataset[self.indices[i]]
        return image, self.targets[i]

    def _take(self, name: str) -> torch.Tensor | None:
        values = getattr(self.dataset, name, None)
        if values is None:
            return None
        return torch.as_tensor(values)[torch.as_tensor(self.indices, dtype=torch.long)]

    @property
    def boxes(self) -> torch.Tensor | None:
        """The parent's ``boxes`` (fractions of the original image) of these samples, or None."""
        return self._take("boxes")

    @property
    def boxes_pixels(self) -> torch.Tensor | None:
        return self._take("boxes_pixels")

    @property
    def image_sizes(self) -> torch.Tensor | None:
        return self._take("image_sizes")

    @property
    def input_boxes(self) -> torch.Tensor | None:
        """The parent's ``input_boxes`` (fractions of the model input) of these samples, or None: also None
        with the subset's own transform, whose output frame the parent's boxes do not describe."""
        return None if self.transform is not None else self._take("input_boxes")

    @property
    def part_names(self) -> list[str] | None:
        """The parent's part names (CUB's 15 when its ``parts/`` files are present), or None."""
        return _copy(getattr(self.dataset, "part_names", None))

    @property
    def parts_pixels(self) -> torch.Tensor | None:
        """The parent's ``parts_pixels`` ((N, P, 3) x, y, visible in original pixels) of these samples, or None."""
        return self._take("parts_pixels")

    @property
    def input_parts(self) -> torch.Tensor | None:
        """The parent's ``input_parts`` of these samples, or None (also with the subset's own transform)."""
        return None if self.transform is not None else self._take("input_parts")

    @property
    def samples(self) -> list[tuple[str, int]] | None:
        parent = getattr(self.dataset, "samples", None)
        return None if parent is None else [(parent[i][0], t) for i, t in zip(self.indices, self.targets, strict=True)]

    def __repr__(self) -> str:
        k = len(self.classes) if self.classes is not None else "?"
        return f"SubsetDataset({len(self)} of {len(self.dataset)} samples, {k} classes, of {self.dataset!r})"


def _copy(x: Sequence[str] | None) -> list[str] | None:
    return None if x is None else list(x)


def train_val_split(
    dataset: Dataset,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    train_transform: Callable[[Any], Any] | None = None,
    val_transform: Callable[[Any], Any] | None = None,
) -> tuple[SubsetDataset, SubsetDataset]:
    """Split a training dataset into (train, val), stratified by class and deterministic in ``seed``.

    Each class gives ``round(n_c * val_fraction)`` samples to validation (at most ``n_c - 1``, so every class
    keeps a training sample), drawn by a NumPy generator seeded with ``seed``; both parts keep the dataset
    order. Use it to choose checkpoints (see the module docstring: never choose them on the test split).
    ``val_transform`` (e.g. ``build_transforms(model, train=False)``) replaces the dataset's own transform on
    the validation part, so validation images are not augmented; ``train_transform`` likewise.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    targets = targets_of(dataset)
    if targets is None:
        raise TypeError(f"train_val_split needs .targets (int labels) on the dataset; {type(dataset).__name__} has none")
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        n_val = min(int(round(len(members) * val_fraction)), len(members) - 1)
        val += rng.permutation(members)[:n_val].tolist()
    val_set = set(val)
    train = [i for i in range(len(targets)) if i not in val_set]
    return (
        SubsetDataset(dataset, train, transform=train_transform),
        SubsetDataset(dataset, sorted(val), transform=val_transform),
    )


def subset_classes(dataset: Dataset, classes: int | Sequence[int | str]) -> SubsetDataset:
    """The samples of some classes, relabelled 0..k-1: the first ``n`` labels, or a list of labels / names.

    A list keeps its order: its first entry becomes label 0. Handy for quick runs on part of a dataset.
    """
    targets = targets_of(dataset)
    names = classes_of(dataset)
    if targets is None:
        raise TypeError(f"subset_classes needs .targets on the dataset; {type(dataset).__name__} has none")
    num_classes = num_classes_of(dataset)
    if isinstance(classes, int):
        if not 1 <= classes <= num_classes:
            raise ValueError(f"asked for {classes} classes, the dataset has {num_classes}")
        chosen = list(range(classes))
    else:
        chosen = []
        for c in classes:
            if isinstance(c, str):
                if names is None or c not in names:
                    raise ValueError(f"class {c!r} is not one of the dataset's classes")
                chosen.append(list(names).index(c))
            elif 0 <= int(c) < num_classes:
                chosen.append(int(c))
            else:
                raise ValueError(f"label {c} is outside 0..{num_classes - 1}")
        if len(set(chosen)) != len(chosen) or not chosen:
            raise ValueError(f"classes must be a non-empty list without repeats, got {list(classes)}")
    label_map = {old: new for new, old in enumerate(chosen)}
    indices = [i for i, t in enumerate(targets) if int(t) in label_map]
    display = display_names_of(dataset)
    return SubsetDataset(
        dataset,
        indices,
        transform=None,
        label_map=label_map,
        classes=[names[c] for c in chosen] if names is not None else [str(c) for c in chosen],
        display_names=[display[c] for c in chosen] if display is not None else None,
    )
