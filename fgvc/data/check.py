"""``check_dataset``: verify a dataset folder before a run (``fgvc data check ROOT --dataset NAME``).

It parses the annotations with the same readers training uses, then opens every listed image: by default
fully decoded as training will (``Image.open(...).convert("RGB")``), or with ``quick=True`` only the header
(plus the JPEG end marker, see ``check_image``). The report gives images per split and per class, and lists
missing annotation files, missing images, unreadable images, empty splits, images shared by two splits and
boxes outside their image, and warns about very large images (over ``LARGE_IMAGE_PIXELS``: each one is
decoded again every epoch) and boxes that reach past the image border.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .common import inspect_image
from .datasets import READERS, dataset_splits, list_datasets

__all__ = ["DataReport", "SplitReport", "check_dataset"]

_SHOWN = 5  # examples listed per problem
#: Images above this many pixels are reported: decoding one takes about a second and GBs of memory, every
#: epoch (PIL itself warns above ``Image.MAX_IMAGE_PIXELS``, about 89 million, and refuses twice that).
LARGE_IMAGE_PIXELS = 40_000_000


@dataclass
class SplitReport:
    """What one split holds and what is wrong with its files."""

    split: str
    class_counts: list[int]  # images per class, in label order
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def num_images(self) -> int:
        return int(sum(self.class_counts))


@dataclass
class DataReport:
    """The result of ``check_dataset``: ``ok`` is False when any problem was found; ``str()`` reads well."""

    dataset: str
    root: str
    quick: bool
    classes: list[str] = field(default_factory=list)
    splits: list[SplitReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # usable, but probably not what was meant
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        mode = "quick: headers only" if self.quick else "every image decoded"
        lines = [f"fgvc data check: {self.dataset} at {self.root} ({mode})"]
        if self.classes:
            lines.append(f"{len(self.classes)} classes")
        if self.splits:
            lines.append(f"{'split':<8} {'images':>7} {'classes':>8} {'per class min':>14} {'max':>5} "
                         f"{'missing':>8} {'unreadable':>11}")
            for s in self.splits:
                counts = np.asarray(s.class_counts)
                present = counts[counts > 0]
                lo, hi = (int(present.min()), int(present.max())) if len(present) else (0, 0)
                lines.append(f"{s.split:<8} {s.num_images:>7} {len(present):>8} {lo:>14} {hi:>5} "
                             f"{len(s.missing):>8} {len(s.unreadable):>11}")
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.problems:
            lines.append(f"PROBLEMS ({len(self.problems)}):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("OK: no problems found")
        return "\n".join(lines)


def _examples(items: list[str]) -> str:
    more = f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more


def check_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    quick: bool = False,
    progress: bool = False,
    **options: Any,
) -> DataReport:
    """Check every split of dataset ``name`` in ``root``; problems are collected in the report, not raised.

    ``options`` go to the reader (e.g. ``annotation_level="family"`` for aircraft).
    """
    if name not in READERS:
        raise ValueError(
            f"cannot check {name!r}: choose one of {[n for n in list_datasets() if n in READERS]} "
            "(the synthetic dataset has no files)"
        )
    report = DataReport(dataset=name, root=str(root), quick=quick)
    try:
        splits = dataset_splits(name, root)
    except (FileNotFoundError, ValueError) as e:
        report.problems.append(str(e))
        return report

    owner: dict[str, str] = {}
    shared: list[str] = []
    large: list[tuple[int, str]] = []  # (pixels, path)
    for split in splits:
        try:
            records = READERS[name](root, split, **options)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            report.problems.append(f"{split}: {e}")
            continue
        if not report.classes:
            report.classes = list(records.classes)
        counts = np.bincount(np.asarray(records.labels, dtype=np.int64), minlength=len(records.classes))
        s = SplitReport(split=split, class_counts=counts.tolist())
        bar = tqdm(records.paths, desc=f"check {split}", leave=False, disable=not progress)
        boxes = None if records.boxes_pixels is None else records.boxes_pixels.tolist()
        outside, beyond = [], []  # boxes that miss the image / reach past its border (clamped when read)
        for i, path in enumerate(bar):
            reason, size = inspect_image(path, full=not quick)
            if boxes is not None and size is not None:
                x0, y0, x1, y1 = boxes[i]
                shown = f"{path} (box {x0:g}, {y0:g}, {x1:g}, {y1:g} in a {size[0]} x {size[1]} image)"
                if x0 >= size[0] or y0 >= size[1] or x1 <= 0 or y1 <= 0:
                    outside.append(shown)
                elif x0 < 0 or y0 < 0 or x1 > size[0] or y1 > size[1]:
                    beyond.append(shown)
            if size is not None and size[0] * size[1] > LARGE_IMAGE_PIXELS:
                large.append((size[0] * size[1], path))
            if reason == "missing":
                s.missing.append(path)
            elif reason is not None:
                s.unreadable.append((path, reason))
            key = os.path.normcase(os.path.abspath(path))
            if key in owner and owner[key] != split:
                shared.append(f"{path} ({owner[key]} and {split})")
            owner.setdefault(key, split)
        report.splits.append(s)

        if not records.paths:
            report.problems.append(f"{split}: no images listed")
        if s.missing:
            report.problems.append(
                f"{split}: {len(s.missing)} of {len(records.paths)} listed images are missing: {_examples(s.missing)}"
            )
        if s.unreadable:
            shown = [f"{p} ({r})" for p, r in s.unreadable]
            report.problems.append(f"{split}: {len(s.unreadable)} images cannot be read: {_examples(shown)}")
        if outside:
            report.problems.append(f"{split}: {len(outside)} boxes lie outside their image: {_examples(outside)}")
        if beyond:
            report.warnings.append(
                f"{split}: {len(beyond)} boxes reach past the border of their image (cut to the image when read): "
                f"{_examples(beyond)}"
            )
        empty = [records.classes[k] for k in np.flatnonzero(counts == 0)]
        if empty and records.paths:
            report.notes.append(f"{split}: {len(empty)} classes have no images: {_examples(empty)}")
    if large:
        large.sort(reverse=True)
        shown = [f"{p} ({n / 1e6:.1f} megapixels)" for n, p in large]
        bomb = sum(n > (Image.MAX_IMAGE_PIXELS or float("inf")) for n, _ in large)
        pil = f"; {bomb} exceed PIL's decompression-bomb limit of {Image.MAX_IMAGE_PIXELS / 1e6:.1f} megapixels" \
            if bomb else ""
        report.warnings.append(
            f"{len(large)} images are larger than {LARGE_IMAGE_PIXELS / 1e6:.0f} megapixels{pil} (each is decoded "
            f"again every epoch; resize them once): {_examples(shown)}"
        )
    if shared:
        report.problems.append(f"{len(shared)} images are in more than one split: {_examples(shared)}")
    if name == "aircraft":
        report.notes.append("'trainval' is train + val and was checked through them")
    return report

