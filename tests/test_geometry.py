"""The patch grid: one place where maps over the patches become pixel boxes, points, crops and extents."""

import pytest
import torch

import fgvc
from fgvc.engine.evaluate import pointing_game
from fgvc.layers.geometry import PatchGrid, crop_and_resize
from fgvc.viz import grid_extent, map_box

TINY = dict(backbone="test_vit", backbone_kwargs=dict(depth=2))


def one_hot(rows, cols, cells):
    """A (1, rows, cols) map whose highest values are exactly at ``cells`` (row, col), in that order."""
    heat = torch.zeros(1, rows, cols)
    for i, (r, c) in enumerate(cells):
        heat[0, r, c] = 10.0 - 0.1 * i
    return heat


def test_a_box_covers_the_selected_patches_or_ends_where_the_last_ones_start():
    grid = PatchGrid(4, 6, (8, 8), img_size=(32, 48))  # 4 x 6 patches of 8 px
    heat = one_hot(4, 6, [(1, 1), (2, 3)])
    assert grid.top_box(heat, 2).tolist() == [[8, 8, 32, 24]]  # rows 1-2, cols 1-3, whole
    assert grid.top_box(heat, 2, include_last=False).tolist() == [[8, 8, 24, 16]]  # GLSim's official end
    assert grid.top_box(heat, 1, include_last=False).tolist() == [[8, 8, 16, 16]]  # at least one patch
    corner = one_hot(4, 6, [(3, 5)])
    assert grid.top_box(corner, 1).tolist() == [[40, 24, 48, 32]]  # clipped to the input
    with pytest.raises(ValueError, match="top_k=25"):
        grid.top_box(heat, 25)


def test_overlapping_patches_are_placed_by_their_stride():
    grid = PatchGrid(3, 5, (16, 16), stride=(8, 8), img_size=(32, 48))
    heat = one_hot(3, 5, [(1, 0), (1, 2)])
    assert grid.top_box(heat, 2).tolist() == [[0, 8, 32, 24]]  # starts 0 and 16 px, 16 px patches
    x, y = grid.peak_centres(heat)
    assert (x.item(), y.item()) == (8.0, 16.0)  # cell (1, 0): centre at stride * index + patch / 2
    assert grid.extent() == (3.5, 43.5, 27.5, 3.5)  # each cell an 8 px square around its centre
    assert PatchGrid(4, 6, (8, 8), img_size=(32, 48)).extent(shown_size=(64, 96)) == (-0.5, 95.5, 63.5, -0.5)


def test_cells_inside_a_box_are_the_cells_the_box_was_made_of():
    grid = PatchGrid(4, 6, (8, 8), img_size=(32, 48))
    box = grid.top_box(one_hot(4, 6, [(1, 1), (2, 3)]), 2)
    inside = grid.cells_inside(box)[0]
    assert inside.nonzero().tolist() == [[r, c] for r in (1, 2) for c in (1, 2, 3)]
    assert torch.equal(grid.coverage(box)[0] == 1, inside)  # wholly covered; the others not at all
    assert grid.coverage(torch.tensor([[4, 0, 8, 8]]))[0, 0, 0] == 0.5  # half of the first patch
    with pytest.raises(ValueError, match="non-overlapping"):
        PatchGrid(3, 5, (16, 16), stride=(8, 8)).cells_inside(box)


def test_the_modules_that_map_cells_to_pixels_all_agree_with_the_grid():
    heat = torch.rand(3, 4, 6)
    grid = PatchGrid(4, 6, (8, 8), img_size=(32, 48))
    assert torch.equal(map_box(heat, 5, (32, 48), (8, 8)), grid.top_box(heat, 5))
    assert torch.equal(map_box(heat, 99, (32, 48), (8, 8)), grid.top_box(heat, 24))  # k clipped to the grid
    x, y = grid.peak_centres(heat)
    boxes = torch.stack([x - 1, y - 1, x + 1, y + 1], dim=-1)  # a 2 px box around each peak
    assert pointing_game(heat, boxes, (8, 8)).all()
    assert grid_extent((4, 6), (32, 48), (8, 8)) == grid.extent()
    assert grid_extent((4, 6), (32, 48)) == PatchGrid.tiling((4, 6), (32, 48)).extent()


def test_crop_and_resize_cuts_the_box_and_resizes_it():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    boxes = torch.tensor([[0, 0, 8, 8], [2, 4, 6, 8]])
    crops = crop_and_resize(images, boxes, (4, 4))
    assert crops.shape == (2, 3, 4, 4)
    assert torch.equal(crops[1, :, 0, 0], images[1, :, 4, 2]) and torch.equal(crops[1, :, -1, -1], images[1, :, 7, 5])
    assert torch.equal(crop_and_resize(images, boxes[:1].expand(2, 4)), images)  # the whole image, same size


def test_the_backbone_names_the_cls_token_and_the_patch_tokens():
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY).eval()
    bb = model.backbone
    with torch.no_grad():
        enc = bb(torch.randn(2, 3, 32, 32))
    assert torch.equal(bb.global_token(enc.tokens), enc.tokens[:, 0])
    prefix, patches = bb.patch_grid.split(enc.tokens)
    assert torch.equal(prefix, enc.tokens[:, :1]) and torch.equal(patches, enc.tokens[:, 1:])
    assert patches.shape[1] == bb.patch_grid.num_patches
    with pytest.raises(ValueError, match="patch tokens"):
        bb.patch_grid.split(enc.tokens[:, :-1])
    assert bb.patch_grid == PatchGrid(*bb.grid_size, bb.patch_size, bb.patch_stride, bb.img_size, 1)
    registers = fgvc.create_model("glsim", num_classes=3, img_size=48, top_k=2, backbone="test_vit",
                                  backbone_kwargs=dict(depth=2, class_token=False, reg_tokens=2, global_pool="avg"))
    with torch.no_grad():
        enc = registers.backbone(torch.randn(2, 3, 48, 48))  # 2 registers + 9 patches
    prefix, patches = registers.backbone.patch_grid.split(enc.tokens)
    assert prefix.shape[1] == 2 and torch.equal(patches, enc.tokens[:, 2:])
    torch.testing.assert_close(registers.backbone.global_token(enc.tokens), patches.mean(1))  # no CLS: the mean
