"""Class hierarchies: a coarser label (an aircraft variant's family, its manufacturer) for every fine class,
so that a fine-grained model's predictions can also be scored at the coarser levels.

A hierarchy is ``{level: [coarse label of class 0, of class 1, ...]}`` (index = fine label), e.g.
FGVC-Aircraft's ``{"family": [...], "manufacturer": [...]}``. A dataset may carry its own as a
``hierarchy`` attribute (``FGVCAircraft`` reads it from the official files); ``class_hierarchy(data)`` finds
it through views (``SubsetDataset``, ``EvalBoxes``), and ``load_hierarchy(mapping_or_file, classes)`` checks a
user's mapping (a dict, a CSV or a JSON file of fine class name -> coarse name per level) against the classes.

    hierarchy = load_hierarchy({"colour": {"red-circle": "red", "red-ring": "red", ...}}, data.classes)
    hierarchy_top1(predictions, targets, hierarchy)      # {"colour": 93.5}
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .contract import classes_of

__all__ = [
    "Hierarchy",
    "class_hierarchy",
    "coarse_function",
    "hierarchy_chance",
    "hierarchy_top1",
    "load_hierarchy",
]

#: level -> the coarse label of every fine class, in label order.
Hierarchy = dict[str, list[str]]

_MAX_VIEWS = 32  # views wrapping views (SubsetDataset of EvalBoxes of ...) followed through ``.dataset``


def coarse_function(pairs: Iterable[tuple[str, str]], level: str, where: str) -> dict[str, str]:
    """``{fine: coarse}`` from (fine, coarse) pairs, which must give every fine class one coarse label.

    A fine class seen with two coarse labels is an error naming it, both labels and ``where`` they come from.
    """
    out: dict[str, str] = {}
    for fine, coarse in pairs:
        first = out.setdefault(fine, coarse)
        if first != coarse:
            raise ValueError(
                f"{where}: class {fine!r} has two {level} labels, {first!r} and {coarse!r}; a class needs one"
            )
    return out


def load_hierarchy(source: Mapping[str, Any] | str | os.PathLike, classes: Sequence[str]) -> Hierarchy:
    """A user's hierarchy for the fine ``classes`` (names in label order), checked, in label order.

    ``source`` is a dict ``{level: {fine class name: coarse name}}`` (or ``{level: [coarse per label]}``),
    a JSON file of that dict, or a CSV file whose header is ``class,<level>,<level>...`` with one row per fine
    class. Every class must have a label at every level (names the mapping has beyond ``classes`` are
    ignored, so one file serves a class subset too); a missing class, or a CSV class given two labels, is an
    error naming it.
    """
    classes = [str(c) for c in classes]
    where = "the hierarchy"
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        source = _read_file(Path(source))
    if not isinstance(source, Mapping) or not source:
        raise ValueError(f"{where}: a hierarchy is a non-empty mapping {{level: {{class: coarse label}}}}")
    out: Hierarchy = {}
    for level, labels in source.items():
        level = str(level)
        if isinstance(labels, Mapping):
            table = {str(k): str(v) for k, v in labels.items()}
        elif isinstance(labels, Sequence) and not isinstance(labels, str):
            if len(labels) != len(classes):
                raise ValueError(
                    f"{where}: level {level!r} lists {len(labels)} labels for {len(classes)} classes "
                    "(one per label)"
                )
            table = dict(zip(classes, (str(v) for v in labels), strict=True))
        else:
            raise ValueError(f"{where}: level {level!r} must map class names to coarse names, got {labels!r}")
        missing = [c for c in classes if c not in table]
        if missing:
            shown = ", ".join(repr(c) for c in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise ValueError(
                f"{where}: level {level!r} has no label for {len(missing)} of {len(classes)} classes: {shown}"
            )
        out[level] = [table[c] for c in classes]
    return out


def _read_file(path: Path) -> dict[str, Any]:
    """``{level: {class: coarse}}`` from a JSON or CSV file (see ``load_hierarchy``)."""
    if not path.is_file():
        raise FileNotFoundError(f"hierarchy file {path} does not exist")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(path.read_text(), object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: a hierarchy file is .csv or .json, got {path.suffix or 'no suffix'}")
    with open(path, newline="") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"{path}: the header must be class,<level>[,<level>...] (a column per coarse level)")
    header, body = rows[0], rows[1:]
    short = [n for n, row in enumerate(body, 2) if len(row) != len(header)]
    if short:
        raise ValueError(f"{path}, line {short[0]}: expected {len(header)} fields like the header {header}")
    return {
        level: coarse_function(((row[0], row[j]) for row in body), level, str(path))
        for j, level in enumerate(header[1:], 1)
    }


def _unique_keys(pairs: list[tuple[str, Any]], path: Path) -> dict[str, Any]:
    """A JSON object whose keys appear once (a class listed twice would silently keep its last label)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{path}: {key!r} appears twice in one object ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def class_hierarchy(data: Any) -> Hierarchy | None:
    """The hierarchy ``data`` carries (its own ``hierarchy``, or a wrapped dataset's), in ``data``'s labels.

    Views are followed through ``.dataset``; a view that relabels (``subset_classes``) gets the labels of its
    classes by name. None when no dataset in the chain has one, or a view's classes are not all named there.
    """
    inner = data
    for _ in range(_MAX_VIEWS):
        own = getattr(inner, "hierarchy", None)
        if own is not None:
            break
        inner = getattr(inner, "dataset", None)
        if inner is None:
            return None
    else:
        return None
    own = {str(level): [str(v) for v in labels] for level, labels in own.items()}
    names, outer = classes_of(inner), classes_of(data)
    if inner is data or outer is None or names is None or list(outer) == list(names):
        return own
    index = {str(name): k for k, name in enumerate(names)}
    if any(str(name) not in index for name in outer):
        return None
    return {level: [labels[index[str(name)]] for name in outer] for level, labels in own.items()}


def hierarchy_top1(
    predictions: Any, targets: Any, hierarchy: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Top-1 (percent) at each coarse level: a prediction counts when the coarse label of the predicted
    fine class equals that of the true class (the fine top-1 mapped up, so never below the fine top-1).

    predictions, targets: (N,) fine labels; hierarchy: ``{level: [coarse label per fine class]}``.
    """
    pred, true = np.asarray(predictions, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    out = {}
    for level, labels in hierarchy.items():
        _, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)  # (C,)
        out[level] = 100.0 * float(np.mean(codes[pred] == codes[true])) if len(true) else float("nan")
    return out


def hierarchy_chance(targets: Any, hierarchy: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """What a uniformly random fine guess scores at each level (percent): the mean, over the images, of the
    share of fine classes in the true class's coarse group."""
    true = np.asarray(targets, dtype=np.int64)
    out = {}
    for level, labels in hierarchy.items():
        _, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)  # (C,)
        share = np.bincount(codes) / len(codes)  # (groups,) fraction of the fine classes in each group
        out[level] = 100.0 * float(share[codes[true]].mean()) if len(true) else float("nan")
    return out
