"""Result tables that say what chance would score, the banner of a small (smoke) run, and the files and
figures of an evaluation (``save_evaluation``: what ``fgvc eval --out`` writes) and of a prediction
(``save_maps``: ``fgvc predict --maps``).

    print(fgvc.studies.report.results_table({("cub", "glsim"): result}, {"cub": test}))

A top-1 of 20% means little until one knows that guessing scores 20% on five classes; every table here has a
``chance`` row per dataset beside the models' rows.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.contract import input_boxes_of, targets_of
from ..data.hierarchy import hierarchy_chance

if TYPE_CHECKING:
    from PIL import Image
    from torch.utils.data import Dataset

    from ..engine.evaluate import EvalResult
    from ..methods.base import FGVCModel

__all__ = [
    "Chance", "chance_levels", "hierarchy_markdown", "results_table", "save_evaluation", "save_maps",
    "smoke_banner",
]

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


def save_evaluation(
    result: EvalResult,
    out_dir: str | os.PathLike,
    *,
    data: Dataset | None = None,
    top_pairs: int = 10,
    examples: int = 4,
    info: dict[str, Any] | None = None,
    mean: Any = None,
    std: Any = None,
) -> list[Path]:
    """Write the evaluation ``result`` (``fgvc.evaluate``'s) to ``out_dir`` and return the paths written.

    ``metrics.json`` (summary, images, tta and ``info``, e.g. the checkpoint), ``per_class_accuracy.csv``
    (label, class, images, correct, accuracy), ``confusion_matrix.csv`` (rows true, columns predicted, with
    class names) and ``confusion_matrix.png``, ``reliability.png`` (confidence against accuracy, before and
    after temperature scaling when the result has both: ``fgvc.viz.plot_reliability``), ``confused_pairs.csv``
    (the ``top_pairs`` most frequent mistakes) and, when the evaluated ``data`` is given, ``confused_pairs/<rank>_<true>_as_<pred>.png`` with
    ``examples`` images of each mistake beside correctly classified images of the predicted class (``mean``
    and ``std``: the normalization to undo for display, e.g. ``model.data_config``'s). With a class hierarchy
    (``result.hierarchy_top1``), also ``hierarchy.md`` (``hierarchy_markdown``); the metrics then hold
    ``<level>_top1``. With part scores (``evaluate(parts=True)``), also ``parts.md`` (``parts_table()``) and
    ``parts.png``: which parts each of the model's maps peaks near (``fgvc.viz.plot_parts``).
    """
    from ..viz.figures import confused_pairs, plot_confused_pair

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = result.names()
    written = []
    metrics = dict(result.summary(), num_samples=result.num_samples, tta=result.tta, **(info or {}))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    written.append(out / "metrics.json")
    if result.hierarchy_top1:
        (out / "hierarchy.md").write_text(hierarchy_markdown(result) + "\n")
        written.append(out / "hierarchy.md")
    if result.parts is not None:
        (out / "parts.md").write_text(result.parts_table() + "\n")
        written += [out / "parts.md", _plot_parts(result, out / "parts.png")]
    support = result.confusion_matrix.sum(1)
    with open(out / "per_class_accuracy.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "class", "images", "correct", "accuracy"])
        for c, name in enumerate(names):
            acc = result.per_class_accuracy[c]
            w.writerow([c, name, int(support[c]), int(result.confusion_matrix[c, c]), "" if np.isnan(acc) else f"{acc:.4f}"])
    written.append(out / "per_class_accuracy.csv")
    with open(out / "confusion_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *names])
        for name, row in zip(names, result.confusion_matrix.tolist(), strict=True):
            w.writerow([name, *row])
    written.append(out / "confusion_matrix.csv")
    written.append(_plot_confusion(result, out / "confusion_matrix.png", names))
    if result.confidence is not None:
        written.append(_plot_reliability(result, out / "reliability.png"))
    pairs = confused_pairs(result.confusion_matrix, k=top_pairs)
    with open(out / "confused_pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "true_label", "true_class", "predicted_label", "predicted_class", "count", "rate"])
        for rank, p in enumerate(pairs, 1):
            w.writerow([rank, p.true, names[p.true], p.predicted, names[p.predicted], p.count, f"{p.rate:.4f}"])
    written.append(out / "confused_pairs.csv")
    if data is not None and pairs and examples > 0:
        folder = out / "confused_pairs"
        folder.mkdir(exist_ok=True)
        for rank, p in enumerate(pairs, 1):
            fig = plot_confused_pair(
                data, p, result.predictions, n=examples, class_names=names, mean=mean, std=std, pyplot=False
            )
            path = folder / f"{rank:02d}_{p.true}_as_{p.predicted}.png"
            fig.savefig(path, dpi=80)
            written.append(path)
    return written


def hierarchy_markdown(result: EvalResult) -> str:
    """The top-1 at the fine level and at each level of ``result``'s class hierarchy, with chance (markdown).

    Chance at a level: a uniformly random fine guess, mapped up (``fgvc.data.hierarchy.hierarchy_chance``).
    """
    levels = result.hierarchy or {}
    chance = hierarchy_chance(result.targets, levels) if levels else {}
    num_classes = len(result.per_class_accuracy)
    lines = ["| level | classes | top-1 (%) | chance (%) |", "|---|---|---|---|",
             f"| class | {num_classes} | {result.top1:.2f} | {100.0 / num_classes:.2f} |"]
    for level, top1 in (result.hierarchy_top1 or {}).items():
        groups = len(set(levels[level])) if level in levels else "-"
        lines.append(f"| {level} | {groups} | {top1:.2f} | {_cell(chance.get(level), '{:.2f}')} |")
    lines += ["", f"{result.num_samples} images. A prediction counts at a level when the predicted class's "
              "label there is the true class's (the top-1 class mapped up)."]
    return "\n".join(lines)


def _plot_confusion(result: EvalResult, path: Path, names: list[str]) -> Path:
    """The confusion matrix as a PNG (sklearn's display; cell values shown up to 30 classes)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    n = len(names)
    side = min(max(4.0, 0.35 * n + 2), 40.0)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    display = ConfusionMatrixDisplay(result.confusion_matrix, display_labels=names if n <= 60 else None)
    display.plot(ax=ax, include_values=n <= 30, cmap="viridis", colorbar=True, xticks_rotation="vertical")
    ax.set_title(f"confusion matrix, {result.num_samples} images (top-1 {result.top1:.2f}%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _plot_parts(result: EvalResult, path: Path) -> Path:
    """Which parts each of ``result``'s maps looks at (``fgvc.viz.plot_parts``, one colour per map) as a PNG."""
    from ..viz.parts import plot_parts

    row = next(iter(result.parts.values()))
    maps = [key[: -len("_peak")] for key in row if key.endswith("_peak")]
    fig = plot_parts({name: result for name in maps}, "peak", maps={name: name for name in maps},
                     title=f"Which parts the model's maps look at: map peak within {result.part_radius:g} grid "
                     f"cell(s), {result.num_samples} images", pyplot=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _plot_reliability(result: EvalResult, path: Path) -> Path:
    """The reliability diagram of ``result`` as a PNG: its confidences, and the calibrated ones if any."""
    from ..viz.plots import plot_reliability

    curves = {"as trained": result.reliability()}
    if result.confidence_calibrated is not None:
        curves[f"temperature-scaled (T = {result.temperature:.3g})"] = result.reliability(calibrated=True)
    fig = plot_reliability(curves, title=f"reliability, {result.num_samples} images", pyplot=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def save_maps(
    model: FGVCModel,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    transform: Callable[[Image.Image], Any] | None = None,
    dpi: int = 110,
) -> list[str]:
    """Save, for each image file, the figure of every map of ``model`` (``fgvc.viz.plot_maps``, the figure
    the notebooks and the explorer draw) as ``out_dir/<file stem>_maps.png``; returns the paths written."""
    from ..data import build_transforms, load_rgb
    from ..viz import plot_maps

    if transform is None:
        transform = build_transforms(model, train=False, img_size=tuple(model.img_size))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    written = []
    for src in images:
        x = transform(load_rgb(src))[None].to(device)  # (1, 3, H, W)
        fig = plot_maps(model, x, indices=[Path(src).name], pyplot=False)
        path = out / f"{Path(src).stem}_maps.png"
        fig.savefig(path, dpi=dpi)
        written.append(str(path))
    return written
