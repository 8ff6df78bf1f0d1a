"""The models: shapes, gradients, weight sharing, attention maps, errors (tiny timm ViT, CPU)."""

import pytest
import timm
import torch
from conftest import TINY

import fgvc


@pytest.mark.parametrize("method", ["vit", "glsim"])
@pytest.mark.parametrize("img_size", [32, (48, 80)])
def test_output_shapes_and_gradients_reach_every_parameter(method, img_size):
    options = dict(top_k=3) if method == "glsim" else {}
    model = fgvc.create_model(method, num_classes=7, img_size=img_size, **options, **TINY)
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.randn(3, 3, h, w)
    out = model(x)
    assert out.logits.shape == (3, 7)
    if method == "glsim":
        assert out.boxes.shape == (3, 4)
        assert out.selection_map.shape == (3, h // 16, w // 16)
        assert (out.boxes[:, 2] > out.boxes[:, 0]).all() and (out.boxes[:, 3] > out.boxes[:, 1]).all()
        assert (out.boxes[:, 2] <= w).all() and (out.boxes[:, 3] <= h).all()
    # new heads start at zero (GLSim's official init, and vit / dcal): perturb them so gradients reach the backbone
    for name, p in model.named_parameters():
        if name.endswith("head.weight"):
            torch.nn.init.normal_(p, std=0.1)
    out = model(x)
    model.loss(out, torch.tensor([0, 3, 6])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_glsim_output_matches_official_selection_on_its_own_tokens():
    model = fgvc.create_model("glsim", num_classes=4, img_size=64, top_k=3, **TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    tokens = model.backbone(x).tokens
    sim = torch.nn.functional.cosine_similarity(tokens[:, :1], tokens[:, 1:], dim=-1).view(2, 4, 4)
    assert torch.allclose(out.selection_map, sim, atol=1e-6)
    assert torch.equal(out.boxes, model.backbone.patch_grid.top_box(sim, 3, include_last=False))


def test_glsim_passes_share_one_encoder():
    glsim = fgvc.create_model("glsim", num_classes=5, img_size=32, top_k=2, **TINY)
    vit = fgvc.create_model("vit", num_classes=5, img_size=32, **TINY)
    calls = []
    glsim.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    glsim.train()(torch.randn(2, 3, 32, 32))
    assert len(calls) == 2  # global image, then the crop, through the very same module
    # extra parameters: only the aggregator block, its norm and the head (no second encoder)
    extra = sum(p.numel() for n, p in glsim.named_parameters() if not n.startswith("backbone."))
    assert sum(p.numel() for p in glsim.backbone.parameters()) == sum(p.numel() for p in vit.backbone.parameters())
    dim = glsim.backbone.embed_dim
    assert extra == sum(p.numel() for p in glsim.aggregator.parameters()) + 2 * dim + (dim + 1) * 5


def test_glsim_can_skip_the_crop_pass_at_inference():
    model = fgvc.create_model("glsim", num_classes=5, img_size=32, top_k=2, crop_at_inference=False, **TINY).eval()
    calls = []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(1))
    out = model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 1 and out.logits.shape == (2, 5)
    model.train()(torch.randn(2, 3, 32, 32))
    assert len(calls) == 3  # training always uses the crop


def test_attention_maps_on_demand_match_an_explicit_computation():
    bb = fgvc.ViTBackbone("test_vit", img_size=(32, 48), depth=2)
    x = torch.randn(2, 3, 32, 48)
    out = bb(x, return_attention=True, return_hidden_states=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 7, 7)
    assert torch.allclose(out.attentions[0].sum(-1), torch.ones(2, 2, 7))
    # explicit: layer 0's attention from its own input
    attn = bb.blocks[0].attn
    t = bb.blocks[0].norm1(bb.embed(x))
    q, k, _ = attn.qkv(t).reshape(2, 7, 3, 2, 32).permute(2, 0, 3, 1, 4)
    ref = (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)
    assert torch.allclose(out.attentions[0], ref, atol=1e-5)
    # recording leaves fused attention on and the tokens unchanged
    assert all(b.attn.fused_attn == timm.layers.use_fused_attn() for b in bb.blocks)
    assert torch.allclose(bb(x).tokens, out.tokens, atol=1e-5)
    assert torch.allclose(bb.norm(out.hidden_states[-1]), out.tokens)


def test_deit_distilled_has_two_prefix_tokens_and_works_with_glsim():
    model = fgvc.create_model(
        "glsim", backbone="deit_tiny_distilled_patch16_224", num_classes=3, img_size=48,
        backbone_kwargs=dict(depth=1),
    )
    assert model.backbone.num_prefix_tokens == 2
    out = model(torch.randn(1, 3, 48, 48))
    assert out.selection_map.shape == (1, 3, 3)


def test_bad_sizes_and_options_are_named():
    with pytest.raises(ValueError, match="not divisible by the patch size 16x16"):
        fgvc.create_model("vit", num_classes=3, img_size=100, **TINY)
    with pytest.raises(ValueError, match="top_k=20 must be between 1 and the 2x2=4 patches"):
        fgvc.create_model("glsim", num_classes=3, img_size=32, top_k=20, **TINY)
    model = fgvc.create_model("vit", num_classes=3, img_size=32, **TINY)
    with pytest.raises(ValueError, match="built for 32x32 inputs, got 48x48"):
        model(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"unknown model 'transfgg' \(did you mean 'transfg'\?\); available: ") as error:
        fgvc.create_model("transfgg", num_classes=3)
    available = str(error.value).split("available: ")[1]
    assert set(available.split(", ")) == set(fgvc.list_models())  # names every registered model
    with pytest.raises(ValueError, match="num_classes"):
        fgvc.create_model("vit", num_classes=0, **TINY)


def test_unknown_method_options_are_refused_with_the_near_miss_and_the_allowed_list():
    with pytest.raises(ValueError, match=r"unknown option 'topk' for method 'glsim' \(did you mean 'top_k'\?\)"):
        fgvc.create_model("glsim", num_classes=3, img_size=32, topk=4, **TINY)
    with pytest.raises(ValueError, match="allowed: .*backbone_kwargs.*pretrained.*top_k"):
        fgvc.create_model("glsim", num_classes=3, img_size=32, topk=4, **TINY)
    assert "top_k" in fgvc.model_options("glsim") and "top_k" not in fgvc.model_options("vit")
    assert {"checkpoint_path", "patch_stride", "drop_path_rate", "img_size"} <= set(fgvc.model_options("vit"))


def test_list_models():
    assert {"vit", "glsim"} <= set(fgvc.list_models())


def test_create_model_takes_a_variant_name_as_the_method_with_its_options():
    """``create_model("glsim_glance", ...)`` is ``create_model("glsim", glance_size=0.5, ...)``; options override."""
    small = dict(backbone="vit_tiny_patch16_224", backbone_kwargs={"depth": 1}, num_classes=3, img_size=64)
    model = fgvc.create_model("glsim_half_pe", **small)
    assert model.config["options"]["crop_pos_embed"] == "learned" and tuple(model.crop_size) == (32, 32)
    assert tuple(fgvc.create_model("glsim_half_pe", crop_size=0.75, **small).crop_size) == (48, 48)
    with pytest.raises(fgvc.methods.base.UnknownMethodError, match="unknown model 'glsim_nope'"):
        fgvc.create_model("glsim_nope", **small)
