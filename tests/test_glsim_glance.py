"""GLSim's glance (``glance_size``): the global pass on the input downscaled, the crop cut from the full input.

The model takes the full-resolution input; the global pass encodes it at ``glance_size`` (position
embeddings resampled to the glance grid); the similarity and top-k box come from the glance grid; the box is
mapped to input pixels and the crop is cut from the full-resolution input and encoded at ``crop_size``.
Without ``glance_size`` GLSim is the official two full passes, bitwise.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from torch import nn

import fgvc
from fgvc.methods.base import resolve_method
from fgvc.methods.glsim import (
    crop_and_resize,
    glance_box_to_input,
    glance_map_to_input_grid,
    patch_similarity,
    resolve_glance_size,
)
from fgvc.viz import attention_maps, plot_maps


def glsim(img_size=128, **options):
    """A tiny GLSim (16 px patches, 2 blocks) with a random head (it starts at zero)."""
    options.setdefault("top_k", 4)
    model = fgvc.create_model("glsim", num_classes=5, img_size=img_size, **TINY, **options)
    nn.init.normal_(model.head.weight)
    return model


GLANCE = dict(glance_size=64, crop_size=64, crop_pos_embed="learned")  # 128 px input: glance 4 x 4 patches


class PatchEmbedCalls:
    """Records the input (B, 3, h, w) and the patch grid (rows, cols) of every call of the patch convolution:
    one per encoder pass (global, crop)."""

    def __init__(self, model):
        self.inputs, self.grids = [], []
        conv = model.backbone.vit.patch_embed.proj
        self.handles = [
            conv.register_forward_pre_hook(lambda _m, args: self.inputs.append(args[0].detach().clone())),
            conv.register_forward_hook(lambda _m, _a, out: self.grids.append(tuple(out.shape[-2:]))),
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------------------ the default is unchanged
def test_without_glance_the_forward_is_the_official_two_full_passes_bitwise():
    """glance_size=None: the global pass on the input itself, selection on its grid, crop at the input size,
    exactly as written out here from the backbone's pieces (and the option is not even recorded)."""
    model = glsim(glance_size=None).eval()
    same_seed = glsim().eval()
    same_seed.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 128, 128)
    bb = model.backbone
    with torch.no_grad():
        out = model(x)
        tokens = bb(x).tokens  # (2, 1 + 64, D)
        _, patches = bb.patch_grid.split(tokens)
        sim = patch_similarity(bb.global_token(tokens), patches, bb.grid_size)
        boxes = bb.patch_grid.top_box(sim, 4, include_last=False)
        crop = bb.global_token(bb(crop_and_resize(x, boxes, (128, 128))).tokens)
        z = model.aggregator_norm(model.aggregator(torch.stack([bb.global_token(tokens), crop], dim=1)))[:, 0]
        assert torch.equal(out.logits, model.head(z))
        assert torch.equal(out.boxes, boxes) and torch.equal(out.selection_map, sim)
        assert out.extras == {}
        assert torch.equal(same_seed(x).logits, out.logits)
    assert "glance_size" not in model.config["options"] and model.glance_size is None


@pytest.mark.parametrize("no_glance", [128, 1.0, (128, 128)])
def test_a_glance_at_the_input_size_is_no_glance(no_glance):
    plain, model = glsim().eval(), glsim(glance_size=no_glance).eval()
    model.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert model.glance_size is None and torch.equal(model(x).logits, plain(x).logits)


# ------------------------------------------------------------------------------ the passes and their grids
def test_the_global_pass_runs_on_the_glance_grid_and_the_crop_pass_on_the_crop_grid():
    model = glsim(glance_size=64, crop_size=(48, 32)).eval()  # 128 px input: 8 x 8 patches
    with PatchEmbedCalls(model) as calls, torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    assert calls.grids == [(4, 4), (3, 2)]  # glance 64 px, crop 48 x 32 px; never the input's 8 x 8
    assert [tuple(i.shape[-2:]) for i in calls.inputs] == [(64, 64), (48, 32)]
    assert out.extras["glance_similarity"].shape == (2, 4, 4)
    assert out.selection_map.shape == (2, 8, 8)  # on the input's patch grid, as every map


def test_the_glance_is_an_antialiased_bilinear_downscale_of_the_input():
    model = glsim(**GLANCE).eval()
    x = torch.randn(2, 3, 128, 128)
    with PatchEmbedCalls(model) as calls, torch.no_grad():
        model(x)
    expected = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(calls.inputs[0], expected)


def test_the_glance_pass_uses_the_position_embeddings_resampled_to_its_grid():
    model = glsim(**GLANCE).eval()
    bb = model.backbone
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        small = model.glance(x)
        expected = bb.encode(bb.embed(small, pos_embed=bb.pos_embed_at(64)))
        assert torch.equal(model.global_pass(x), expected)


# ------------------------------------------------------------------------------ the box
@pytest.mark.parametrize(
    "glance_size, img_size, box, expected",
    [
        ((64, 64), (128, 128), [16, 32, 48, 64], [32, 64, 96, 128]),  # a whole factor: exactly its image
        # 48 -> 112 wide, 32 -> 80 high: start floor(16 * 112 / 48) = 37, ends ceil, so the box covers it whole
        ((32, 48), (80, 112), [16, 0, 48, 32], [37, 0, 112, 80]),
        ((32, 48), (80, 112), [0, 16, 17, 17], [0, 40, 40, 43]),  # 17 * 112 / 48 = 39.7 -> 40; 42.5 -> 43
        ((32, 48), (80, 112), [0, 0, 64, 40], [0, 0, 112, 80]),  # ends past the glance: clipped to the input
        ((32, 48), (80, 112), [48, 32, 48, 32], [111, 79, 112, 80]),  # empty at the far edge: one pixel inside
    ],
)
def test_a_glance_box_maps_to_input_pixels_floor_ceil_clipped_at_least_one_pixel(glance_size, img_size, box,
                                                                                    expected):
    mapped = glance_box_to_input(torch.tensor([box]), glance_size, img_size)
    assert mapped.dtype == torch.int64 and mapped.tolist() == [expected]


def test_the_box_is_the_glance_grids_top_k_mapped_to_the_input():
    model = glsim(**GLANCE, inclusive_box=True).eval()
    x = torch.randn(3, 3, 128, 128)
    with torch.no_grad():
        tokens = model.global_pass(x)
        similarity, boxes = model.select(tokens)
    grid = model.global_grid  # 4 x 4 patches of 16 px on the 64 px glance
    assert grid.grid_size == (4, 4) and grid.img_size == (64, 64)
    glance_boxes = grid.top_box(similarity, 4, include_last=True)
    assert torch.equal(boxes, glance_boxes * 2)  # a whole factor: the glance box at twice its pixels


def test_the_glance_similarity_is_shown_on_the_input_grid_cell_under_each_patch_centre():
    sim = torch.arange(4.0).reshape(1, 2, 2)
    assert glance_map_to_input_grid(sim, (4, 4)).tolist() == [
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    ]
    three = torch.arange(3.0).reshape(1, 3, 1)  # 3 glance rows under 4 input rows: centres 0.375, 1.125, ...
    assert glance_map_to_input_grid(three, (4, 1)).flatten().tolist() == [0, 1, 1, 2]


# ------------------------------------------------------------------------------ the crop comes from the full input
def test_the_crop_is_cut_from_the_full_resolution_input():
    """A one-pixel checkerboard: the glance averages it away, the crop (wherever its box) keeps it."""
    model = glsim(**GLANCE).eval()
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    x = ((yy + xx) % 2 * 2 - 1).float().expand(2, 3, 128, 128).contiguous()  # +-1, one pixel apart
    with PatchEmbedCalls(model) as calls, torch.no_grad():
        out = model(x)
    glance, crop = calls.inputs
    assert glance.abs().max() < 0.05  # the downscaled image has (but for its edges' rounding) no checkerboard
    assert torch.equal(crop, crop_and_resize(x, out.boxes, (64, 64)))  # the input's pixels in the mapped box
    assert crop.abs().max() > 0.5  # not the glance's


# ------------------------------------------------------------------------------ training, saving, maps
def test_a_training_step_reaches_the_learned_crop_embedding_and_the_backbones():
    model = glsim(**GLANCE).train()
    out = model(torch.randn(4, 3, 128, 128))
    loss = model.loss(out, torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss)
    loss.backward()
    assert model.crop_pos_embed.grad is not None and model.crop_pos_embed.grad.abs().sum() > 0
    assert model.backbone.vit.pos_embed.grad.abs().sum() > 0  # through the glance grid's resampling
    assert "crop_pos_embed" in model.no_weight_decay()


def test_saving_and_loading_keeps_the_glance(tmp_path):
    model = glsim(glance_size=(64, 96), crop_size=0.5, crop_pos_embed="learned", img_size=(128, 160)).eval()
    path = fgvc.save_model(model, tmp_path / "glance.safetensors")
    loaded = fgvc.load_model(path).eval()
    assert loaded.glance_size == (64, 96) and loaded.crop_size == (64, 80)
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test_the_maps_place_the_glance_similarity_over_the_whole_image_and_the_box_in_input_pixels():
    model = glsim(**GLANCE).eval()
    images = torch.randn(2, 3, 128, 128)
    maps = attention_maps(model, images)
    assert maps.get("similarity").shape == (2, *model.backbone.grid_size)
    assert torch.equal(maps.get("similarity"),
                       glance_map_to_input_grid(maps.output.extras["glance_similarity"], (8, 8)))
    fig = plot_maps(model, images, kinds=["similarity"], maps=maps, pyplot=False)
    panel = fig.axes[1]  # image, similarity, crop
    assert panel.images[-1].get_extent() == [-0.5, 127.5, 127.5, -0.5]  # the map spans the 128 px image
    (x0, y0, x1, y1) = maps.output.boxes[0].tolist()
    assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128


# ------------------------------------------------------------------------------ variants and refusals
def test_the_glance_variants():
    assert resolve_method("glsim_glance") == (
        "glsim", dict(glance_size=0.5, crop_size=0.5, crop_pos_embed="learned"))
    top2 = resolve_method("glsim_glance_top2")[1]
    assert {k: top2[k] for k in ("top_k", "inclusive_box")} == resolve_method("glsim_top2")[1]
    model = fgvc.create_model("glsim", num_classes=5, img_size=128, **TINY,
                              **resolve_method("glsim_glance")[1])
    assert model.glance_size == (64, 64) and model.crop_size == (64, 64) and model.crop_pos_embed is not None


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(glance_size=256), "glance_size 256x256 is larger than the 128x128 input"),
        (dict(glance_size=(64, 144)), "larger than the 128x128 input"),
        (dict(glance_size=40), "glance_size 40x40 must be a positive multiple of the patch stride 16x16"),
        (dict(glance_size=1.5), r"fractional glance_size must be in \(0, 1\]"),
        (dict(glance_size=64, crop_mode="tokens"), "glance_size is for 'resize'"),
        (dict(glance_size=32, top_k=8), "top_k=8 must be between 1 and the 2x2=4 patches at glance_size 32x32"),
    ],
)
def test_bad_glances_are_refused_in_one_line(options, match):
    with pytest.raises(ValueError, match=match) as error:
        glsim(**options)
    assert "\n" not in str(error.value)


def test_resolve_glance_size_rounds_fractions_to_whole_patches():
    assert resolve_glance_size(0.5, (448, 448), (16, 16)) == (224, 224)
    assert resolve_glance_size(0.3, (64, 96), (16, 16)) == (16, 32)
    assert resolve_glance_size(None, (64, 96), (16, 16)) is None
