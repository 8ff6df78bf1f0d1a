"""Where the patch tokens of a ViT lie on its input: the patch grid, boxes of cells, cell centres, crops.

A ViT cuts its (H, W) input into ``rows x cols`` patches of ``patch_size`` pixels whose starts are ``stride``
pixels apart (the patch size, or less for overlapping patches), and puts its prefix tokens (CLS, register)
before the patch tokens in the sequence. ``PatchGrid`` holds these numbers once, so that every module that
turns a map over the patches into pixels (GLSim's box, the boxes and overlays of ``fgvc.viz``, the pointing
game of ``fgvc.evaluate``) computes it the same way. Pixel boxes are ``(x0, y0, x1, y1)`` with x the column
and y the row, like torchvision, ends exclusive. ``ViTBackbone.patch_grid`` gives the grid of a backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PatchGrid", "box_iou_pairs", "crop_and_resize", "crop_and_resize_batched"]


@dataclass(frozen=True)
class PatchGrid:
    """``rows x cols`` patches of ``patch_size`` (h, w) pixels, ``stride`` (h, w) apart, on an input of ``img_size``.

    patch_size: default 1 x 1, boxes and centres in cells. stride: None means the patch size (non-overlapping
    patches). img_size: the (H, W) input that boxes are
    clipped to; None means the pixels the grid covers. num_prefix_tokens: tokens before the patch tokens in a
    sequence (CLS, distillation, register), for ``split``. Sizes may be fractional (``tiling``).
    """

    rows: int
    cols: int
    patch_size: tuple[float, float] = (1, 1)
    stride: tuple[float, float] | None = None
    img_size: tuple[float, float] | None = None
    num_prefix_tokens: int = 0

    def __post_init__(self) -> None:
        patch = tuple(self.patch_size)
        stride = patch if self.stride is None else tuple(self.stride)
        covered = ((self.rows - 1) * stride[0] + patch[0], (self.cols - 1) * stride[1] + patch[1])
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "img_size", covered if self.img_size is None else tuple(self.img_size))

    @classmethod
    def tiling(cls, grid_size: Sequence[int], img_size: Sequence[float]) -> PatchGrid:
        """The grid that tiles ``img_size`` exactly (patch = input / grid), for a map whose patches are unknown."""
        (rows, cols), (h, w) = grid_size, img_size
        return cls(rows, cols, (h / rows, w / cols), img_size=(h, w))

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols

    # ---------------------------------------------------------------- tokens
    def split(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Tokens (B, P + rows * cols, D) -> prefix tokens (B, P, D) and patch tokens (B, rows * cols, D)."""
        p = self.num_prefix_tokens
        prefix, patches = tokens[:, :p], tokens[:, p:]
        if patches.shape[1] != self.num_patches:
            raise ValueError(
                f"expected {self.rows}x{self.cols}={self.num_patches} patch tokens after {p} prefix tokens, "
                f"got {patches.shape[1]}"
            )
        return prefix, patches

    # ---------------------------------------------------------------- cells -> pixels
    def top_cells(self, heat: Tensor, k: int) -> Tensor:
        """Flat indices (B, k) of the k highest cells of (B, rows, cols) maps (``row * cols + col``)."""
        if not 1 <= k <= self.num_patches:
            raise ValueError(
                f"top_k={k} must be between 1 and the number of patches ({self.rows}x{self.cols}={self.num_patches})"
            )
        return heat.reshape(heat.shape[0], -1).topk(k, dim=-1).indices

    def box(self, cells: Tensor, *, include_last: bool = True) -> Tensor:
        """The pixel box around cells given as flat indices (B, k). Returns (B, 4) (x0, y0, x1, y1), ends exclusive.

        The box starts at the first selected row / column and, with ``include_last``, ends where the last
        selected patch ends (``row_max * stride + patch``). ``include_last=False`` ends where the last selected
        row / column starts instead (``row_max * stride``: GLSim's official box, which leaves them out), at
        least one patch wide. Ends are clipped to ``img_size``.
        """
        (ph, pw), (sh, sw), (h, w) = self.patch_size, self.stride, self.img_size
        r, c = cells // self.cols, cells % self.cols  # (B, k) patch row, column
        r0, r1 = r.amin(-1), r.amax(-1)
        c0, c1 = c.amin(-1), c.amax(-1)
        y0, x0 = r0 * sh, c0 * sw
        y_end, x_end = (r1 * sh + ph, c1 * sw + pw) if include_last else (r1 * sh, c1 * sw)
        y1 = torch.clamp(torch.maximum(y_end, y0 + ph), max=h)
        x1 = torch.clamp(torch.maximum(x_end, x0 + pw), max=w)
        return torch.stack([x0, y0, x1, y1], dim=-1)

    def top_box(self, heat: Tensor, k: int, *, include_last: bool = True) -> Tensor:
        """The pixel box (B, 4) around the k highest cells of (B, rows, cols) maps (see ``box``)."""
        return self.box(self.top_cells(heat, k), include_last=include_last)

    def centres(self, cells: Tensor) -> tuple[Tensor, Tensor]:
        """Pixel centres (x, y), float, of cells given as flat indices: ``col * stride + patch / 2``."""
        (ph, pw), (sh, sw) = self.patch_size, self.stride
        y = (cells // self.cols).float() * sh + ph / 2
        x = (cells % self.cols).float() * sw + pw / 2
        return x, y

    def peak_centres(self, heat: Tensor) -> tuple[Tensor, Tensor]:
        """Pixel centres (x, y), each (B,), of the highest cell of (B, rows, cols) maps (the first one on ties)."""
        return self.centres(heat.reshape(heat.shape[0], -1).float().argmax(dim=1))

    # ---------------------------------------------------------------- pixels -> cells
    def cells_inside(self, boxes: Tensor) -> Tensor:
        """Which cells lie inside each pixel box: (B, 4) boxes on patch borders -> (B, rows, cols) bool.

        For non-overlapping grids only (a cell of an overlapping grid is in several boxes' borders at once).
        """
        if self.stride != self.patch_size:
            raise ValueError(f"cells_inside needs non-overlapping patches, got stride {self.stride} "
                             f"for patches of {self.patch_size}")
        b = boxes.shape[0]
        ph, pw = self.patch_size
        r = torch.arange(self.rows, device=boxes.device).view(1, self.rows, 1)
        c = torch.arange(self.cols, device=boxes.device).view(1, 1, self.cols)
        x0, y0, x1, y1 = (boxes[:, i].view(b, 1, 1) for i in range(4))
        return (r >= y0 // ph) & (r < y1 // ph) & (c >= x0 // pw) & (c < x1 // pw)

    def coverage(self, boxes: Tensor) -> Tensor:
        """Share of each patch that each pixel box covers: (B, 4) boxes -> (B, rows, cols) in [0, 1]."""
        (ph, pw), (sh, sw) = self.patch_size, self.stride
        start_y = torch.arange(self.rows, dtype=boxes.dtype) * sh  # (rows,)
        start_x = torch.arange(self.cols, dtype=boxes.dtype) * sw
        oy = (torch.minimum(boxes[:, 3:4], start_y + ph) - torch.maximum(boxes[:, 1:2], start_y)).clamp(min=0)
        ox = (torch.minimum(boxes[:, 2:3], start_x + pw) - torch.maximum(boxes[:, 0:1], start_x)).clamp(min=0)
        return oy[:, :, None] * ox[:, None, :] / (ph * pw)  # (B, rows, cols)

    def extent(self, shown_size: Sequence[float] | None = None) -> tuple[float, float, float, float]:
        """imshow ``extent`` (left, right, bottom, top) that puts a (rows, cols) map on the input image exactly.

        Cell (r, c) covers the stride-sized square centred on its patch (centre ``c * stride + patch / 2``), so
        with non-overlapping patches the map covers the input exactly. ``shown_size``: (height, width) of the
        image drawn when it is not the input (the map is scaled to it). Pixel centres are at integers.
        """
        (ph, pw), (sh, sw), (h, w) = self.patch_size, self.stride, self.img_size
        fy, fx = (1.0, 1.0) if shown_size is None else (shown_size[0] / h, shown_size[1] / w)
        left, right = (pw - sw) / 2, (self.cols - 1) * sw + (pw + sw) / 2
        top, bottom = (ph - sh) / 2, (self.rows - 1) * sh + (ph + sh) / 2
        return (left * fx - 0.5, right * fx - 0.5, bottom * fy - 0.5, top * fy - 0.5)


def box_iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of matching rows of two (N, 4) pixel box tensors (x0, y0, x1, y1), exclusive ends. Returns (N,)."""
    a, b = a.float(), b.float()
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter).clamp(min=1e-12)


def crop_and_resize(
    images: Tensor, boxes: Tensor, size: Sequence[int] | None = None, *, batched: bool | None = None
) -> Tensor:
    """Cut each pixel box (B, 4) out of (B, C, H, W) images and resize it to ``size`` (h, w; default H, W).

    Bilinear with ``align_corners=True``, as GLSim's official ``F.upsample_bilinear`` of ``img[:, y0:y1, x0:x1]``.
    Boxes: integral values (long or float), ends exclusive; the image gets a gradient, the boxes none.

    ``batched`` picks how: True, every box at once with tensor ops (``crop_and_resize_batched``: no loop over the
    images, no host sync, traceable and exportable with a free batch size); False, one ``F.interpolate`` per
    image; None (default), batched on an accelerator and while tracing, exporting or compiling, the loop in
    eager CPU mode, where it is the faster of the two (``benchmarks/crop_batched.py``). Both agree to a float
    rounding (``tests/test_batched_crop.py``).
    """
    if batched is None:
        batched = images.device.type != "cpu" or _tracing()
    if batched:
        return crop_and_resize_batched(images, boxes, size)
    size = tuple(images.shape[-2:]) if size is None else tuple(size)
    crops = [
        F.interpolate(img[None, :, y0:y1, x0:x1], size=size, mode="bilinear", align_corners=True)
        for img, (x0, y0, x1, y1) in zip(images, boxes.long().tolist(), strict=True)
    ]
    return torch.cat(crops, dim=0)


def _tracing() -> bool:
    """Whether a tracer, an exporter or the compiler is recording: then only tensor ops are safe."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


def _crop_axis(start: Tensor, end: Tensor, n: int, extent: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Source pixels and weights of ``n`` samples over [start, end) on an axis of ``extent`` pixels.

    start, end: (B,) long. Returns the lower and upper pixels (B, n) long and their weights (B, n) in ``dtype``,
    with ``F.interpolate(mode="bilinear", align_corners=True)``'s arithmetic on the slice: sample j at
    ``j * (w - 1) / (n - 1)`` of a slice of w pixels, pixel 0 for ``n == 1``.
    """
    start = start.clamp(0, extent - 1)
    last = (end.clamp(max=extent) - start).clamp(min=1) - 1  # (B,) the slice's last pixel, w - 1
    if n > 1:  # divide by a tensor, as the kernel does: a Python divisor may become a product by its reciprocal
        scale = last.to(dtype) / torch.full_like(last, n - 1, dtype=dtype)  # (B,)
    else:
        scale = torch.zeros_like(last, dtype=dtype)
    src = scale[:, None] * torch.arange(n, dtype=dtype, device=start.device)  # (B, n) in the slice
    low = torch.minimum(src.floor().long(), last[:, None])  # (B, n)
    upper_weight = (src - low.to(dtype)).clamp(0, 1)
    high = low + (low < last[:, None]).long()
    return start[:, None] + low, start[:, None] + high, 1 - upper_weight, upper_weight


def crop_and_resize_batched(images: Tensor, boxes: Tensor, size: Sequence[int] | None = None) -> Tensor:
    """``crop_and_resize`` for every box at once: the boxes' rows, then their columns, by index ops.

    Same arguments and result (to a float rounding) as the per-image loop, with no Python loop, no ``.tolist()``
    and no host sync, so that it runs asynchronously on a GPU and exports (ONNX) with the batch size free.
    """
    _, c, h, w = images.shape
    out_h, out_w = (h, w) if size is None else (int(size[0]), int(size[1]))
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    x0, y0, x1, y1 = boxes.detach().to(images.device).long().unbind(-1)  # each (B,)
    ys0, ys1, wy0, wy1 = _crop_axis(y0, y1, out_h, h, dtype)  # rows (B, out_h)
    xs0, xs1, wx0, wx1 = _crop_axis(x0, x1, out_w, w, dtype)  # columns (B, out_w)
    # the rows of every box (index_select copies whole rows: much cheaper than a gather per pixel), then the
    # four pixels around each sample, blended with the products of the row and column weights
    image_index = torch.ones_like(y0).cumsum(0) - 1  # (B,) 0..B-1 without a Python batch size
    planes = (image_index[:, None] * c + torch.arange(c, device=images.device)) * h  # (B, C) first row of each
    rows = images.reshape(-1, w)  # (B * C * H, W)

    def pixels(ys: Tensor) -> tuple[Tensor, Tensor]:  # rows (B, out_h) -> left, right pixels (B, C, out_h, out_w)
        picked = rows.index_select(0, (planes[:, :, None] + ys[:, None, :]).reshape(-1))  # (B * C * out_h, W)
        picked = picked.reshape(-1, c, out_h, w).to(dtype)
        return tuple(picked.gather(3, xs[:, None, None, :].expand(-1, c, out_h, -1)) for xs in (xs0, xs1))

    wy0, wy1 = wy0[:, None, :, None], wy1[:, None, :, None]  # (B, 1, out_h, 1)
    wx0, wx1 = wx0[:, None, None, :], wx1[:, None, None, :]  # (B, 1, 1, out_w)
    top_left, top_right = pixels(ys0)
    out = top_right * (wy0 * wx1) + top_left * (wy0 * wx0)  # (B, C, out_h, out_w)
    bottom_left, bottom_right = pixels(ys1)
    out = out + bottom_left * (wy1 * wx0) + bottom_right * (wy1 * wx1)
    return out.to(images.dtype) if images.is_floating_point() else out.round().to(images.dtype)
