"""``map_boxes`` moves boxes through torchvision's v2 geometry (``tv_tensors.BoundingBoxes`` through
``eval_geometry``: ``v2.Resize`` then ``v2.CenterCrop``), the same path ``map_parts`` moves part locations
through, and gives the numbers the hand-written arithmetic it replaced gave (written out below as the
specification) to float32 rounding. v2 computes the resized size and the crop's corner by the same formulas
and clamps to the crop as that arithmetic did (the same boxes end at 0 or 1); it scales by the ratio new / old
size rounded to float32 (a relative error under 2**-24 of the resized coordinate), so fractions move by at most
a few float32 steps: 7.2e-7 at worst on 2000 random boxes per size, on 26 x 670 px images whose resized long
side exceeds 15000 px, 6e-8 at ordinary aspect ratios."""

import math

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fgvc.data import map_boxes
from fgvc.data.parts import map_parts
from fgvc.data.transforms import _check_resize, _hw, default_resize, eval_geometry


def old_map_boxes(boxes_pixels, image_sizes, img_size, resize=None):
    """The arithmetic map_boxes used before v2: torchvision's resize size (short side, truncated), CenterCrop's
    rounded corner, scale, shift, clip to the crop; float64, then float32."""
    size = _hw(img_size)
    resize = _check_resize(default_resize(size) if resize is None else resize, size)
    crop_h, crop_w = size
    boxes = torch.as_tensor(boxes_pixels, dtype=torch.float64).reshape(-1, 4)
    out = torch.empty_like(boxes)
    for k, (w, h) in enumerate(torch.as_tensor(image_sizes).reshape(-1, 2).tolist()):
        if isinstance(resize, int):
            short, long = min(w, h), max(w, h)
            new_long = int(resize * long / short)
            new_w, new_h = (resize, new_long) if w <= h else (new_long, resize)
        else:
            new_h, new_w = resize
        top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
        sx, sy = new_w / w, new_h / h
        x0, y0, x1, y1 = boxes[k].tolist()
        out[k, 0] = min(max(x0 * sx - left, 0.0), crop_w) / crop_w
        out[k, 2] = min(max(x1 * sx - left, 0.0), crop_w) / crop_w
        out[k, 1] = min(max(y0 * sy - top, 0.0), crop_h) / crop_h
        out[k, 3] = min(max(y1 * sy - top, 0.0), crop_h) / crop_h
    return out.float()


def random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n image sizes (20..900 px a side, any aspect) and a box each, partly outside the crop or the image."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(20, 900, (n, 2), generator=g)  # (N, 2) width, height
    corners = torch.rand(n, 2, 2, generator=g) * 1.2 - 0.1  # (N, 2 corners, x y) fractions, some outside
    xy = corners * sizes[:, None, :]
    boxes = torch.cat([xy.min(1).values, xy.max(1).values], dim=1)  # (N, 4) x0, y0, x1, y1 pixels
    return boxes.round(), sizes


@pytest.mark.parametrize("img_size, resize", [(56, 64), (224, None), (448, 600), ((32, 48), None),
                                              ((30, 40), 45), ((64, 96), (80, 100))])
def test_map_boxes_gives_the_old_arithmetics_numbers_to_float32_rounding(img_size, resize):
    boxes, sizes = random_boxes(300, seed=sum(_hw(img_size)))
    new, old = map_boxes(boxes, sizes, img_size, resize), old_map_boxes(boxes, sizes, img_size, resize)
    assert new.dtype == old.dtype == torch.float32 and new.shape == old.shape == (300, 4)
    torch.testing.assert_close(new, old, atol=1e-6, rtol=0)  # a few float32 steps at most
    assert torch.equal(new == 0, old == 0) and torch.equal(new == 1, old == 1)  # the same boxes clamped


def test_boxes_are_moved_by_torchvisions_boundingboxes_through_the_test_geometry(monkeypatch):
    seen = []
    original = v2.CenterCrop.transform

    def spy(self, inpt, params):
        seen.append(type(inpt))
        return original(self, inpt, params)

    monkeypatch.setattr(v2.CenterCrop, "transform", spy)
    map_boxes(torch.tensor([[1.0, 2, 30, 40]]), torch.tensor([[50, 60]]), img_size=32)
    assert seen == [tv_tensors.BoundingBoxes]


def test_the_geometry_is_the_test_transforms_resize_then_center_crop():
    geometry = eval_geometry((32, 48))
    resize, crop = geometry.transforms
    assert isinstance(resize, v2.Resize) and list(resize.size) == [36, 54]  # default_resize((32, 48))
    assert isinstance(crop, v2.CenterCrop) and list(crop.size) == [32, 48]
    assert list(eval_geometry(224).transforms[0].size) == [math.floor(224 / 0.875)]
    with pytest.raises(ValueError, match="smaller than the crop"):
        eval_geometry(64, resize=60)


def test_a_boxs_corners_mapped_as_parts_land_on_the_mapped_box():
    boxes, sizes = random_boxes(50, seed=3)
    boxes = torch.minimum(boxes.clamp_min(0), sizes.repeat(1, 2) - 1)  # inside the image
    corners = torch.stack([boxes[:, :2], boxes[:, 2:]], dim=1)  # (N, 2, 2) top-left, bottom-right
    parts = torch.cat([corners, torch.ones(50, 2, 1)], dim=-1)  # (N, 2, 3) x, y, visible
    mapped_parts = map_parts(parts, sizes, img_size=64, resize=80)
    mapped_boxes = map_boxes(boxes, sizes, img_size=64, resize=80)
    inside = mapped_parts[..., 2] > 0  # corners the crop keeps: the box is not clamped there
    as_boxes = mapped_boxes.reshape(50, 2, 2)  # (N, 2 corners, x y)
    torch.testing.assert_close(mapped_parts[..., :2][inside], as_boxes[inside], atol=1e-6, rtol=0)
