"""The batched crop: every box cut and resized at once, as the per-image ``F.interpolate`` loop would.

``crop_and_resize`` picks it on accelerators and while tracing / exporting / compiling; these tests call the
batched op directly (imported under the public name) and compare it with the loop.
"""

import pytest
import torch
import torch.nn.functional as F

from fgvc.layers.geometry import crop_and_resize_batched as crop_and_resize


def crop_loop(images, boxes, size=None):
    """The reference: each image's slice resized on its own, bilinear with ``align_corners=True``."""
    size = tuple(images.shape[-2:]) if size is None else tuple(size)
    crops = [
        F.interpolate(img[None, :, y0:y1, x0:x1], size=size, mode="bilinear", align_corners=True)
        for img, (x0, y0, x1, y1) in zip(images, boxes.long().tolist(), strict=True)
    ]
    return torch.cat(crops, dim=0)


def random_boxes(n, h, w, generator):
    """(n, 4) boxes (x0, y0, x1, y1) of at least one pixel anywhere on an (h, w) image, ends exclusive."""
    start = torch.stack([torch.randint(0, w, (n,), generator=generator),
                         torch.randint(0, h, (n,), generator=generator)], dim=1)  # (n, 2) x0, y0
    room = torch.tensor([w, h]) - start  # (n, 2) pixels from the start to the edge, >= 1
    span = 1 + (torch.rand(n, 2, generator=generator) * room).long().clamp(max=room - 1)
    return torch.cat([start, start + span], dim=1)


def special_boxes(h, w):
    """Boxes one pixel wide / high / both, the full image, and boxes touching each edge and corner."""
    return torch.tensor([
        [0, 0, w, h], [0, 0, 1, 1], [w - 1, h - 1, w, h], [0, 0, 1, h], [0, 0, w, 1], [w - 1, 0, w, h],
        [0, h - 1, w, h], [w // 2, 0, w // 2 + 1, h], [0, h // 2, w, h // 2 + 1], [1, 1, w, h], [0, 0, w - 1, h - 1],
        [w // 3, h // 3, w, h], [0, 0, w // 2 + 1, h // 3 + 1],
    ])


IMAGE_SIZES = [(1, 1), (1, 9), (7, 1), (16, 16), (23, 41), (64, 37)]
CROP_SIZES = [None, (1, 1), (1, 5), (6, 1), (2, 2), (8, 8), (17, 31), (64, 64), (96, 50)]


@pytest.mark.parametrize("img_size", IMAGE_SIZES, ids=str)
def test_float32_crops_equal_the_per_image_interpolate_loop(img_size):
    """Random and edge boxes, up and down, non-square: within 1e-5 of the loop (float32)."""
    g = torch.Generator().manual_seed(IMAGE_SIZES.index(img_size))
    h, w = img_size
    boxes = torch.cat([special_boxes(h, w).clamp(min=0), random_boxes(40, h, w, g)])
    boxes = torch.minimum(boxes, torch.tensor([w - 1, h - 1, w, h]))  # tiny images: keep boxes on the image
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    images = torch.randn(len(boxes), 3, h, w, generator=g) * 3
    for size in CROP_SIZES:
        torch.testing.assert_close(crop_and_resize(images, boxes, size), crop_loop(images, boxes, size),
                                   atol=1e-5, rtol=0)


def test_float64_crops_equal_the_loop_within_1e_10():
    """Float64 images: within 1e-10 of the loop, for many random boxes and sizes."""
    g = torch.Generator().manual_seed(1)
    for h, w in [(31, 45), (448, 448)]:
        boxes = torch.cat([special_boxes(h, w), random_boxes(16, h, w, g)])
        images = torch.randn(len(boxes), 2, h, w, generator=g, dtype=torch.float64)
        for size in [(1, 1), (3, 7), (h, w), (2 * h + 1, w // 2)]:
            torch.testing.assert_close(crop_and_resize(images, boxes, size), crop_loop(images, boxes, size),
                                       atol=1e-10, rtol=0)


def test_a_batch_of_mixed_boxes_crops_each_image_with_its_own_box():
    """Each crop of a mixed batch equals that image cropped alone."""
    g = torch.Generator().manual_seed(2)
    images = torch.randn(6, 3, 40, 56, generator=g)
    boxes = torch.tensor([[0, 0, 56, 40], [3, 5, 4, 6], [10, 0, 50, 40], [0, 39, 56, 40], [55, 0, 56, 40],
                          [8, 16, 40, 32]])
    crops = crop_and_resize(images, boxes, (24, 24))
    for i in range(len(images)):
        torch.testing.assert_close(crops[i : i + 1], crop_and_resize(images[i : i + 1], boxes[i : i + 1], (24, 24)),
                                   atol=0, rtol=0)
        torch.testing.assert_close(crops[i : i + 1], crop_loop(images[i : i + 1], boxes[i : i + 1], (24, 24)),
                                   atol=1e-5, rtol=0)


def test_corners_and_the_whole_image_at_its_own_size_are_copied_exactly():
    """align_corners=True: a crop's corners are the box's corner pixels, and the full box is the image."""
    images = torch.randn(3, 2, 20, 30)
    boxes = torch.tensor([[0, 0, 30, 20], [4, 2, 17, 11], [29, 19, 30, 20]])
    crops = crop_and_resize(images, boxes, (9, 13))
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        assert torch.equal(crops[i, :, 0, 0], images[i, :, y0, x0])
        assert torch.equal(crops[i, :, -1, -1], images[i, :, y1 - 1, x1 - 1])
    assert torch.equal(crop_and_resize(images, boxes[:1].expand(3, 4)), images)


def test_a_single_output_pixel_is_the_boxes_first_pixel_as_interpolate_gives():
    """Size 1 along an axis samples the box's first row / column, like F.interpolate with align_corners."""
    images = torch.randn(2, 3, 10, 12)
    boxes = torch.tensor([[3, 4, 9, 10], [0, 0, 12, 10]])
    crops = crop_and_resize(images, boxes, (1, 1))
    assert torch.equal(crops[:, :, 0, 0], torch.stack([images[0, :, 4, 3], images[1, :, 0, 0]]))
    assert torch.equal(crops, crop_loop(images, boxes, (1, 1)))


def test_float_and_long_boxes_give_the_same_crops():
    """Boxes may be a float tensor of integral values (as some callers pass) or a long one."""
    images = torch.randn(2, 3, 32, 32)
    boxes = torch.tensor([[0, 8, 16, 32], [5, 5, 6, 30]])
    assert torch.equal(crop_and_resize(images, boxes.float(), (16, 16)), crop_and_resize(images, boxes, (16, 16)))


def test_size_none_is_the_images_own_size():
    """No size: each crop is resized to the input's (H, W)."""
    images = torch.randn(2, 3, 24, 40)
    boxes = torch.tensor([[0, 0, 10, 10], [20, 4, 40, 24]])
    assert crop_and_resize(images, boxes).shape == (2, 3, 24, 40)
    torch.testing.assert_close(crop_and_resize(images, boxes), crop_loop(images, boxes), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_dtype_and_device_are_kept(dtype):
    """The crops have the images' dtype and device; half precision stays close to the loop's."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        images = torch.randn(3, 3, 20, 28).to(device=device, dtype=dtype)
        boxes = torch.tensor([[0, 0, 28, 20], [2, 3, 9, 19], [27, 0, 28, 1]], device=device)
        crops = crop_and_resize(images, boxes, (12, 16))
        assert crops.dtype == dtype and crops.device == images.device
        tol = 1e-5 if dtype in (torch.float32, torch.float64) else 5e-2
        torch.testing.assert_close(crops.float(), crop_loop(images.float(), boxes, (12, 16)), atol=tol, rtol=0)


def test_boxes_on_another_device_are_moved_to_the_images():
    """CPU boxes with images elsewhere (the viz callers pass CPU boxes) work, like the old host-side slicing."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images = torch.randn(2, 3, 16, 16, device=device)
    crops = crop_and_resize(images, torch.tensor([[0, 0, 8, 8], [4, 4, 16, 16]]), (8, 8))
    assert crops.device == images.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_on_cuda():
    """On CUDA the crop runs with synchronizing calls made errors (no .tolist, no .item)."""
    images = torch.randn(4, 3, 64, 64, device="cuda")
    boxes = torch.tensor([[0, 0, 64, 64], [8, 8, 40, 24], [63, 0, 64, 64], [0, 0, 1, 1]], device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        crops = crop_and_resize(images, boxes, (32, 32))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(crops, crop_loop(images, boxes, (32, 32)), atol=1e-5, rtol=0)


def test_the_image_gets_the_loops_gradient_and_the_boxes_none():
    """Gradients reach the images as through the loop; float boxes asking for a gradient get none."""
    g = torch.Generator().manual_seed(3)
    images = torch.randn(3, 2, 18, 22, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[0, 0, 22, 18], [3, 4, 11, 9], [21, 17, 22, 18]], dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 13, 29, generator=g, dtype=torch.float64)
    a, b = images.clone().requires_grad_(), images.clone().requires_grad_()
    (crop_and_resize(a, boxes, (13, 29)) * weight).sum().backward()
    (crop_loop(b, boxes.detach(), (13, 29)) * weight).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=0)
    assert boxes.grad is None


class Crop(torch.nn.Module):
    """crop_and_resize to (20, 24) as a module, for torch.export."""

    def forward(self, images, boxes):
        return crop_and_resize(images, boxes, (20, 24))


def test_exports_with_a_free_batch_size():
    """torch.export (the ONNX exporter's front end) with a dynamic batch: exported at 2, right at 5."""
    g = torch.Generator().manual_seed(4)
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = (torch.randn(2, 3, 32, 48, generator=g), random_boxes(2, 32, 48, g))
    exported = torch.export.export(Crop(), example, dynamic_shapes=({0: batch}, {0: batch}))
    images5, boxes5 = torch.randn(5, 3, 32, 48, generator=g), random_boxes(5, 32, 48, g)
    crops = exported.module()(images5, boxes5)
    assert crops.shape == (5, 3, 20, 24)
    torch.testing.assert_close(crops, crop_loop(images5, boxes5, (20, 24)), atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")
def test_traces_without_a_per_image_loop():
    """torch.jit.trace (the legacy ONNX path) at batch 2 crops a batch of 5 right: no loop or size baked in."""
    g = torch.Generator().manual_seed(5)
    traced = torch.jit.trace(Crop(), (torch.randn(2, 3, 32, 48, generator=g), random_boxes(2, 32, 48, g)))
    images5, boxes5 = torch.randn(5, 3, 32, 48, generator=g), random_boxes(5, 32, 48, g)
    crops = traced(images5, boxes5)
    assert crops.shape == (5, 3, 20, 24)
    torch.testing.assert_close(crops, crop_loop(images5, boxes5, (20, 24)), atol=1e-5, rtol=0)
    assert "prim::Loop" not in str(traced.graph)


def test_eager_cpu_crops_stay_the_per_image_loop_bit_for_bit():
    """The default on eager CPU tensors is the loop: exactly the official ``F.upsample_bilinear`` per slice."""
    from fgvc.layers.geometry import crop_and_resize as default_crop

    g = torch.Generator().manual_seed(6)
    images = torch.randn(4, 3, 40, 36, generator=g)
    boxes = random_boxes(4, 40, 36, g)
    assert torch.equal(default_crop(images, boxes, (24, 20)), crop_loop(images, boxes, (24, 20)))


class DefaultCrop(torch.nn.Module):
    """The public ``crop_and_resize`` with its default choice, as GLSim calls it."""

    def forward(self, images, boxes):
        from fgvc.layers.geometry import crop_and_resize as default_crop

        return default_crop(images, boxes, (20, 24))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.filterwarnings("error::torch.jit.TracerWarning")
def test_the_default_switches_to_the_batched_op_while_tracing():
    """Under torch.jit.trace the default crop has no loop and no baked-in batch size: traced at 2, right at 5."""
    g = torch.Generator().manual_seed(7)
    traced = torch.jit.trace(DefaultCrop(), (torch.randn(2, 3, 32, 48, generator=g), random_boxes(2, 32, 48, g)))
    images5, boxes5 = torch.randn(5, 3, 32, 48, generator=g), random_boxes(5, 32, 48, g)
    torch.testing.assert_close(traced(images5, boxes5), crop_loop(images5, boxes5, (20, 24)), atol=1e-5, rtol=0)
    assert "prim::Loop" not in str(traced.graph)


def test_the_default_switches_to_the_batched_op_under_torch_export():
    """torch.export (the ONNX exporter's front end) of the default crop keeps the batch size free."""
    g = torch.Generator().manual_seed(8)
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = (torch.randn(2, 3, 32, 48, generator=g), random_boxes(2, 32, 48, g))
    exported = torch.export.export(DefaultCrop(), example, dynamic_shapes=({0: batch}, {0: batch}))
    images5, boxes5 = torch.randn(5, 3, 32, 48, generator=g), random_boxes(5, 32, 48, g)
    torch.testing.assert_close(exported.module()(images5, boxes5), crop_loop(images5, boxes5, (20, 24)),
                               atol=1e-5, rtol=0)


def test_an_accelerator_tensor_takes_the_batched_op():
    """Off the CPU (here the meta device, which has no host values) the default never reads the boxes."""
    from fgvc.layers.geometry import crop_and_resize as default_crop

    images = torch.empty(3, 3, 32, 32, device="meta")
    boxes = torch.empty(3, 4, dtype=torch.long, device="meta")
    assert default_crop(images, boxes, (16, 8)).shape == (3, 3, 16, 8)  # the loop's .tolist() would fail here
    with pytest.raises(Exception):  # noqa: B017 - the loop cannot run on meta tensors
        default_crop(images, boxes, (16, 8), batched=False)
