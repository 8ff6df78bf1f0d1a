"""Figures: every map kind for a batch, CLS attention per layer and head, and the most confused classes.

Every function returns a matplotlib Figure (save it with ``fig.savefig(path)``); none only shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..methods.base import FGVCModel
from ..methods.glsim import crop_and_resize
from .core import _new_figure, denormalize, draw_box, overlay_map
from .maps import AttentionMaps, attention_maps, map_box

__all__ = [
    "ConfusedPair",
    "confused_pairs",
    "draw_panels",
    "plot_confused_pair",
    "plot_layer_heads",
    "plot_maps",
    "resolve_stats",
]

_SHORT = {
    "attention": "CLS attention",
    "rollout": "rollout",
    "similarity": "CLS-patch similarity",
    "glca_queries": "GLCA queries",
    "glca_attention": "GLCA attention",
    "parts": "TransFG parts",
}


def resolve_stats(model: FGVCModel, data: Any = None, mean: Any = None, std: Any = None) -> tuple[Any, Any]:
    """Normalization to undo for display: explicit > the dataset's ``mean`` / ``std`` > the model's config."""
    if mean is None:
        mean = getattr(data, "mean", None) or model.data_config["mean"]
    if std is None:
        std = getattr(data, "std", None) or model.data_config["std"]
    return mean, std


def _describe(kind: str, layer: int, head: int | None, depth: int) -> str:
    text = _SHORT.get(kind, kind)
    if kind == "attention":
        text += f", layer {layer % depth + 1}/{depth}"
    if kind in ("attention", "glca_attention", "parts"):
        text += ", heads mean" if head is None else f", head {head}"
    return text


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
) -> None:
    """Fill one row of axes: image with boxes, one overlay per kind, the crop.

    The crop is the model's own (GLSim's box) when it has one, else the box around the ``top_k`` highest
    cells of the last map drawn (what that map points at).
    shown: (H, W, 3) de-normalized image; images: the normalized (B, 3, H, W) batch (crops are cut from it,
    then de-normalized with mean / std).
    """
    out = maps.output
    ax_img, *ax_maps, ax_crop = axes
    ax_img.imshow(shown)
    if gt_box is not None:
        draw_box(ax_img, gt_box, "lime", "true box")
    last = None
    for ax, kind in zip(ax_maps, kinds, strict=True):
        last = maps.get(kind, layer=layer, head=head)[index]  # (rows, cols)
        overlay_map(
            shown, last, ax=ax, input_size=maps.img_size, patch_size=maps.patch_size,
            patch_stride=maps.patch_stride, title=_describe(kind, layer, head, maps.depth),
        )
    if out.boxes is not None:
        box = out.boxes[index].cpu()
        crop_title = "crop (re-encoded)"
    elif last is not None:
        box = map_box(last[None].cpu(), top_k, maps.img_size, maps.patch_size, maps.patch_stride)[0]
        crop_title = f"top-{top_k} cells of the map"
    else:
        box = None
    if box is not None:
        draw_box(ax_img, box, "red", "crop")
        crop = crop_and_resize(images[index : index + 1].cpu().float(), box[None].long())  # (1, 3, H, W)
        ax_crop.imshow(denormalize(crop, mean, std)[0])
        ax_crop.set_title(crop_title, fontsize=8)
    if title:
        ax_img.set_title(title, fontsize=8)
    for ax in (ax_img, ax_crop):
        ax.set_xticks([])
        ax.set_yticks([])


def _title(preds: Sequence[int], targets: Sequence[int] | None, names: Sequence[str] | None, i: int) -> str:
    def name(c: int) -> str:
        return names[c] if names else str(c)

    text = f"pred {name(preds[i])}"
    if targets is not None:
        text = f"true {name(int(targets[i]))}\n" + text
    return text


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
) -> Any:
    """A grid, one row per image: the image (true box green, crop red), one map per kind, the crop.

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
    panel = 2.4
    fig = _new_figure((panel * cols, b * (panel * h / w + 0.5) + 0.4))
    axes = fig.subplots(b, cols, squeeze=False)
    for i in range(b):
        draw_panels(
            axes[i], maps, i, shown[i], images, kinds, layer=layer, head=head, mean=mean, std=std,
            gt_box=None if gt_boxes is None else gt_boxes[i], title=_title(preds, targets, names, i),
        )
    fig.suptitle(f"{model.method}: what the model looks at", fontsize=10)
    fig.tight_layout()
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
    fig.suptitle(f"{model.method}: CLS attention per layer and head", fontsize=10)
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
    pyplot: bool = True,
) -> Any:
    """Two rows of examples: images of ``true`` predicted as ``predicted`` (the mistakes), then images of
    ``predicted`` that were classified right (what the model took them for).

    data: the evaluated dataset (items ``(image, label)``, in the order of ``predictions``).
    predictions: (N,) predicted classes, e.g. ``EvalResult.predictions``.
    """
    true, pred = int(pair[0]), int(pair[1])
    predictions = np.asarray(predictions)
    targets = getattr(data, "targets", None)
    targets = np.asarray([data[i][1] for i in range(len(data))] if targets is None else targets)
    names = class_names or getattr(data, "classes", None)
    mean = mean if mean is not None else getattr(data, "mean", (0.0, 0.0, 0.0))
    std = std if std is not None else getattr(data, "std", (1.0, 1.0, 1.0))
    mistakes = np.nonzero((targets == true) & (predictions == pred))[0][:n]
    right = np.nonzero((targets == pred) & (predictions == pred))[0][:n]
    if len(right) == 0:  # no correct example of the other class: show any of it
        right = np.nonzero(targets == pred)[0][:n]

    def name(c: int) -> str:
        return names[c] if names else str(c)

    fig = _new_figure((2.0 * n, 4.6), pyplot=pyplot)
    axes = fig.subplots(2, n, squeeze=False)
    for row, (indices, label) in enumerate(
        [(mistakes, f"{name(true)} predicted as {name(pred)}"), (right, f"{name(pred)} (correct)")]
    ):
        for j in range(n):
            ax = axes[row, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(indices):
                x = data[int(indices[j])][0]
                ax.imshow(denormalize(torch.as_tensor(x)[None].float(), mean, std)[0])
                ax.set_title(f"#{int(indices[j])}", fontsize=7)
            else:
                ax.axis("off")
        axes[row, 0].set_ylabel(label, fontsize=8)
        axes[row, 0].axis("on")
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
    total = int(((targets == true) & (predictions == pred)).sum())
    fig.suptitle(f"true {name(true)}, predicted {name(pred)}: {total} images", fontsize=9)
    fig.tight_layout()
    return fig

