"""Figures of what a model looks at. Every function returns a matplotlib Figure (never only shows it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .methods.base import FGVCModel

__all__ = ["denormalize", "plot_selection"]


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized (B, 3, H, W) tensors -> (B, H, W, 3) float arrays in [0, 1] for imshow."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * s + m).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def _draw_box(ax: Any, box: Sequence[float], color: str, label: str | None = None) -> None:
    import matplotlib.patches as patches

    x0, y0, x1, y1 = (float(v) for v in box)
    # pixel (x, y) covers [x - 0.5, x + 0.5] in imshow coordinates; exclusive ends
    rect = patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, ec=color, label=label)
    ax.add_patch(rect)


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

    images: (B, 3, H, W) normalized as the model expects. gt_boxes: (B, 4) in input pixels (green); the
    model's selected box is drawn in red. Works for any model whose output has ``similarity`` and ``boxes``.
    """
    import matplotlib.pyplot as plt

    from .methods.glsim import crop_and_resize

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = model(images.to(device))
    model.train(was_training)
    if out.similarity is None or out.boxes is None:
        raise ValueError(f"{model.method} outputs no selection map / boxes to plot")
    cfg = model.data_config
    mean = cfg["mean"] if mean is None else mean
    std = cfg["std"] if std is None else std
    shown = denormalize(images.cpu(), mean, std)
    crops = denormalize(crop_and_resize(images.cpu(), out.boxes.cpu()), mean, std)
    preds = out.logits.argmax(1).tolist()
    names = class_names or model.class_names
    h, w = images.shape[-2:]

    b = len(images)
    fig, axes = plt.subplots(b, 3, figsize=(7.5, 2.5 * b), squeeze=False)
    for i in range(b):
        ax_img, ax_map, ax_crop = axes[i]
        ax_img.imshow(shown[i])
        if gt_boxes is not None:
            _draw_box(ax_img, gt_boxes[i], "lime", "detail" if i == 0 else None)
        _draw_box(ax_img, out.boxes[i], "red", "selected" if i == 0 else None)

        def name(c: int) -> str:
            return names[c] if names else str(c)

        title = f"pred {name(preds[i])}"
        if targets is not None:
            title = f"true {name(int(targets[i]))}\n" + title
        ax_img.set_title(title, fontsize=8)
        ax_map.imshow(shown[i])
        sim = out.similarity[i].float().cpu().numpy()
        ax_map.imshow(sim, cmap="jet", alpha=0.5, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        ax_map.set_title("CLS-patch similarity", fontsize=8)
        ax_crop.imshow(crops[i])
        ax_crop.set_title("crop (re-encoded)", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if gt_boxes is not None:
        axes[0, 0].legend(loc="lower left", fontsize=6)
    fig.tight_layout()
    return fig
