"""Which tensors weight decay shrinks (timm's rule, as timm's ViT and DeiT), and how position embeddings are
resampled to another grid (``pos_embed_interpolation``: the official GLSim / TransFG ``scipy.ndimage.zoom``)."""

import numpy as np
import pytest
import timm
import torch
from conftest import TINY
from safetensors.torch import save_file
from scipy import ndimage
from timm.layers import resample_abs_pos_embed
from timm.optim import create_optimizer_v2

import fgvc
from fgvc.backbones.vit import POS_EMBED_INTERPOLATIONS, resample_pos_embed


def undecayed_matrices(model, **optimizer):
    """Names of the parameters with 2 or more dims that AdamW with weight decay 0.05 leaves undecayed."""
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05, **optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert set(decay) == set(names.values())  # every parameter is in one group
    return {n for n, p in model.named_parameters() if p.ndim > 1 and decay[n] == 0.0}


# ------------------------------------------------------------------------------------------- weight decay
@pytest.mark.parametrize("method", ["vit", "glsim", "dcal", "transfg"])
def test_adamw_does_not_decay_the_position_embedding_or_the_class_token(method):
    """Beyond 1-D parameters, exactly the backbone's position embedding and class token are left undecayed."""
    options = dict(top_k=2) if method == "glsim" else {}
    model = fgvc.create_model(method, num_classes=3, img_size=32, **TINY, **options)
    assert undecayed_matrices(model) == {"backbone.vit.pos_embed", "backbone.vit.cls_token"}


def test_a_methods_own_position_embedding_and_distillation_or_register_tokens_are_not_decayed():
    """GLSim's learned crop position embedding, DeiT's distillation token and register tokens follow the rule."""
    glsim = fgvc.create_model("glsim", num_classes=3, img_size=64, top_k=2, crop_size=0.5, crop_pos_embed="learned",
                              **TINY)
    assert undecayed_matrices(glsim) == {"backbone.vit.pos_embed", "backbone.vit.cls_token", "crop_pos_embed"}
    deit = fgvc.create_model("dcal", backbone="deit_tiny_distilled_patch16_224", num_classes=3, img_size=32,
                             backbone_kwargs=dict(depth=2))
    assert undecayed_matrices(deit) == {"backbone.vit.pos_embed", "backbone.vit.cls_token", "backbone.vit.dist_token"}
    registers = fgvc.create_model("vit", num_classes=3, img_size=32, backbone="test_vit",
                                  backbone_kwargs=dict(depth=2, reg_tokens=2))
    assert undecayed_matrices(registers) == {"backbone.vit.pos_embed", "backbone.vit.cls_token",
                                             "backbone.vit.reg_token"}


def test_fit_with_adamw_leaves_the_position_embedding_undecayed_and_decays_the_weights(monkeypatch):
    """``fgvc.fit``'s optimizer reads ``model.no_weight_decay()``, with and without a backbone learning-rate scale."""
    from test_train_evaluate import Blobs

    built = []
    original = fgvc.engine.train.create_optimizer_v2

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(fgvc.engine.train, "create_optimizer_v2", spy)
    for scale in (1.0, 0.1):
        model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
        fgvc.fit(model, Blobs(n=8), epochs=1, batch_size=8, optimizer="adamw", weight_decay=0.05,
                 backbone_lr_scale=scale, progress=False)
        decay_of = {id(p): g["weight_decay"] for g in built[-1].param_groups for p in g["params"]}
        vit = model.backbone.vit
        assert decay_of[id(vit.pos_embed)] == 0.0 and decay_of[id(vit.cls_token)] == 0.0
        assert decay_of[id(vit.blocks[0].attn.qkv.weight)] == 0.05 and decay_of[id(model.head.weight)] == 0.05


def test_a_training_state_saved_with_the_position_embedding_decayed_resumes_with_that_grouping(tmp_path, monkeypatch):
    """A run whose saved optimizer groups decay ``pos_embed`` (saved before the rule) resumes, keeping its groups."""
    from test_train_evaluate import Blobs

    fit = dict(batch_size=8, optimizer="adamw", weight_decay=0.05, out_dir=tmp_path, progress=False)
    torch.manual_seed(0)
    model = fgvc.create_model("vit", num_classes=4, img_size=32, **TINY)
    with monkeypatch.context() as m:  # the grouping of states saved before no_weight_decay() was honoured
        m.setattr(type(model), "no_weight_decay", lambda self: set())
        fgvc.fit(model, Blobs(n=16), epochs=1, **fit)
    built = []
    original = fgvc.engine.train.create_optimizer_v2
    monkeypatch.setattr(fgvc.engine.train, "create_optimizer_v2", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    with pytest.warns(UserWarning, match="schedule is recomputed"):  # a longer run than the saved one
        history = fgvc.fit(model, Blobs(n=16), epochs=2, resume=True, **fit)
    assert len(history.epochs) == 2
    opt = built[-1]
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay_of[id(model.backbone.vit.pos_embed)] == 0.05  # as the run started


# ------------------------------------------------------------------------------------ pos_embed resampling
@pytest.mark.parametrize("old,new", [((4, 4), (7, 7)), ((5, 5), (3, 3)), ((14, 14), (37, 37)), ((3, 4), (7, 5))])
def test_scipy_zoom_resampling_equals_scipy_ndimage_zoom_order_1(old, new):
    """``"scipy_zoom"`` computes exactly ``scipy.ndimage.zoom(grid, (new / old, new / old, 1), order=1)``."""
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(1, 1 + old[0] * old[1], 6, generator=g, dtype=torch.float64)
    zoomed = ndimage.zoom(pos[0, 1:].numpy().reshape(*old, 6), (new[0] / old[0], new[1] / old[1], 1), order=1)
    assert zoomed.shape == (*new, 6)
    ours = resample_pos_embed(pos, new, old, 1, "scipy_zoom")
    assert ours.shape == (1, 1 + new[0] * new[1], 6) and torch.equal(ours[:, :1], pos[:, :1])  # CLS kept
    np.testing.assert_allclose(ours[0, 1:].numpy().reshape(*new, 6), zoomed, rtol=0, atol=1e-12)
    bicubic = resample_pos_embed(pos.float(), new, old, 1, "bicubic")  # a different rule, told apart
    assert not np.allclose(bicubic[0, 1:].double().numpy().reshape(*new, 6), zoomed, atol=1e-2)


def source_weights(tmp_path):
    """A "pretrained" timm ViT at 32 px (a 2 x 2 grid), saved as a timm state dict."""
    source = timm.create_model("test_vit", img_size=32, depth=2, num_classes=1000)
    for p in source.parameters():
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return source, path


def zoom_of(pos_embed, new):
    """What the official code computes: the CLS embedding, then the grid zoomed linearly (square grids)."""
    n = pos_embed.shape[1] - 1
    side = int(round(n ** 0.5))
    grid = pos_embed[0, 1:].detach().double().numpy().reshape(side, side, -1)
    zoomed = ndimage.zoom(grid, (new[0] / side, new[1] / side, 1), order=1)
    return torch.cat([pos_embed[:, :1].detach().double(), torch.from_numpy(zoomed).reshape(1, -1, grid.shape[-1])], 1)


@pytest.mark.parametrize("route", ["checkpoint_path", "pretrained", "overlapping"])
def test_pretrained_position_embeddings_are_resampled_by_the_option(tmp_path, route):
    """A timm state-dict file, timm's own pretrained loading and TransFG's overlapping grid all resample with
    ``pos_embed_interpolation``; unset, they keep timm's bicubic rule."""
    source, path = source_weights(tmp_path)
    method, grid, common = "vit", (5, 4), dict(img_size=(80, 64))
    if route == "checkpoint_path":
        common.update(checkpoint_path=path, backbone_kwargs=dict(depth=2))
    elif route == "pretrained":  # timm's loader, reading the file the config names (no download)
        common.update(pretrained=True, backbone_kwargs=dict(depth=2, pretrained_cfg_overlay=dict(file=str(path))))
    else:  # TransFG's overlapping 16 px patches with stride 12: the grid (64 - 16) // 12 + 1 = 5 a side
        method, grid = "transfg", (5, 5)
        common.update(img_size=64, patch_stride=12, checkpoint_path=path, backbone_kwargs=dict(depth=2))
    zoomed = fgvc.create_model(method, backbone="test_vit", num_classes=3, pos_embed_interpolation="scipy_zoom",
                               **common)
    assert zoomed.backbone.grid_size == grid
    torch.testing.assert_close(zoomed.backbone.vit.pos_embed.detach().double(), zoom_of(source.pos_embed, grid))
    plain = fgvc.create_model(method, backbone="test_vit", num_classes=3, **common)  # unset: timm's rule
    bicubic = resample_abs_pos_embed(source.pos_embed.detach(), new_size=list(grid), num_prefix_tokens=1)
    torch.testing.assert_close(plain.backbone.vit.pos_embed.detach(), bicubic)
    assert "pos_embed_interpolation" not in plain.config


def test_googles_npz_is_resampled_by_the_option_and_keeps_timms_bilinear_reader_unset(tmp_path):
    """Google's ``.npz`` (what both official codes start from): the option resamples from the file's grid."""
    from test_convert import write_google_npz

    reference = timm.create_model("test_vit", num_classes=0, img_size=32, depth=2).eval()
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.2)
    npz = write_google_npz(tmp_path / "ViT-test.npz", reference)
    common = dict(backbone="test_vit", num_classes=3, img_size=80, checkpoint_path=npz, backbone_kwargs=dict(depth=2))
    zoomed = fgvc.create_model("vit", pos_embed_interpolation="scipy_zoom", **common)
    torch.testing.assert_close(zoomed.backbone.vit.pos_embed.detach().double(), zoom_of(reference.pos_embed, (5, 5)))
    plain = fgvc.create_model("vit", **common)
    timm_reader = resample_abs_pos_embed(reference.pos_embed.detach(), new_size=[5, 5], num_prefix_tokens=1,
                                         interpolation="bilinear", antialias=False)
    torch.testing.assert_close(plain.backbone.vit.pos_embed.detach(), timm_reader)


def test_the_option_is_saved_with_the_model_and_resamples_glsims_smaller_crop_pass(tmp_path):
    """Saved with the checkpoint, so a reloaded GLSim resamples its ``crop_size`` pass the same way."""
    model = fgvc.create_model("glsim", num_classes=3, img_size=64, top_k=2, crop_size=0.5,
                              pos_embed_interpolation="scipy_zoom", **TINY).eval()
    torch.nn.init.normal_(model.backbone.vit.pos_embed, std=0.5)
    with torch.no_grad():
        half = model.backbone.pos_embed_at(32)  # the 4 x 4 grid -> 2 x 2
    torch.testing.assert_close(half.double(), zoom_of(model.backbone.vit.pos_embed, (2, 2)))
    path = fgvc.save_model(model, tmp_path / "m.safetensors")
    assert fgvc.read_metadata(path)["pos_embed_interpolation"] == "scipy_zoom"
    loaded = fgvc.load_model(path)
    assert loaded.backbone.pos_embed_interpolation == "scipy_zoom"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
        torch.testing.assert_close(loaded.backbone.pos_embed_at(32), half)


def test_unknown_interpolations_and_backbones_without_position_embeddings_are_named():
    """A misspelt value lists the choices; a timm classifier without ViT position embeddings refuses the option."""
    with pytest.raises(ValueError, match="pos_embed_interpolation must be one of bicubic, bilinear, scipy_zoom"):
        fgvc.create_model("vit", num_classes=3, img_size=32, pos_embed_interpolation="linear", **TINY)
    with pytest.raises(ValueError, match="pos_embed_interpolation .* needs a ViT backbone; resnet18 is not one"):
        fgvc.create_model("vit", num_classes=3, img_size=32, backbone="resnet18", pos_embed_interpolation="bilinear")
    assert POS_EMBED_INTERPOLATIONS == ("bicubic", "bilinear", "scipy_zoom")
    assert "pos_embed_interpolation" in fgvc.model_options("transfg")


def test_a_recipe_sets_the_official_rule_and_a_misspelt_override_is_refused_when_read():
    """The GLSim and TransFG recipes resample as their official code; DCAL's leaves timm's rule; ``--set`` checks."""
    from fgvc.studies.recipe import load_recipe

    assert load_recipe("glsim_cub_448")["model"]["pos_embed_interpolation"] == "scipy_zoom"
    assert load_recipe("transfg_cub_448")["model"]["pos_embed_interpolation"] == "scipy_zoom"
    assert "pos_embed_interpolation" not in load_recipe("dcal_cub_448")["model"]
    with pytest.raises(ValueError, match="model.pos_embed_interpolation must be one of bicubic, bilinear, scipy_zoom"):
        load_recipe("transfg_cub_448", overrides=["model.pos_embed_interpolation=linear"])
