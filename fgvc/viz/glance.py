"""GLSim's glance (``glance_size``): the two looks of one image, side by side.

The global pass sees the input downscaled to ``glance_size``; the CLS-patch similarity on that coarse grid
chooses the top-k box, which is mapped to input pixels and cut from the **full-resolution** input for the
crop pass. ``plot_glance`` draws one row per image: (a) the glance at its own pixels with the similarity and
the box in glance pixels, (b) the mapped box on the full image, (c) the crop the crop pass encodes.

    fig = viz.plot_glance(model, images, mean=test.mean, std=test.std, gt_boxes=gt_boxes)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..layers.geometry import crop_and_resize
from ..methods.base import FGVCModel, ModelOutput
from .core import (
    HEAT_CMAP,
    MODEL_COLOR,
    TRUE_COLOR,
    denormalize,
    draw_box,
    grey_image,
    grid_extent,
    normalize_map,
)
from .figures import draw_footer, join_parts, pretty_name, resolve_stats, rows_figure

__all__ = [
    "GLANCE_KIND", "GlanceLooks", "draw_glance_row", "glance_label", "glance_looks", "glance_row_title",
    "has_glance", "plot_glance",
]

#: The explorer's choice for a glance model's two looks (beside its map kinds).
GLANCE_KIND = "glance"


def has_glance(model: FGVCModel) -> bool:
    """Whether ``model``'s global pass runs on a downscaled input (GLSim with ``glance_size``)."""
    return getattr(model, "glance_size", None) is not None


@dataclass
class GlanceLooks:
    """What a glance model saw for a batch (``glance_looks``); tensors on the CPU.

    glance: (B, 3, h, w) the global pass's input at ``glance_size``, normalized as the model's input.
    similarity: (B, gr, gc) the CLS-patch similarity on the glance grid.
    glance_boxes: (B, 4) the top-k box in glance pixels (x0, y0, x1, y1), ends exclusive.
    boxes: (B, 4) the box in input pixels (``output.boxes``: ``glance_box_to_input`` of ``glance_boxes``).
    crops: (B, 3, ch, cw) what the crop pass encodes: the box cut from the full input, resized to
        ``crop_size``.
    logits: (B, C) the model's prediction.
    """

    glance: Tensor
    similarity: Tensor
    glance_boxes: Tensor
    boxes: Tensor
    crops: Tensor
    logits: Tensor


@torch.no_grad()
def glance_looks(model: FGVCModel, images: Tensor, output: ModelOutput | None = None) -> GlanceLooks:
    """The two looks of a glance model for (B, 3, H, W) normalized ``images``. ``output``: the model's
    evaluation output for them when already computed; else the model runs in eval mode (its mode restored)."""
    if not has_glance(model):
        raise ValueError(f"plot_glance needs a GLSim model with glance_size ({model.method} has none); "
                         "use plot_maps for its maps and crop")
    if output is None:
        was_training = model.training
        model.eval()
        output = model(images.to(next(model.parameters()).device))
        model.train(was_training)
    x = images.detach().cpu().float()
    similarity = output.extras["glance_similarity"].detach().float().cpu()  # (B, gr, gc)
    glance_boxes = model.global_grid.top_box(similarity, model.top_k, include_last=model.inclusive_box)
    boxes = output.boxes.detach().cpu()
    return GlanceLooks(
        glance=model.glance(x),  # (B, 3, h, w): the same resize the global pass runs
        similarity=similarity,
        glance_boxes=glance_boxes,
        boxes=boxes,
        crops=crop_and_resize(x, boxes, model.crop_size),  # (B, 3, ch, cw)
        logits=output.logits.detach().float().cpu(),
    )


def _class_name(names: Sequence[str] | None, c: int) -> str:
    return pretty_name(names[c]) if names and c < len(names) else f"class {c}"


def draw_glance_row(
    axes: Sequence[Any],
    model: FGVCModel,
    looks: GlanceLooks,
    index: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    full_image: Tensor,
    gt_box: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    column_titles: bool = True,
) -> None:
    """Fill three axes with image ``index``'s looks: the glance (grey, at its own pixels, nearest; the
    similarity over it, the box in glance pixels), the mapped box on the full image, the crop and prediction.

    full_image: (3, H, W) normalized input; gt_box: (x0, y0, x1, y1) in input pixels (green on (a) and (b)).
    """
    ax_glance, ax_full, ax_crop = axes
    bb = model.backbone
    (gh, gw), (h, w) = model.glance_size, tuple(full_image.shape[-2:])
    ch, cw = looks.crops.shape[-2:]

    glance = denormalize(looks.glance[index : index + 1], mean, std)[0]  # (gh, gw, 3)
    ax_glance.imshow(grey_image(glance), interpolation="nearest")
    heat = looks.similarity[index].numpy()  # (gr, gc)
    value = normalize_map(heat)
    extent = grid_extent(heat.shape, (gh, gw), bb.patch_size, bb.patch_stride)
    ax_glance.imshow(value, cmap=HEAT_CMAP, vmin=0, vmax=1, alpha=np.clip(0.75 * value, 0, 1), extent=extent,
                     interpolation="nearest")
    draw_box(ax_glance, looks.glance_boxes[index], MODEL_COLOR)
    if gt_box is not None:
        draw_box(ax_glance, gt_box, TRUE_COLOR, scale=(gw / w, gh / h))
    ax_glance.set_xlim(-0.5, gw - 0.5)
    ax_glance.set_ylim(gh - 0.5, -0.5)

    ax_full.imshow(denormalize(full_image[None].cpu().float(), mean, std)[0])
    if gt_box is not None:
        draw_box(ax_full, gt_box, TRUE_COLOR)
    draw_box(ax_full, looks.boxes[index], MODEL_COLOR)

    ax_crop.imshow(denormalize(looks.crops[index : index + 1], mean, std)[0])
    pred = int(looks.logits[index].argmax())
    ax_crop.set_title(f"look closely: the {ch}x{cw} px crop\npredicted: {_class_name(class_names, pred)}",
                      fontsize=8)
    if column_titles:
        rows, cols = heat.shape
        ax_glance.set_title(f"glance: {gh}x{gw} px, similarity\nand box on its {rows}x{cols} grid",
                            fontsize=8)
        ax_full.set_title(f"box on the full image\n({h}x{w} px)", fontsize=8)
    else:  # blank titles as tall as the first row's, so that every row's panels have one size
        ax_glance.set_title("\n", fontsize=8)
        ax_full.set_title("\n", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def glance_row_title(label: str, index: int | str | None, pred: int, target: int | None,
                     names: Sequence[str] | None, width: float) -> tuple[str, str]:
    """The row's line (method, image, truth, right or not; the prediction is on the crop) and its colour."""
    parts = [label] + ([f"#{index}"] if isinstance(index, int) else [index] if index else [])
    color = "black"
    if target is not None:
        right = int(target) == int(pred)
        parts += [f"true: {_class_name(names, int(target))}", "\u2713 correct" if right else "\u2717 wrong"]
        color = "#006400" if right else "#b00000"
    return join_parts(parts, max(30, int(width * 72 / (9 * 0.55)))), color


def glance_label(model: FGVCModel) -> str:
    """``"glsim, glance 48x64"``: the method and the size its global pass sees."""
    gh, gw = model.glance_size
    return f"{model.method}, glance {gh}x{gw}"


def plot_glance(
    model: FGVCModel,
    images: Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    gt_boxes: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    targets: Sequence[int] | None = None,
    indices: Sequence[int] | None = None,
    pyplot: bool = True,
) -> Any:
    """One row per image, three panels: (a) the glance, the downscaled image the global pass saw (at its own
    pixels, so its coarseness shows), with the glance similarity and the box in glance pixels; (b) that box
    mapped onto the full-resolution image (blue; the true box green); (c) the crop the crop pass encodes, cut
    at full resolution and resized to ``crop_size``, titled with the prediction.

    model: GLSim with ``glance_size`` (e.g. the ``glsim_glance`` variant); other models: use ``plot_maps``.
    images: (B, 3, H, W) normalized as the model expects. mean / std: the normalization to undo (default: the
    model's). gt_boxes: (B, 4) in input pixels. targets: the true classes (each row says right or wrong).
    indices: dataset indices named in the row titles.
    """
    looks = glance_looks(model, images)
    mean, std = resolve_stats(model, None, mean, std)
    names = class_names or model.class_names
    b = len(images)
    h, w = images.shape[-2:]
    fig, subs, axes, footer = rows_figure(b, 3, h / w, panel=2.4, pyplot=pyplot, titled_rows=True)
    label = glance_label(model)
    for i in range(b):
        gt = None if gt_boxes is None else gt_boxes[i]
        draw_glance_row(axes[i], model, looks, i, mean=mean, std=std, full_image=images[i], gt_box=gt,
                        class_names=names, column_titles=i == 0)
        index = indices[i] if indices is not None else None
        target = None if targets is None else int(targets[i])
        text, color = glance_row_title(label, index, int(looks.logits[i].argmax()), target, names,
                                       fig.get_figwidth())
        subs[i].suptitle(text, fontsize=9, color=color)
    draw_footer(footer, true_box=gt_boxes is not None)
    return fig
