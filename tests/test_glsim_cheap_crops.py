"""GLSim's cheaper crop passes (``crop_size``, ``crop_mode="tokens"``) and the backbone path they use.

Each is checked against a hand-written reference: timm's own dynamic-size ViT for the resampled position
embeddings, per-image unpadded sequences for the padded token crop. The default stays the official pass.
"""

import pytest
import timm
import torch
from conftest import TINY
from torch import nn

import fgvc
from fgvc.backbones.vit import ViTBackbone
from fgvc.methods.base import resolve_method
from fgvc.methods.glsim import box_token_sequence, crop_and_resize, resolve_crop_size


def glsim(**options):
    """A tiny GLSim on 64 x 96 inputs (4 x 6 patches of 16 px) with a random head (it starts at zero)."""
    model = fgvc.create_model("glsim", num_classes=5, img_size=(64, 96), **TINY, **options)
    nn.init.normal_(model.head.weight)
    return model


# ------------------------------------------------------------------------------ backbone at another size
@pytest.mark.parametrize(
    "name, kwargs",
    [("test_vit", dict(depth=2)), ("vit_small_patch16_224", dict(depth=1, reg_tokens=2, no_embed_class=True))],
)
def test_encoding_at_another_size_equals_timms_dynamic_size_model(name, kwargs):
    """``backbone(x, img_size=s)`` = timm's ``dynamic_img_size`` model with the same weights (bicubic resampling
    of the position embeddings; prefix tokens kept; CLS, registers and no_embed_class alike)."""
    bb = ViTBackbone(name, img_size=64, **kwargs).eval()
    ref = timm.create_model(name, num_classes=0, img_size=64, dynamic_img_size=True, **kwargs).eval()
    ref.load_state_dict(bb.vit.state_dict())
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        tokens = bb(x, img_size=(32, 48)).tokens
        assert tokens.shape == (2, bb.num_prefix_tokens + 2 * 3, bb.embed_dim)
        assert torch.allclose(tokens, ref.forward_features(x), atol=1e-5)
        same = torch.randn(2, 3, 64, 64)
        assert torch.equal(bb(same, img_size=64).tokens, bb(same).tokens)  # the model's own size: unchanged


def test_another_size_must_be_asked_for_and_must_tile():
    bb = ViTBackbone("test_vit", img_size=64, depth=1)
    with pytest.raises(ValueError, match="built for 64x64 inputs, got 32x32"):
        bb(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"asked for 32x48 inputs \(img_size\), got 32x32"):
        bb(torch.randn(1, 3, 32, 32), img_size=(32, 48))
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        bb(torch.randn(1, 3, 40, 40), img_size=40)


def test_resampled_position_embedding_trains_the_original_and_is_cached_only_without_gradients():
    bb = ViTBackbone("test_vit", img_size=64, depth=1)
    tokens = bb(torch.randn(2, 3, 32, 32), img_size=32).tokens  # (2, 1 + 4, D)
    (tokens * torch.randn_like(tokens)).sum().backward()  # (a plain sum of LayerNorm outputs is constant)
    assert bb.vit.pos_embed.grad is not None and bb.vit.pos_embed.grad.abs().sum() > 0
    assert bb.pos_embed_at(32) is not bb.pos_embed_at(32)  # with gradients: computed each call
    with torch.no_grad():
        cached = bb.pos_embed_at(32)
        assert bb.pos_embed_at(32) is cached
        bb.vit.pos_embed.add_(1.0)  # an optimizer step changes the parameter: the cache is dropped
        assert bb.pos_embed_at(32) is not cached
        assert torch.allclose(bb.pos_embed_at(32), cached + 1.0, atol=1e-5)  # bicubic keeps constants


# ------------------------------------------------------------------------------ crop_size
@pytest.mark.parametrize(
    "crop_size, expected",
    [(None, (64, 96)), (0.5, (32, 48)), (0.3, (16, 32)), (0.01, (16, 16)), (32, (32, 32)), ((48, 16), (48, 16))],
)
def test_crop_size_resolves_to_whole_patches(crop_size, expected):
    assert resolve_crop_size(crop_size, (64, 96), (16, 16)) == expected


@pytest.mark.parametrize("crop_size, match", [(1.5, r"in \(0, 1\]"), (40, "multiple of the patch"), (0, "multiple")])
def test_bad_crop_sizes_are_refused(crop_size, match):
    with pytest.raises(ValueError, match=match):
        glsim(crop_size=crop_size)


def test_half_size_crop_equals_a_hand_written_pass():
    """crop_size=0.5: the box resized to 32 x 48 (a quarter of the tokens), encoded by timm's dynamic-size model
    with the same weights, aggregated as the official crop CLS."""
    model = glsim(crop_size=0.5).eval()
    bb = model.backbone
    ref = timm.create_model("test_vit", num_classes=0, img_size=(64, 96), dynamic_img_size=True, depth=2).eval()
    ref.load_state_dict(bb.vit.state_dict())
    x = torch.randn(3, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        tokens = ref.forward_features(x)  # (B, 1 + 24, D)
        boxes = bb.patch_grid.top_box(out.selection_map, 8, include_last=False)
        crops = crop_and_resize(x, boxes, (32, 48))  # (B, 3, 32, 48)
        crop_tokens = ref.forward_features(crops)
        assert crop_tokens.shape[1] == 1 + 2 * 3
        z = model.aggregator_norm(model.aggregator(torch.stack([tokens[:, 0], crop_tokens[:, 0]], 1)))[:, 0]
        assert torch.equal(out.boxes, boxes)
        assert torch.allclose(out.logits, model.head(z), atol=1e-5)


def test_default_crop_pass_is_the_official_one():
    """No option given: the crop is resized to the input size and encoded at it (as before the options)."""
    model = glsim().eval()
    assert model.crop_size == (64, 96) and model.crop_mode == "resize"
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        crop_cls = model.backbone(crop_and_resize(x, out.boxes)).tokens[:, 0]
        z = model.aggregator_norm(model.aggregator(torch.stack([model.backbone(x).tokens[:, 0], crop_cls], 1)))
        assert torch.allclose(out.logits, model.head(z[:, 0]), atol=1e-5)


def test_learned_crop_position_embedding_starts_as_the_resampled_one_and_trains_at_the_new_layers_rate():
    """crop_pos_embed="learned": the smaller pass gets its own position embedding, a new parameter that starts as
    the resampled one (same outputs at the start) and is left out of the pretrained parameters (full rate)."""
    resampled = glsim(crop_size=0.5).eval()
    learned = glsim(crop_size=0.5, crop_pos_embed="learned").eval()
    learned.load_state_dict(resampled.state_dict(), strict=False)
    with torch.no_grad():
        learned.crop_pos_embed.copy_(resampled.backbone.pos_embed_at((32, 48)))
    assert learned.crop_pos_embed.shape == (1, 1 + 2 * 3, resampled.backbone.embed_dim)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(learned(x).logits, resampled(x).logits, atol=1e-6)
    assert all(p is not learned.crop_pos_embed for p in learned.pretrained_parameters())
    learned.train()
    learned.loss(learned(x), torch.tensor([0, 1])).backward()
    assert learned.crop_pos_embed.grad.abs().sum() > 0
    method, options = resolve_method("glsim_top2_half_pe")  # the compact box, half size, its own embedding
    assert method == "glsim" and options["crop_pos_embed"] == "learned" and options["crop_size"] == 0.5
    with pytest.raises(ValueError, match="for a crop pass at another size"):
        glsim(crop_pos_embed="learned")  # the official full-size pass has the backbone's own
    with pytest.raises(ValueError, match="crop_pos_embed must be one of"):
        glsim(crop_size=0.5, crop_pos_embed="fixed")
    with pytest.raises(ValueError, match="pos_embed has 7 positions, too many or too few for 64x96 inputs"):
        learned.backbone.embed(x, pos_embed=learned.crop_pos_embed)  # the crop's grid, not the input's


# ------------------------------------------------------------------------------ crop_mode="tokens"
def test_box_token_sequence_by_hand():
    """Tokens numbered by position: each sequence is CLS then the box's patches in raster order, padded."""
    tokens = torch.arange(1 + 12, dtype=torch.float32).view(1, 13, 1).repeat(2, 1, 1)  # 3 x 4 grid, patch 1 px
    boxes = torch.tensor([[1, 0, 3, 2], [3, 2, 4, 3]])  # cols 1-2 x rows 0-1; col 3 x row 2
    seq, mask = box_token_sequence(tokens, boxes, 1, (3, 4), (1, 1))
    # grid index r * 4 + c, token index 1 + that
    assert seq[0, :, 0].tolist() == [0, 2, 3, 6, 7]
    assert seq[1, :2, 0].tolist() == [0, 12]
    assert mask.shape == (2, 1, 1, 5)
    assert mask[0].flatten().tolist() == [True] * 5
    assert mask[1].flatten().tolist() == [True, True, False, False, False]
    same = torch.tensor([[0, 0, 2, 1], [2, 2, 4, 3]])  # two patches each: nothing padded, no mask
    seq, mask = box_token_sequence(tokens, same, 1, (3, 4), (1, 1))
    assert mask is None and seq[:, :, 0].tolist() == [[0, 1, 2], [0, 11, 12]]


def test_token_crop_of_a_batch_equals_each_image_alone():
    """Padding and the key mask change nothing: the batch's logits equal each image's own, unpadded pass."""
    model = glsim(crop_mode="tokens").eval()
    x = torch.randn(4, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        areas = ((out.boxes[:, 2] - out.boxes[:, 0]) * (out.boxes[:, 3] - out.boxes[:, 1])).tolist()
        assert len(set(areas)) > 1  # boxes of different sizes: the batch is padded
        alone = torch.cat([model(x[i : i + 1]).logits for i in range(4)])
    assert torch.allclose(out.logits, alone, atol=1e-5)


def test_token_crop_equals_a_hand_written_pass():
    """The crop pass encodes CLS + the box's embedded patch tokens (patch embedding + their position
    embeddings), nothing resized, through the same blocks and final norm."""
    model = glsim(crop_mode="tokens").eval()
    bb = model.backbone
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        embedded = bb.vit._pos_embed(bb.vit.patch_embed(x))  # (B, 1 + 24, D), timm's own embedding
        grid = embedded[:, 1:].reshape(2, 4, 6, -1)  # (B, rows, cols, D)
        crop_cls = []
        for i, (x0, y0, x1, y1) in enumerate(out.boxes.tolist()):
            patches = grid[i, y0 // 16 : y1 // 16, x0 // 16 : x1 // 16].reshape(-1, grid.shape[-1])
            sequence = torch.cat([embedded[i, :1], patches])[None]  # (1, 1 + n, D)
            crop_cls.append(bb.vit.norm(bb.vit.blocks(sequence))[0, 0])
        z = model.aggregator(torch.stack([bb(x).tokens[:, 0], torch.stack(crop_cls)], 1))
        assert torch.allclose(out.logits, model.head(model.aggregator_norm(z)[:, 0]), atol=1e-5)


def test_token_crop_trains_and_refuses_a_crop_size():
    model = glsim(crop_mode="tokens").train()
    model.loss(model(torch.randn(3, 3, 64, 96)), torch.tensor([0, 1, 2])).backward()
    assert model.backbone.vit.patch_embed.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="crop_size is for 'resize'"):
        glsim(crop_mode="tokens", crop_size=0.5)
    with pytest.raises(ValueError, match="crop_mode must be one of"):
        glsim(crop_mode="roi")


@pytest.mark.parametrize(
    "options",
    [dict(crop_size=0.5), dict(crop_mode="tokens"), dict(crop_size=(32, 48)), dict(crop_size=0.5, crop_pos_embed="learned")],
)
def test_options_survive_a_checkpoint(options, tmp_path):
    model = glsim(**options).eval()
    path = fgvc.save_model(model, tmp_path / "m.safetensors")
    loaded = fgvc.load_model(path).eval()
    assert (loaded.crop_size, loaded.crop_mode) == (model.crop_size, model.crop_mode)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
