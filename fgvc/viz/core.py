"""Basic drawing: de-normalized images, boxes, and map overlays at any resolution.

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

from ..layers.geometry import PatchGrid

__all__ = [
    "HEAT_CMAP",
    "MODEL_COLOR",
    "TRUE_COLOR",
    "denormalize",
    "draw_box",
    "grey_image",
    "grid_extent",
    "heat_colorbar",
    "normalize_map",
    "outline_mask",
    "overlay_map",
    "upsample_map",
]


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
    rect = patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.6, ec=color, label=label)
    ax.add_patch(rect)


_draw_box = draw_box  # the old private name


def grid_extent(
    grid_size: tuple[int, int],
    input_size: tuple[int, int],
    patch_size: tuple[int, int] | None = None,
    patch_stride: tuple[int, int] | None = None,
    shown_size: tuple[int, int] | None = None,
) -> tuple[float, float, float, float]:
    """imshow ``extent`` (left, right, bottom, top) that puts a (rows, cols) patch map on an image
    (``PatchGrid.extent``).

    Cell (r, c) covers the stride-sized square centred on its patch: centre ``c * stride + patch / 2``. For
    non-overlapping patches (stride = patch, the default) the map covers the input exactly; without
    ``patch_size`` the grid tiles ``input_size``. ``shown_size``: (height, width) of the image drawn, when it
    is not the model input (the map is scaled to it).
    """
    if patch_size is None:
        grid = PatchGrid.tiling(grid_size, input_size)
    else:
        grid = PatchGrid(*grid_size, patch_size, patch_stride, input_size)
    return grid.extent(shown_size)


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


#: Colours used by every figure: the true box, the model's own region (crop box, selected tokens).
TRUE_COLOR = "#00d100"
MODEL_COLOR = "#00b7ff"
#: One hue for map values (light to dark red); drawn with opacity rising with the value over a grey image.
HEAT_CMAP = "Reds"
PER_PANEL = "map value, normalised per panel (0: panel minimum, 1: panel maximum)"


def grey_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) image in [0, 1] -> (H, W, 3) desaturated, lighter grey (so a one-hue map reads over it)."""
    lum = image[..., :3] @ np.array([0.299, 0.587, 0.114]) if image.shape[-1] == 3 else image[..., 0]
    grey = 0.3 + 0.6 * lum  # lifted and compressed: the map, not the photo, carries the contrast
    return np.repeat(grey[..., None], 3, axis=-1).clip(0, 1)


def normalize_map(heat: np.ndarray) -> np.ndarray:
    """Rescale a map to [0, 1] (min -> 0, max -> 1); a constant map becomes 0."""
    lo, hi = float(np.nanmin(heat)), float(np.nanmax(heat))
    return np.zeros_like(heat) if hi - lo < 1e-12 else (heat - lo) / (hi - lo)


def outline_mask(ax: Any, mask: np.ndarray, extent: tuple[float, float, float, float], color: str = MODEL_COLOR,
                 lw: float = 1.6) -> None:
    """Outline the cells of a (rows, cols) mask (> 0.5) placed with an imshow ``extent``: a contour along the
    cell edges, not a tint, so the image under the selected cells stays visible."""
    m = (np.asarray(mask, dtype=np.float32) > 0.5).astype(np.float32)
    if not m.any():
        return
    up = 8  # samples per cell: the 0.5 level lies within 1/16 of a cell of its edge
    fine = np.pad(np.kron(m, np.ones((up, up), dtype=np.float32)), 1)
    left, right, bottom, top = extent
    dx, dy = (right - left) / (fine.shape[1] - 2), (bottom - top) / (fine.shape[0] - 2)
    ext = (left - dx, right + dx, bottom + dy, top - dy)
    ax.contour(fine, levels=[0.5], colors=[color], linewidths=lw, extent=ext, origin="upper")


def heat_colorbar(fig: Any, cax: Any = None, ax: Any = None, *, cmap: str = HEAT_CMAP,
                  label: str = PER_PANEL, orientation: str = "vertical") -> Any:
    """A colorbar for normalised maps (0 to 1 in ``cmap``), in ``cax`` or beside ``ax``."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(0, 1), cmap=cmap)
    bar = fig.colorbar(mappable, cax=cax, ax=None if cax is not None else ax, orientation=orientation)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return bar


def overlay_map(
    image: Tensor | np.ndarray,
    heat: Tensor | np.ndarray,
    *,
    ax: Any = None,
    input_size: tuple[int, int] | None = None,
    patch_size: tuple[int, int] | None = None,
    patch_stride: tuple[int, int] | None = None,
    alpha: float = 0.75,
    cmap: str = HEAT_CMAP,
    smooth: bool = False,
    title: str | None = None,
    mask: bool = False,
    true_box: Sequence[float] | None = None,
    model_box: Sequence[float] | None = None,
    colorbar: bool | None = None,
) -> Any:
    """Draw a patch map over the image shown desaturated; returns the Figure (a new one unless ``ax`` is given).

    The map is normalised per panel to [0, 1] and drawn in one hue (``cmap``) with opacity ``alpha * value``,
    so low values leave the grey image visible. ``mask``: the map is a selection (cells > 0.5 selected), drawn
    as an outline of the selected cells instead. ``true_box`` / ``model_box``: (x0, y0, x1, y1) in input
    pixels, drawn in ``TRUE_COLOR`` / ``MODEL_COLOR``. ``colorbar``: default on for a new figure.

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
    new = ax is None
    if new:
        fig = _new_figure(figsize=(3.6, 3.0 * img.shape[0] / img.shape[1] + 0.4))
        ax = fig.add_subplot(1, 1, 1)
    shown = img.shape[:2]
    input_size = tuple(input_size) if input_size is not None else shown
    extent = grid_extent(heat.shape, input_size, patch_size, patch_stride, shown)
    ax.imshow(grey_image(img))
    if mask:
        outline_mask(ax, heat, extent)
    else:
        value = normalize_map(heat)
        ax.imshow(value, cmap=cmap, vmin=0, vmax=1, alpha=np.clip(alpha * value, 0, 1), extent=extent,
                  interpolation="bilinear" if smooth else "nearest")
    scale = (shown[1] / input_size[1], shown[0] / input_size[0])
    if true_box is not None:
        draw_box(ax, true_box, TRUE_COLOR, scale=scale)
    if model_box is not None:
        draw_box(ax, model_box, MODEL_COLOR, scale=scale)
    ax.set_xlim(-0.5, shown[1] - 0.5)
    ax.set_ylim(shown[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    if colorbar or (colorbar is None and new and not mask):
        heat_colorbar(ax.figure, ax=ax, label="normalised per panel")
    return ax.figure


def _new_figure(figsize: tuple[float, float], *, pyplot: bool = True) -> Any:
    """A Figure managed by pyplot (shown by Jupyter's inline backend) or a bare one (for widgets)."""
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)
