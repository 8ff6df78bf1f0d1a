"""Result tables that say what chance would score, and the banner of a small (smoke) run.

    print(fgvc.report.results_table({("cub", "glsim"): result}, {"cub": test}))

A top-1 of 20% means little until one knows that guessing scores 20% on five classes; every table here has a
``chance`` row per dataset beside the models' rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data.contract import input_boxes_of, targets_of

__all__ = ["Chance", "chance_levels", "results_table", "smoke_banner"]

SMOKE_BANNER = (
    "SMALL MODE (FGVC_SMOKE=1): tiny models, a few images, one epoch. It checks that every cell runs; the "
    "numbers below are NOT meaningful. Set FGVC_SMOKE=0 (or SMOKE = False) for the real run."
)


def smoke_banner(smoke: bool | None = None) -> str:
    """Print (and return) the small-mode banner when ``smoke`` (default: ``FGVC_SMOKE=1`` in the environment)."""
    if smoke is None:
        smoke = os.environ.get("FGVC_SMOKE", "0") == "1"
    if not smoke:
        return ""
    line = "!" * 100
    text = f"{line}\n{SMOKE_BANNER}\n{line}"
    print(text)
    return text


@dataclass
class Chance:
    """What a model without information scores (percent): uniform guessing for top-1 / top-5, a random
    ranking for Recall@1 and mAP (expected AP of a random ranking ~ the share of same-class images), a
    uniformly random point for the pointing game (the mean share of the image inside the true box)."""

    top1: float
    top5: float | None
    recall1: float | None = None
    map: float | None = None
    pointing_game: float | None = None


def chance_levels(targets: Sequence[int] | np.ndarray, num_classes: int | None = None,
                  box_fractions: Sequence[float] | np.ndarray | None = None) -> Chance:
    """Chance levels for a test split with labels ``targets`` (and, when known, the area of each true box as a
    fraction of the input). ``top5`` is None with 5 classes or fewer (top-5 is then 100% by construction)."""
    t = np.asarray(targets, dtype=np.int64)
    c = int(num_classes if num_classes is not None else (t.max() + 1 if len(t) else 1))
    top5 = 100.0 * 5 / c if c > 5 else None
    recall1 = mean_ap = None
    if len(t) > 1:
        same = np.bincount(t, minlength=c)[t] - 1  # other images of each query's class
        share = same / (len(t) - 1)
        recall1 = 100.0 * float(share.mean())  # P(the nearest of a random ranking is of the same class)
        mean_ap = 100.0 * float(share[same > 0].mean()) if (same > 0).any() else None
    point = None if box_fractions is None or len(box_fractions) == 0 else 100.0 * float(np.mean(box_fractions))
    return Chance(100.0 / c, top5, recall1, mean_ap, point)


def _box_fractions(data: Any) -> np.ndarray | None:
    boxes = input_boxes_of(data)
    if boxes is None:
        return None
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # fractions of the input (x0, y0, x1, y1)
    return np.clip(b[:, 2] - b[:, 0], 0, 1) * np.clip(b[:, 3] - b[:, 1], 0, 1)


def _cell(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def results_table(results: Mapping[tuple[str, str], Any], data: Mapping[str, Any] | None = None) -> str:
    """A fixed-width table of ``fgvc.evaluate`` results keyed ``(dataset label, method)``, with a chance row
    per dataset (from ``data[label]``'s targets and boxes, or from the result's own targets and class count).

    Columns: top-1, top-5 (``-`` with 5 classes or fewer), Recall@1, mAP, crop IoU, pointing game.
    """
    width = max([len("data")] + [len(name) for name, _ in results]) + 1
    head = f"{'data':{width}s} {'method':8s} {'top-1':>6s} {'top-5':>6s} {'R@1':>6s} {'mAP':>6s} {'IoU':>5s} {'point':>6s}"
    lines = [head, "-" * len(head)]
    done: set[str] = set()
    for (name, method), r in results.items():
        classes = r.confusion_matrix.shape[0]
        if name not in done:
            done.add(name)
            source = (data or {}).get(name)
            targets = targets_of(source)
            chance = chance_levels(r.targets if targets is None else targets, classes, _box_fractions(source))
            has_ret = r.retrieval is not None
            lines.append(
                f"{name:{width}s} {'chance':8s} {chance.top1:6.1f} {_cell(chance.top5):>6s} "
                f"{_cell(chance.recall1 if has_ret else None):>6s} {_cell(chance.map if has_ret else None):>6s} "
                f"{'-':>5s} {_cell(chance.pointing_game if r.pointing_game is not None else None):>6s}"
            )
        ret = r.retrieval
        top5 = r.top5 if classes > 5 else None
        lines.append(
            f"{name:{width}s} {method:8s} {r.top1:6.1f} {_cell(top5):>6s} {_cell(ret and ret.recall[1]):>6s} "
            f"{_cell(ret and ret.map):>6s} {_cell(r.mean_iou, '{:.2f}'):>5s} {_cell(r.pointing_game):>6s}"
        )
    return "\n".join(lines)
