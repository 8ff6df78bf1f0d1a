"""Backbones researchers use for fine-grained work now: EVA-02 (rotary embeddings), ViTs without a CLS token
(SigLIP, ``*_gap_*``, register-only), and the plain baseline on any timm classifier (ResNet, ConvNeXt, Swin).
Tiny random models only (pretrained=False): nothing is downloaded."""

import pytest
import timm
import torch
import torch.nn.functional as F

import fgvc
from fgvc.layers.rollout import attention_rollout, rollout_map
from fgvc.methods.transfg import part_selection

EVA = dict(backbone="eva02_tiny_patch14_224", backbone_kwargs=dict(depth=2))
# a ViT without a CLS token, with 2 register tokens, pooled by the mean of the patch tokens (as *_gap_* models)
NO_CLS = dict(backbone="test_vit", backbone_kwargs=dict(depth=2, class_token=False, reg_tokens=2, global_pool="avg"))


def train_step(model, size):
    model.train()
    out = model(torch.randn(2, 3, *size))
    model.loss(out, torch.tensor([0, 1])).backward()
    return out


@pytest.mark.parametrize("method", ["vit", "glsim"])
@pytest.mark.parametrize("size", [(56, 56), (56, 42)])  # patch 14, square and not
def test_eva02_works_with_vit_and_glsim_and_matches_timms_own_forward(method, size):
    options = dict(top_k=2) if method == "glsim" else {}
    model = fgvc.create_model(method, num_classes=3, img_size=size, **EVA, **options)
    out = train_step(model, size)
    assert out.logits.shape == (2, 3) and model.backbone.patch_size == (14, 14)
    bb = model.backbone.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        enc = bb(x, return_attention=True)
        torch.testing.assert_close(enc.tokens, bb.vit.forward_features(x))  # rotary embeddings applied, as timm
        torch.testing.assert_close(bb(x).tokens, enc.tokens)
    t = 1 + (size[0] // 14) * (size[1] // 14)
    assert len(enc.attentions) == 2 and enc.attentions[0].shape[-2:] == (t, t)
    torch.testing.assert_close(enc.attentions[0].sum(-1), torch.ones(2, 3, t))


@pytest.mark.parametrize("method", ["vit", "glsim", "dcal", "transfg"])
def test_vits_without_cls_token_work_with_every_method(method):
    options = dict(top_k=2) if method == "glsim" else {}
    model = fgvc.create_model(method, num_classes=3, img_size=48, **NO_CLS, **options)
    assert not model.backbone.has_class_token and model.backbone.num_prefix_tokens == 2
    out = train_step(model, (48, 48))
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()
    model.eval()
    assert model(torch.randn(2, 3, 48, 48)).logits.shape == (2, 3)


def test_without_cls_the_global_token_is_the_mean_of_the_patch_tokens_in_glsim():
    model = fgvc.create_model("glsim", num_classes=3, img_size=48, top_k=2, **NO_CLS).eval()
    bb = model.backbone
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        tokens = bb(x).tokens  # (B, 2 registers + 9 patches, D)
        patches = tokens[:, 2:]
        torch.testing.assert_close(bb.global_token(tokens), patches.mean(1))  # registers left out
        expected = F.cosine_similarity(patches.mean(1, keepdim=True), patches, dim=-1).reshape(2, 3, 3)
        torch.testing.assert_close(model(x).selection_map, expected)
    with_cls = fgvc.create_model("glsim", num_classes=3, img_size=48, top_k=2, backbone="test_vit",
                                 backbone_kwargs=dict(depth=2))
    tokens = torch.randn(2, 10, 64)
    torch.testing.assert_close(with_cls.backbone.global_token(tokens), tokens[:, 0])  # the CLS token otherwise


def test_without_cls_dcals_rollout_and_transfgs_selection_start_from_the_mean_of_the_patch_rows():
    prefix, t = 2, 11
    maps = [torch.randn(2, 3, t, t).softmax(-1) for _ in range(3)]
    full = attention_rollout(maps)  # (B, T, T)
    mean_row = full[:, prefix:, :].mean(1)[:, prefix:]  # the mean patch token's row, over the patches
    torch.testing.assert_close(rollout_map(maps, prefix, class_token=False), mean_row)
    product = maps[-1]
    for attn in reversed(maps[:-1]):
        product = product @ attn
    expected = product[:, :, prefix:, prefix:].mean(2).argmax(-1)  # (B, heads)
    assert torch.equal(part_selection(maps, prefix, class_token=False), expected)


@pytest.mark.parametrize("backbone", ["resnet18", "convnext_atto"])
def test_plain_baseline_on_any_timm_classifier_equals_timms_model_and_trains(backbone, tmp_path):
    """The same model as timm's classifier (its own pooling and classifier), trained by fit, reloaded, evaluated."""
    from fgvc.data import synthetic_splits

    model = fgvc.create_model("vit", num_classes=3, img_size=48, backbone=backbone).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    x = torch.randn(2, 3, 48, 48)
    path, call = fgvc.export_timm(model, tmp_path / "timm.safetensors")
    plain = eval(call, {"timm": timm}).eval()  # timm's own classifier with fgvc's weights
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x).logits)
    if backbone == "resnet18":
        return  # the same loop below for one CNN is enough (resnet18's checkpoints are 45 MB)
    data = synthetic_splits(num_classes=3, image_size=48, train=4, val=2, test=2)
    history = fgvc.fit(model, data["train"], data["val"], epochs=1, batch_size=2, out_dir=tmp_path / "run",
                       progress=False)
    assert history.best_epoch == 1 and len(history.epochs) == 1
    loaded = fgvc.load_model(tmp_path / "run" / "best.safetensors")
    assert type(loaded.backbone.vit).__name__ == type(model.backbone.vit).__name__
    assert fgvc.evaluate(loaded, data["test"]).num_samples == 2


def test_swin_gets_its_input_size_and_methods_that_need_a_vit_say_so():
    swin = fgvc.create_model("vit", num_classes=3, img_size=64, backbone="swin_tiny_patch4_window7_224",
                             backbone_kwargs=dict(depths=(1, 1), num_heads=(1, 2), embed_dim=16, window_size=4))
    assert swin(torch.randn(1, 3, 64, 64)).logits.shape == (1, 3)
    for method in ("glsim", "dcal", "transfg"):
        with pytest.raises(ValueError, match=f"method '{method}' needs a ViT backbone.*resnet18 is a "
                                             "timm.models.resnet model: use method 'vit'"):
            fgvc.create_model(method, num_classes=3, backbone="resnet18")
