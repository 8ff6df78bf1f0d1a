"""Part locations (CUB's 15 named parts) mapped into the model's input frame, for ``fgvc.evaluate(parts=True)``.

A dataset with parts has ``part_names`` (P names) and ``parts_pixels``, (N, P, 3) x, y, visible in original
pixels (``CUB200`` reads them from ``parts/parts.txt`` and ``parts/part_locs.txt``). ``EvalParts`` carries
them through the test transform's geometry (resize, then center crop) as ``tv_tensors.KeyPoints`` with
torchvision's v2 transforms, the same ones ``build_transforms`` applies to the image, and gives
``input_parts``: (N, P, 3) x, y as fractions of the model input, visible 0 where the part is not visible or
the crop cuts it off.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .contract import boxes_pixels_of, input_boxes_of
from .transforms import EvalView, _hw, eval_geometry, map_boxes

__all__ = ["EvalParts", "input_parts_of", "map_parts", "part_names_of", "parts_pixels_of"]


def part_names_of(data: Any) -> list[str] | None:
    """The ``part_names`` of any dataset, or None."""
    names = getattr(data, "part_names", None)
    return None if names is None else list(names)


def parts_pixels_of(data: Any) -> torch.Tensor | None:
    """The ``parts_pixels`` ((N, P, 3) x, y, visible in original pixels) of any dataset, or None."""
    return getattr(data, "parts_pixels", None)


def input_parts_of(data: Any) -> torch.Tensor | None:
    """The ``input_parts`` ((N, P, 3) x, y as fractions of the model input, visible) of any dataset, or None."""
    return getattr(data, "input_parts", None)


def map_parts(
    parts_pixels: torch.Tensor,
    image_sizes: torch.Tensor,
    img_size: int | tuple[int, int],
    resize: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Original-pixel parts -> fractions of the test-transform output (``v2.Resize``, then ``v2.CenterCrop``:
    ``fgvc.data.transforms.eval_geometry``, the one ``map_boxes`` moves boxes through).

    Args:
        parts_pixels: (N, P, 3) x, y, visible (1 or 0) in original pixels.
        image_sizes: (N, 2) original (width, height).
        img_size, resize: as given to ``build_transforms`` (same defaults).
    Returns:
        (N, P, 3) float32: x / width and y / height of the crop, and visible, set to 0 where the crop cuts
        the part off (x or y outside [0, size)).
    """
    size = _hw(img_size)
    geometry = eval_geometry(size, resize)  # the test transform's resize and crop, without the pixels
    parts = torch.as_tensor(parts_pixels, dtype=torch.float32)
    if parts.ndim != 3 or parts.shape[-1] != 3:
        raise ValueError(f"parts_pixels must be (N, P, 3) x, y, visible; got {tuple(parts.shape)}")
    sizes = torch.as_tensor(image_sizes).reshape(-1, 2).tolist()
    if len(sizes) != len(parts):
        raise ValueError(f"{len(parts)} images' parts but {len(sizes)} image sizes")
    crop_h, crop_w = size
    out = torch.empty_like(parts)
    for n, (w, h) in enumerate(sizes):
        points = tv_tensors.KeyPoints(parts[n, :, :2], canvas_size=(int(h), int(w)))  # (P, 2) x, y
        xy = geometry(points).as_subclass(torch.Tensor)  # (P, 2) in crop pixels, not clamped
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < crop_w) & (xy[:, 1] >= 0) & (xy[:, 1] < crop_h)
        out[n, :, 0] = xy[:, 0] / crop_w
        out[n, :, 1] = xy[:, 1] / crop_h
        out[n, :, 2] = ((parts[n, :, 2] > 0) & inside).float()
    return out


class EvalParts(EvalView):
    """A test dataset with ``input_parts`` (and ``input_boxes`` where it has boxes) in the model's input frame.

    ``fgvc.evaluate(model, EvalParts(test_data, img_size=448), parts=True)`` scores every map of the model
    against the parts. ``test_data`` needs ``part_names``, ``parts_pixels`` and ``image_sizes`` (``CUB200``
    with its ``parts/`` files) and should use ``build_transforms(model, train=False, img_size, resize)`` with
    the same sizes. Boxes are mapped as ``EvalBoxes`` maps them, so one wrapper gives both. Items,
    ``classes`` and ``targets`` are the wrapped dataset's.
    """

    def __init__(
        self, dataset: Dataset, img_size: int | tuple[int, int], resize: int | tuple[int, int] | None = None
    ) -> None:
        parts, names = parts_pixels_of(dataset), part_names_of(dataset)
        if parts is None or names is None:
            raise ValueError(
                f"{type(dataset).__name__} has no parts (CUB reads them from parts/parts.txt and "
                "parts/part_locs.txt, which this dataset's folder lacks)"
            )
        super().__init__(dataset)
        self.part_names = names
        self.input_parts = map_parts(parts, dataset.image_sizes, img_size, resize)
        boxes = boxes_pixels_of(dataset)
        self.input_boxes = (
            input_boxes_of(dataset) if boxes is None else map_boxes(boxes, dataset.image_sizes, img_size, resize)
        )
        self.boxes = self.input_boxes
