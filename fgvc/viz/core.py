"""Basic drawing: de-normalized images, boxes, map overlays at any resolution, and GLSim's selection figure.

Every plotting function returns a matplotlib Figure (never only shows it); save it with ``fig.savefig``.
Maps are (rows, cols) grids over the patch tokens; ``grid_extent`` places them on the image exactly, also
for non-square inputs and overlapping patches (cell i is centred on its patch, ``i * stride + patch / 2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..methods.base import FGVCModel

__all__ = ["denormalize", "draw_box", "grid_extent", "overlay_map", "plot_selection", "upsample_map"]


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalized (B, 3, H, W) tensors -> (B, H, W, 3) float arrays in [0, 1] for imshow."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * s + m).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()


def draw_box(
    ax: Any, box: Sequence[float], color: str, label: str | None = None, *, scale: tuple[float, float] = (1.0, 1.0)
) -> None:
    """Draw an (x0, y0, x1, y1) box (exclusive ends, input pixels) on ``ax``; ``scale`` = (sx, sy) maps input
    pixels to the pixels of the image shown (for an image shown at another resolution)."""
    import matplotlib.patches as patches

    sx, sy = scale
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
    # pixel (x, y) covers [x - 0.5, x + 0.5] in imshow coordinates; exclusive ends
    rect = patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, ec=color, label=label)
    ax.add_patch(rect)


_draw_box = draw_box  # the old private name


def grid_extent(
    grid_size: tuple[int, int],
    input_size: tuple[int, int],
    patch_size: tuple[int, int] | None = None,
    patch_stride: tuple[int, int] | None = None,
    shown_size: tuple[int, int] | None = None,
) -> tuple[float, float, float, float]:
    """imshow ``extent`` (left, right, bottom, top) that puts a (rows, cols) patch map on an image.

    Cell (r, c) covers the stride-sized square centred on its patch: centre ``c * stride + patch / 2``. For
    non-overlapping patches (stride = patch, the default) the map covers the input exactly. ``shown_size``:
    (height, width) of the image drawn, when it is not the model input (the map is scaled to it).
    """
    rows, cols = grid_size
    h, w = input_size
    ph, pw = patch_size if patch_size is not None else (h / rows, w / cols)
    sh, sw = patch_stride if patch_stride is not None else (ph, pw)
    fy, fx = (1.0, 1.0) if shown_size is None else (shown_size[0] / h, shown_size[1] / w)
    left, right = (pw - sw) / 2, (cols - 1) * sw + (pw + sw) / 2
    top, bottom = (ph - sh) / 2, (rows - 1) * sh + (ph + sh) / 2
    return (left * fx - 0.5, right * fx - 0.5, bottom * fy - 0.5, top * fy - 0.5)


def upsample_map(heat: Tensor, size: tuple[int, int], *, normalize: bool = True) -> Tensor:
    """(..., rows, cols) patch maps -> (..., H, W) at any resolution (bilinear, cell centres kept in place).

    normalize: rescale each map to [0, 1] (min -> 0, max -> 1; a constant map becomes 0).
    """
    if heat.dim() < 2:
        raise ValueError(f"a map must be (..., rows, cols), got shape {tuple(heat.shape)}")
    lead = heat.shape[:-2]
    x = heat.detach().float().reshape(-1, 1, *heat.shape[-2:])  # (N, 1, rows, cols)
    x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    if normalize:
        lo = x.flatten(1).amin(1)[:, None, None]
        hi = x.flatten(1).amax(1)[:, None, None]
        x = (x - lo) / (hi - lo).clamp(min=1e-12)
    return x.reshape(*lead, *size)


def _as_image(image: Tensor | np.ndarray) -> np.ndarray:
    """(H, W, 3) array or (3, H, W) tensor in [0, 1] -> (H, W, 3) array."""
    if isinstance(image, Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be (H, W, 3) or (3, H, W) in [0, 1], got shape {image.shape}")
    return image


def overlay_map(
    image: Tensor | np.ndarray,
    heat: Tensor | np.ndarray,
    *,
    ax: Any = None,
    input_size: tuple[int, int] | None = None,
    patch_size: tuple[int, int] | None = None,
    patch_stride: tuple[int, int] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    smooth: bool = False,
    title: str | None = None,
) -> Any:
    """Draw a patch map over an image; returns the Figure (a new one unless ``ax`` is given).

    image: (H, W, 3) array or (3, H, W) tensor in [0, 1] (``denormalize`` first), at any resolution.
    heat: (rows, cols) map over the patch grid, or (H', W') already at pixel resolution.
    input_size: (height, width) of the model input the map was computed on (default: the image's size);
        the map is scaled to the image when the two differ. patch_size / patch_stride: the backbone's
        (default: the input tiled by the grid), for exact placement with overlapping patches.
    smooth: bilinear display instead of one flat colour per patch.
    """
    img = _as_image(image)
    heat = heat.detach().float().cpu().numpy() if isinstance(heat, Tensor) else np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be a (rows, cols) map, got shape {heat.shape}")
    if ax is None:
        fig = _new_figure(figsize=(3.0, 3.0 * img.shape[0] / img.shape[1]))
        ax = fig.add_subplot(1, 1, 1)
    shown = img.shape[:2]
    input_size = tuple(input_size) if input_size is not None else shown
    extent = grid_extent(heat.shape, input_size, patch_size, patch_stride, shown)
    ax.imshow(img)
    ax.imshow(heat, cmap=cmap, alpha=alpha, extent=extent, interpolation="bilinear" if smooth else "nearest")
    ax.set_xlim(-0.5, shown[1] - 0.5)
    ax.set_ylim(shown[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return ax.figure


def _new_figure(figsize: tuple[float, float], *, pyplot: bool = True) -> Any:
    """A Figure managed by pyplot (shown by Jupyter's inline backend) or a bare one (for widgets)."""
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


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

    from ..methods.glsim import crop_and_resize

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
