"""Image transforms for training and evaluation (torchvision transforms v2), and boxes mapped through them.

Train: resize -> ``RandomCrop(img_size)`` -> horizontal flip -> (AutoAugment, ImageNet policy) ->
(TrivialAugmentWide) -> float tensor -> normalize -> (RandomErasing). Test: resize -> ``CenterCrop(img_size)`` -> float tensor -> normalize. The
mean / std and interpolation come from the model's ``data_config`` (the backbone's pretrained config:
ImageNet statistics, or 0.5 / 0.5 for augreg ViTs), so the input matches what the weights were trained on.

``resize`` is the short side in pixels (an int), or an exact ``(height, width)``. The default keeps the
usual 0.875 crop ratio: ``floor(S / 0.875)`` for a square ``S`` (448 -> 512), and for a non-square
``(H, W)`` the exact size ``(floor(H / 0.875), floor(W / 0.875))`` (the image is stretched to the input's
aspect ratio, then cropped), as timm's ``crop_mode="squash"`` (the ``crop_mode`` of a non-square model's
``pretrained_cfg``).

Boxes: ``fgvc.evaluate`` reads ``data.input_boxes``, fractions of the *model input*. A dataset's own
``boxes`` are fractions of the original image, which only coincide with the input when the whole image is
resized to it. After resize + center crop, wrap the test dataset in ``EvalBoxes`` to get ``input_boxes`` as
fractions of the crop the model sees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from .contract import FGVCDataset, boxes_pixels_of, classes_of, display_names_of, targets_of

__all__ = [
    "CROP_RATIO", "EvalBoxes", "EvalView", "build_transforms", "default_resize", "eval_geometry", "map_boxes", "resized_size",
]

#: Default ratio of the crop to the resized image (the ImageNet convention: 224 of 256).
CROP_RATIO = 0.875


def _hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        hw = (size, size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"img_size must be an int or a (height, width) pair, got {size!r}")
    if min(hw) < 1:
        raise ValueError(f"img_size must be positive, got {size!r}")
    return hw


def default_resize(img_size: int | tuple[int, int]) -> int | tuple[int, int]:
    """``floor(S / 0.875)`` for a square input, the exact ``(floor(H / 0.875), floor(W / 0.875))`` otherwise."""
    h, w = _hw(img_size)
    if h == w:
        return math.floor(h / CROP_RATIO)
    return math.floor(h / CROP_RATIO), math.floor(w / CROP_RATIO)


def _check_resize(resize: int | tuple[int, int], img_size: tuple[int, int]) -> int | tuple[int, int]:
    h, w = img_size
    if isinstance(resize, int) and not isinstance(resize, bool):
        if resize < max(h, w):
            raise ValueError(
                f"resize={resize} (short side) is smaller than the crop {h}x{w}: use resize >= {max(h, w)}"
            )
        return resize
    rh, rw = _hw(resize)
    if rh < h or rw < w:
        raise ValueError(f"resize={resize} is smaller than the crop {h}x{w}")
    return rh, rw


def _data_config(model_or_data_config: Any) -> dict[str, Any]:
    cfg = getattr(model_or_data_config, "data_config", model_or_data_config)
    if not isinstance(cfg, Mapping):
        raise TypeError(
            "build_transforms needs an fgvc model (with .data_config) or a data config dict with 'mean' and "
            f"'std', got {type(model_or_data_config).__name__}"
        )
    missing = [k for k in ("mean", "std") if k not in cfg]
    if missing:
        raise ValueError(f"the data config lacks {missing}: it needs 'mean' and 'std' (3 values each)")
    return dict(cfg)


def build_transforms(
    model_or_data_config: Any,
    train: bool,
    img_size: int | tuple[int, int] | None = None,
    resize: int | tuple[int, int] | None = None,
    trivial_augment: bool = False,
    random_erasing: float = 0.0,
    auto_augment: bool = False,
    random_erasing_scale: tuple[float, float] = (0.02, 0.33),
) -> v2.Compose:
    """The train or test transform for a model (or a data config dict: mean, std, interpolation, input_size).

    Args:
        img_size: the model input, int or (height, width); default: the config's ``input_size``.
        resize: short side (int) or exact (height, width) before cropping; default ``default_resize``.
        trivial_augment: add TrivialAugmentWide (train only).
        random_erasing: probability of RandomErasing on the normalized tensor (train only; 0 = off).
        auto_augment: add torchvision's AutoAugment with its ImageNet policy (train only; TransFG's Cars).
        random_erasing_scale: (min, max) erased share of the image (torchvision's default (0.02, 0.33);
            GLSim's official code uses (0.02, 0.4)).
    """
    cfg = _data_config(model_or_data_config)
    if img_size is None:
        if "input_size" not in cfg:
            raise ValueError("img_size is needed: the data config has no 'input_size'")
        img_size = tuple(cfg["input_size"][-2:])
    size = _hw(img_size)
    resize = _check_resize(default_resize(size) if resize is None else resize, size)
    if not 0.0 <= random_erasing <= 1.0:
        raise ValueError(f"random_erasing is a probability in [0, 1], got {random_erasing!r}")
    scale = tuple(float(v) for v in random_erasing_scale)
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(
            f"random_erasing_scale must be (min, max) with 0 < min <= max <= 1, got {random_erasing_scale!r}"
        )
    interpolation = InterpolationMode(str(cfg.get("interpolation", "bicubic")))
    steps: list[Any] = [v2.Resize(resize, interpolation=interpolation, antialias=True)]
    if train:
        steps += [v2.RandomCrop(size), v2.RandomHorizontalFlip()]
        if auto_augment:
            steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))  # torchvision's defaults
        if trivial_augment:
            steps.append(v2.TrivialAugmentWide())
    else:
        steps.append(v2.CenterCrop(size))
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=[float(m) for m in cfg["mean"]], std=[float(s) for s in cfg["std"]]),
    ]
    if train and random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, scale=scale, value=0))
    steps.append(v2.ToPureTensor())
    return v2.Compose(steps)


def resized_size(width: int, height: int, resize: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) after ``v2.Resize(resize)``: the same arithmetic as torchvision (short side, truncated)."""
    if isinstance(resize, int):
        short, long = min(width, height), max(width, height)
        new_long = int(resize * long / short)
        return (resize, new_long) if width <= height else (new_long, resize)
    return int(resize[1]), int(resize[0])


def eval_geometry(img_size: int | tuple[int, int], resize: int | tuple[int, int] | None = None) -> v2.Compose:
    """The test transform's geometry without the pixels: ``v2.Resize(resize)``, then ``v2.CenterCrop(img_size)``.

    ``build_transforms(train=False)`` resizes and crops images with these two steps; ``map_boxes`` and
    ``fgvc.data.parts.map_parts`` move annotations (``tv_tensors.BoundingBoxes``, ``tv_tensors.KeyPoints``)
    through the same two, so every annotation follows one library path. ``img_size``, ``resize``: as given to
    ``build_transforms`` (same defaults and checks).
    """
    size = _hw(img_size)
    resize = _check_resize(default_resize(size) if resize is None else resize, size)
    return v2.Compose([v2.Resize(resize), v2.CenterCrop(size)])


def map_boxes(
    boxes_pixels: torch.Tensor,
    image_sizes: torch.Tensor,
    img_size: int | tuple[int, int],
    resize: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Original-pixel boxes -> fractions of the test-transform output (resize, then center crop).

    Each box goes through ``eval_geometry`` as a ``tv_tensors.BoundingBoxes`` (XYXY, the image's canvas):
    torchvision scales it, shifts it by the crop's corner and clamps it to the crop.

    Args:
        boxes_pixels: (N, 4) (x0, y0, x1, y1) in original pixels, exclusive ends.
        image_sizes: (N, 2) original (width, height).
        img_size, resize: as given to ``build_transforms`` (same defaults).
    Returns:
        (N, 4) float32 fractions of the crop's width / height, clipped to the crop (a box the crop cuts off
        entirely has zero area).
    """
    crop_h, crop_w = _hw(img_size)
    geometry = eval_geometry(img_size, resize)
    boxes = torch.as_tensor(boxes_pixels, dtype=torch.float64).reshape(-1, 4)
    sizes = torch.as_tensor(image_sizes).reshape(-1, 2).tolist()
    if len(sizes) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(sizes)} image sizes")
    out = torch.empty_like(boxes)
    for k, (w, h) in enumerate(sizes):
        box = tv_tensors.BoundingBoxes(boxes[k : k + 1], format="XYXY", canvas_size=(int(h), int(w)))  # (1, 4)
        out[k] = geometry(box).as_subclass(torch.Tensor)[0]  # crop pixels, clamped to [0, crop_w] x [0, crop_h]
    return (out / torch.tensor([crop_w, crop_h, crop_w, crop_h], dtype=torch.float64)).float()


class EvalView(FGVCDataset):
    """A test dataset's items, ``classes``, ``display_names`` and ``targets`` as they are, for wrappers that add
    annotations mapped into the model's input frame (``EvalBoxes``, ``fgvc.data.parts.EvalParts``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.classes = classes_of(dataset)
        self.display_names = display_names_of(dataset)
        self.targets = targets_of(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[i]


class EvalBoxes(EvalView):
    """A test dataset whose ``input_boxes`` (also its ``boxes``) are fractions of the model input after the
    test transform.

    ``fgvc.evaluate(model, EvalBoxes(test_data, img_size=448))`` then measures crop IoU in the frame the
    model sees. ``test_data`` needs ``boxes_pixels`` and ``image_sizes`` (every fgvc image dataset has them)
    and should use ``build_transforms(model, train=False, img_size, resize)`` with the same sizes. Items,
    ``classes`` and ``targets`` are the wrapped dataset's.
    """

    def __init__(
        self, dataset: Dataset, img_size: int | tuple[int, int], resize: int | tuple[int, int] | None = None
    ) -> None:
        boxes = boxes_pixels_of(dataset)
        if boxes is None:
            raise ValueError(f"{type(dataset).__name__} has no boxes_pixels (this dataset has no boxes)")
        super().__init__(dataset)
        self.boxes = map_boxes(boxes, dataset.image_sizes, img_size, resize)
        self.input_boxes = self.boxes  # what fgvc.evaluate reads: fractions of the model input
