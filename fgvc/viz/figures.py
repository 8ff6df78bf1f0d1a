"""Figures: every map kind for a batch, CLS attention per layer and head, the most confused classes, and the
selection of a method that crops (image and box, selection map, the crop it re-encodes).

Every function returns a matplotlib Figure (save it with ``fig.savefig(path)``); none only shows it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..data.contract import classes_of, targets_of
from ..layers.geometry import crop_and_resize
from ..methods.base import FGVCModel
from .core import MODEL_COLOR, TRUE_COLOR, _new_figure, denormalize, draw_box, heat_colorbar, overlay_map
from .maps import AttentionMaps, attention_maps, map_box

__all__ = [
    "ConfusedPair",
    "confused_pairs",
    "draw_panels",
    "plot_confused_pair",
    "plot_layer_heads",
    "plot_maps",
    "plot_selection",
    "pretty_name",
    "resolve_stats",
    "rows_figure",
]

def _normalization(data: Any) -> tuple[Any, Any] | None:
    """The (mean, std) of the ``Normalize`` in a dataset's transform (looking through wrappers), else None."""
    for _ in range(5):  # EvalBoxes / SubsetDataset / Subset wrap the dataset that has the transform
        if data is None:
            return None
        transform = getattr(data, "transform", None)
        steps = getattr(transform, "transforms", [transform])
        for step in steps:
            if hasattr(step, "mean") and hasattr(step, "std") and type(step).__name__ == "Normalize":
                return tuple(step.mean), tuple(step.std)
        data = getattr(data, "dataset", None)
    return None


def resolve_stats(model: FGVCModel | None, data: Any = None, mean: Any = None, std: Any = None) -> tuple[Any, Any]:
    """Normalization to undo for display: explicit > the dataset's ``mean`` / ``std`` > the ``Normalize`` in
    the dataset's transform > the model's config > none (images already in [0, 1])."""
    found = _normalization(data)
    config = model.data_config if model is not None else {}
    if mean is None:
        mean = getattr(data, "mean", None) or (found and found[0]) or config.get("mean") or (0.0, 0.0, 0.0)
    if std is None:
        std = getattr(data, "std", None) or (found and found[1]) or config.get("std") or (1.0, 1.0, 1.0)
    return mean, std


def pretty_name(name: str) -> str:
    """A class name as a reader wants it: CUB's ``"003.Sooty_Albatross"`` -> ``"Sooty Albatross"``."""
    head, dot, rest = name.partition(".")
    if dot and head.isdigit() and rest:
        name = rest
    return name.replace("_", " ")


def is_mask(maps: AttentionMaps, kind: str) -> bool:
    """Whether ``kind`` is a selection (cells chosen or not, ``MapInfo.mask``): drawn as an outline, not a tint."""
    info = maps.info.get(kind)
    return info is not None and info.mask


def draw_panels(
    axes: Sequence[Any],
    maps: AttentionMaps,
    index: int,
    shown: np.ndarray,
    images: Tensor,
    kinds: Sequence[str],
    *,
    layer: int = -1,
    head: int | None = None,
    mean: Sequence[float],
    std: Sequence[float],
    gt_box: Sequence[float] | None = None,
    title: str | None = None,
    top_k: int = 8,
    column_titles: bool = True,
) -> None:
    """Fill one row of axes: the image with boxes, one map per kind, the crop.

    Every map is drawn over the desaturated image, normalised per panel, with the true box (``gt_box``,
    input pixels) on every panel; selections (``MapInfo.mask``) are outlined. The crop is the model's own
    (``output.boxes``, also drawn on the map that chose it, ``MapInfo.shows_box``) when it has one, else the
    box around the ``top_k``
    highest cells of the last map drawn (what that map points at).
    shown: (H, W, 3) de-normalized image; images: the normalized (B, 3, H, W) batch (crops are cut from it,
    then de-normalized with mean / std). title: on the image panel; column_titles: the map names on top.
    """
    out = maps.output
    ax_img, *ax_maps, ax_crop = axes
    own_box = out.boxes[index].cpu() if out.boxes is not None else None
    last = None
    for ax, kind in zip(ax_maps, kinds, strict=True):
        last = maps.get(kind, layer=layer, head=head)[index]  # (rows, cols)
        overlay_map(
            shown, last, ax=ax, input_size=maps.img_size, patch_size=maps.patch_size,
            patch_stride=maps.patch_stride, mask=is_mask(maps, kind), true_box=gt_box,
            model_box=own_box if kind in maps.info and maps.info[kind].shows_box else None, colorbar=False,
            title=maps.describe(kind, layer, head) if column_titles else None,
        )
    if own_box is not None:
        box, crop_title = own_box, "crop (re-encoded)"
    elif last is not None:
        selection = is_mask(maps, kinds[-1])
        k = int((last > 0.5).sum()) if selection else top_k  # a selection: its cells
        box = map_box(last[None].cpu(), k, maps.img_size, maps.patch_size, maps.patch_stride)[0]
        crop_title = "box of the selected cells" if selection else f"box of the map's top-{top_k} cells"
    else:
        box = None
    ax_img.imshow(shown)
    if gt_box is not None:
        draw_box(ax_img, gt_box, TRUE_COLOR)
    if box is not None:
        draw_box(ax_img, box, MODEL_COLOR)
        crop = crop_and_resize(images[index : index + 1].cpu().float(), box[None].long())  # (1, 3, H, W)
        ax_crop.imshow(denormalize(crop, mean, std)[0])
        if column_titles:
            ax_crop.set_title(crop_title, fontsize=8)
    else:
        ax_crop.axis("off")
    if title:
        ax_img.set_title(title, fontsize=8)
    elif column_titles:
        ax_img.set_title("image", fontsize=8)
    for ax in (ax_img, ax_crop):
        ax.set_xticks([])
        ax.set_yticks([])


def rows_figure(
    rows: int, cols: int, aspect: float, *, panel: float = 2.2, footer: bool = True, pyplot: bool = True,
    titled_rows: bool = False,
) -> tuple[Any, list[Any], list[Any], Any]:
    """A figure of ``rows`` rows of ``cols`` equal panels (height = ``aspect`` x width), each row a subfigure
    (for its own title), and an optional footer row for the colorbar and the box legend. The first row has room
    for panel titles; ``titled_rows``: every row has (so that panels titled on every row keep one size).

    Returns (figure, row subfigures, per row an array of axes, footer subfigure or None).
    """
    heights = [panel * aspect + (0.62 if r == 0 or titled_rows else 0.42) for r in range(rows)]
    heights += [0.6] if footer else []
    fig = _new_figure((panel * cols + 0.3, sum(heights) + 0.35), pyplot=pyplot)
    fig.set_layout_engine("constrained")
    subs = list(fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0])
    axes = [sub.subplots(1, cols, squeeze=False)[0] for sub in subs[:rows]]
    return fig, subs[:rows], axes, (subs[rows] if footer else None)


def draw_footer(footer: Any, *, true_box: bool = True, model_box: bool = True, outlines: bool = False,
                colorbar: bool = True) -> None:
    """The colorbar of per-panel normalised maps and the legend of the boxes and outlines, in one row."""
    from matplotlib.lines import Line2D

    cax, lax = footer.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1]})
    if colorbar:
        heat_colorbar(footer, cax=cax, orientation="horizontal")
        cax.set_box_aspect(0.05)  # a thin bar, whatever the figure's width
    else:  # only outlines drawn: no values to scale
        cax.axis("off")
    lax.axis("off")
    handles = []
    if true_box:
        handles.append(Line2D([], [], color=TRUE_COLOR, lw=2, label="true box"))
    if model_box:
        handles.append(Line2D([], [], color=MODEL_COLOR, lw=2, label="model's box (cropped at right)"))
    if outlines:
        handles.append(Line2D([], [], color=MODEL_COLOR, lw=2, ls="-", label="selected tokens (outline)"))
    if handles:
        lax.legend(handles=handles, loc="center", fontsize=7, ncol=1, frameon=False)


def row_title(
    method: str, index: int | str | None, pred: int, target: int | None, names: Sequence[str] | None,
    width: float,
) -> tuple[str, str]:
    """One line per row: method, image, prediction, truth, correct or not (wrapped to ``width`` inches);
    and its colour (green correct, red wrong, black unknown truth)."""
    def name(c: int) -> str:
        return pretty_name(names[c]) if names and c < len(names) else f"class {c}"

    parts = [method] + ([f"#{index}"] if isinstance(index, int) else [index] if index else [])
    parts.append(f"predicted: {name(pred)}")
    color = "black"
    if target is not None:
        right = int(target) == int(pred)
        parts.append(f"true: {name(int(target))}")
        parts.append("\u2713 correct" if right else "\u2717 wrong")
        color = "#006400" if right else "#b00000"
    return join_parts(parts, max(30, int(width * 72 / (9 * 0.55)))), color


def join_parts(parts: Sequence[str], width: int) -> str:
    """``parts`` joined by " | ", broken into lines of at most ``width`` characters between parts (a part is
    only broken itself when it is longer than a line)."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 5 + len(part) <= width:
            lines[-1] += "  |  " + part
        else:
            lines.extend(textwrap.wrap(part, width) or [""])
    return "\n".join(lines)


def plot_maps(
    model: FGVCModel,
    images: Tensor,
    kinds: Sequence[str] | None = None,
    *,
    layer: int = -1,
    head: int | None = None,
    targets: Sequence[int] | None = None,
    gt_boxes: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    maps: AttentionMaps | None = None,
    indices: Sequence[int] | None = None,
    pyplot: bool = True,
) -> Any:
    """A grid, one row per image: the image (true box green, the model's box blue), one map per kind, the crop.

    Each row is titled with the method, the image (``indices``: dataset indices to show), the prediction, the
    truth and whether it is right; the maps are drawn over the desaturated image, normalised per panel (one
    colorbar in the footer), selections outlined, the true box on every panel.
    images: (B, 3, H, W) normalized as the model expects (any H, W the model was built for).
    kinds: map kinds (default: every kind the model has, ``available_maps``). layer / head: for the kinds
    that have them (head None: the mean over heads). gt_boxes: (B, 4) input pixels. mean / std: the
    normalization to undo (default: the model's). maps: reuse an ``attention_maps`` result.
    """
    maps = attention_maps(model, images) if maps is None else maps
    kinds = list(maps.kinds if kinds is None else kinds)
    for kind in kinds:
        if kind not in maps.kinds:
            raise ValueError(f"map {kind!r} is not available for {model.method}; available: {maps.kinds}")
    mean, std = resolve_stats(model, None, mean, std)
    shown = denormalize(images.cpu().float(), mean, std)  # (B, H, W, 3)
    preds = maps.output.logits.argmax(1).tolist()
    names = class_names or model.class_names
    b, cols = len(images), len(kinds) + 2
    h, w = images.shape[-2:]
    fig, subs, axes, footer = rows_figure(b, cols, h / w, pyplot=pyplot)
    width = fig.get_figwidth()
    for i in range(b):
        draw_panels(
            axes[i], maps, i, shown[i], images, kinds, layer=layer, head=head, mean=mean, std=std,
            gt_box=None if gt_boxes is None else gt_boxes[i], column_titles=i == 0,
        )
        text, color = row_title(model.method, indices[i] if indices is not None else None, preds[i],
                                None if targets is None else int(targets[i]), names, width)
        subs[i].suptitle(text, fontsize=9, color=color)
    draw_footer(footer, true_box=gt_boxes is not None, outlines=any(is_mask(maps, k) for k in kinds),
                colorbar=any(not is_mask(maps, k) for k in kinds))
    return fig


def plot_layer_heads(
    model: FGVCModel,
    image: Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    maps: AttentionMaps | None = None,
    index: int = 0,
) -> Any:
    """CLS attention of every layer (rows) and head (columns, then the head mean) for one image.

    image: (3, H, W) normalized, or a (B, 3, H, W) batch with ``index`` choosing the image.
    """
    images = image[None] if image.dim() == 3 else image
    maps = attention_maps(model, images) if maps is None else maps
    mean, std = resolve_stats(model, None, mean, std)
    shown = denormalize(images[index : index + 1].cpu().float(), mean, std)[0]
    depth, heads = maps.depth, maps.num_heads
    h, w = images.shape[-2:]
    panel = 1.8
    fig = _new_figure((panel * (heads + 1), depth * (panel * h / w + 0.3) + 0.4))
    axes = fig.subplots(depth, heads + 1, squeeze=False)
    for layer in range(depth):
        for j, head in enumerate([*range(heads), None]):
            heat = maps.cls_attention(layer, head)[index]
            overlay_map(
                shown, heat, ax=axes[layer, j], input_size=maps.img_size, patch_size=maps.patch_size,
                patch_stride=maps.patch_stride,
                title=f"layer {layer + 1} " + ("mean" if head is None else f"head {head}"),
            )
    fig.suptitle(f"{model.method}: CLS attention per layer and head (each panel normalised to its range)",
                 fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ error analysis
class ConfusedPair(NamedTuple):
    """``count`` images of class ``true`` were predicted as ``predicted`` (``rate``: share of ``true``'s)."""

    true: int
    predicted: int
    count: int
    rate: float


def confused_pairs(confusion: np.ndarray | Tensor, k: int = 10) -> list[ConfusedPair]:
    """The k most frequent mistakes of a (C, C) confusion matrix (rows true, columns predicted).

    Off-diagonal cells with a count > 0, largest count first; ties: higher rate, then lower (true,
    predicted). ``EvalResult.confusion_matrix`` is such a matrix.
    """
    cm = np.asarray(confusion.cpu() if isinstance(confusion, Tensor) else confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    support = cm.sum(1)
    pairs = [
        ConfusedPair(int(t), int(p), int(cm[t, p]), float(cm[t, p] / support[t]))
        for t, p in zip(*np.nonzero(cm), strict=True)
        if t != p
    ]
    pairs.sort(key=lambda q: (-q.count, -q.rate, q.true, q.predicted))
    return pairs[:k]


def plot_confused_pair(
    data: Any,
    pair: ConfusedPair | tuple[int, int],
    predictions: Sequence[int] | np.ndarray,
    *,
    n: int = 4,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    model: FGVCModel | None = None,
    pyplot: bool = True,
) -> Any:
    """Two rows of examples: images of ``true`` predicted as ``predicted`` (the mistakes), then images of
    ``predicted`` that were classified right (what the model took them for); each row titled.

    data: the evaluated dataset (items ``(image, label)``, in the order of ``predictions``); its images are
    un-normalised for display with ``mean`` / ``std``, else the ``Normalize`` of its transform, else the
    ``model``'s. predictions: (N,) predicted classes, e.g. ``EvalResult.predictions``.
    """
    true, pred = int(pair[0]), int(pair[1])
    predictions = np.asarray(predictions)
    targets = targets_of(data)
    targets = np.asarray([data[i][1] for i in range(len(data))] if targets is None else targets)
    names = class_names or classes_of(data)
    mean, std = resolve_stats(model, data, mean, std)
    mistakes = np.nonzero((targets == true) & (predictions == pred))[0][:n]
    right = np.nonzero((targets == pred) & (predictions == pred))[0][:n]
    right_label = "classified right"
    if len(right) == 0:  # no correct example of the other class: show any of it
        right = np.nonzero(targets == pred)[0][:n]
        right_label = "none classified right; any"

    def name(c: int) -> str:
        return pretty_name(names[c]) if names else f"class {c}"

    n = max(len(mistakes), len(right), 1)  # no empty columns when there are fewer examples
    first = data[int(mistakes[0])][0] if len(mistakes) else data[0][0]
    h, w = torch.as_tensor(first).shape[-2:]
    fig, subs, axes, _ = rows_figure(2, n, h / w, panel=2.0, footer=False, pyplot=pyplot)
    width = fig.get_figwidth()
    total = int(((targets == true) & (predictions == pred)).sum())
    rows = [
        (mistakes, f"True {name(true)}, predicted {name(pred)}: {total} image{'s' if total != 1 else ''}"),
        (right, f"{name(pred)} ({right_label}): what the model took them for"),
    ]
    for row, (indices, label) in enumerate(rows):
        for j in range(n):
            ax = axes[row][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(indices):
                x = data[int(indices[j])][0]
                ax.imshow(denormalize(torch.as_tensor(x)[None].float(), mean, std)[0])
                ax.set_title(f"#{int(indices[j])}", fontsize=7)
            else:
                ax.axis("off")
        subs[row].suptitle(join_parts([label], max(30, int(width * 72 / (9 * 0.55)))), fontsize=9,
                           color="#b00000" if row == 0 else "black")
    return fig


@torch.no_grad()
def plot_selection(
    model: FGVCModel,
    images: Tensor,
    *,
    targets: Sequence[int] | None = None,
    gt_boxes: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Any:
    """One row per image: the image with boxes, the selection map, the crop the model re-encodes.

    images: (B, 3, H, W) normalized as the model expects. gt_boxes: (B, 4) in input pixels (the true box,
    green, on the image and the map); the model's selected box is drawn in blue. Each row is titled with the
    prediction, the truth and whether it is right. Works for any model whose output has ``selection_map`` and
    ``boxes``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = model(images.to(device))
    model.train(was_training)
    if out.selection_map is None or out.boxes is None:
        raise ValueError(f"{model.method} outputs no selection map / boxes to plot")
    cfg = model.data_config
    mean = cfg["mean"] if mean is None else mean
    std = cfg["std"] if std is None else std
    shown = denormalize(images.cpu(), mean, std)
    boxes = out.boxes.cpu()
    crops = denormalize(crop_and_resize(images.cpu(), boxes), mean, std)
    preds = out.logits.argmax(1).tolist()
    names = class_names or model.class_names
    h, w = images.shape[-2:]

    b = len(images)
    fig, subs, axes, footer = rows_figure(b, 3, h / w, panel=2.4)
    for i in range(b):
        ax_img, ax_map, ax_crop = axes[i]
        gt = None if gt_boxes is None else gt_boxes[i]
        ax_img.imshow(shown[i])
        if gt is not None:
            draw_box(ax_img, gt, TRUE_COLOR)
        draw_box(ax_img, boxes[i], MODEL_COLOR)
        overlay_map(shown[i], out.selection_map[i].float().cpu(), ax=ax_map, input_size=(h, w), true_box=gt,
                    model_box=boxes[i], colorbar=False)
        ax_crop.imshow(crops[i])
        if i == 0:
            ax_img.set_title("image", fontsize=8)
            ax_map.set_title("CLS-patch similarity", fontsize=8)
            ax_crop.set_title("crop (re-encoded)", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
        text, color = row_title(model.method, None, preds[i], None if targets is None else int(targets[i]), names,
                                fig.get_figwidth())
        subs[i].suptitle(text, fontsize=9, color=color)
    draw_footer(footer, true_box=gt_boxes is not None)
    return fig
