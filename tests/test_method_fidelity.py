"""Details of GLSim, DCAL and TransFG that the papers' official code fixes and no other test pins.

GLSim: the aggregator's composition, the crop handed to the second pass, top-k 8, the zero head, the
constant drop-path and the Xavier start of the aggregator. DCAL: the GLCA norm's start, the loss with one
image, the loss weights outside weight decay, the optional CLS query. TransFG: the part block's attention
re-initialisation, the official dropout and the evaluation loss.
"""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import TINY
from timm.layers import DropPath
from torch import nn
from torch.utils.data import Dataset

import fgvc
import fgvc.engine.train
from fgvc.layers.blocks import block_forward
from fgvc.methods.glsim import crop_and_resize
from fgvc.methods.transfg import contrastive_loss


def tiny(depth):
    return dict(backbone="test_vit", backbone_kwargs=dict(depth=depth))


# ------------------------------------------------------------------------------------------------ GLSim
def test_glsim_aggregates_both_cls_tokens_and_classifies_token_0_after_the_norm():
    model = fgvc.create_model("glsim", num_classes=4, img_size=32, top_k=2, **TINY).eval()
    nn.init.normal_(model.head.weight)  # the head starts at zero: give it weights so the logits say something
    nn.init.normal_(model.head.bias)
    passes, aggregated = [], []
    model.backbone.register_forward_hook(lambda m, inp, out: passes.append((inp[0], out.tokens)))
    model.aggregator.register_forward_hook(lambda m, inp, out: aggregated.append(inp[0]))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        (x1, tokens), (crops, crop_tokens) = passes
        assert torch.equal(x1, x)
        # the second pass sees exactly the crop of the boxes, resized to the input size
        official = model.backbone.patch_grid.top_box(out.selection_map, 2, include_last=False)
        assert torch.equal(out.boxes, official)
        assert torch.equal(crops, crop_and_resize(x, out.boxes))
        # aggregator input: [global CLS, crop CLS]; output token 0, then the norm, then the head
        (seq,) = aggregated
        assert seq.shape == (3, 2, model.backbone.embed_dim)
        assert torch.equal(seq[:, 0], tokens[:, 0]) and torch.equal(seq[:, 1], crop_tokens[:, 0])
        z = model.aggregator_norm(model.aggregator(seq))[:, 0]
        assert torch.allclose(out.embedding, z, atol=1e-6)
        assert torch.allclose(out.logits, model.head(z), atol=1e-5)
        assert not torch.allclose(out.logits, model.head(model.aggregator(seq)[:, 0]), atol=1e-3)  # norm matters


def test_glsim_defaults_top_k_8_and_a_zero_head():
    model = fgvc.create_model("glsim", num_classes=5, img_size=64, **TINY).eval()  # 4 x 4 patches
    assert model.top_k == 8 and model.config["options"]["top_k"] == 8
    assert not model.head.weight.any() and not model.head.bias.any()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert torch.equal(out.boxes, model.backbone.patch_grid.top_box(out.selection_map, 8, include_last=False))
    assert not out.logits.any()  # a zero head: every class starts at the same score


def test_glsim_drop_path_is_constant_in_every_block_and_the_aggregator():
    model = fgvc.create_model("glsim", num_classes=3, img_size=32, top_k=2, drop_path_rate=0.1, **tiny(3))
    for block in [*model.backbone.blocks, model.aggregator]:
        for module in (block.drop_path1, block.drop_path2):
            assert isinstance(module, DropPath) and module.drop_prob == pytest.approx(0.1)
    timm_rule = fgvc.create_model(
        "glsim", num_classes=3, img_size=32, top_k=2, drop_path_rate=0.1, drop_path_schedule="linear", **tiny(3)
    )
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in timm_rule.backbone.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1])  # timm: 0 -> rate, and none in the aggregator
    assert isinstance(timm_rule.aggregator.drop_path1, nn.Identity)
    with pytest.raises(ValueError, match="drop_path_schedule"):
        fgvc.create_model("glsim", num_classes=3, img_size=32, drop_path_schedule="cosine", **TINY)


def test_glsim_aggregator_starts_with_xavier_weights_and_tiny_biases():
    model = fgvc.create_model("glsim", num_classes=3, img_size=32, top_k=2, **TINY)
    dim = model.backbone.embed_dim
    agg = model.aggregator
    # q, k, v each an official D x D Xavier matrix (timm fuses them into one 3D x D layer)
    for w in agg.attn.qkv.weight.split(dim):
        bound = math.sqrt(6 / (dim + dim))
        assert 0.8 * bound < w.abs().max() <= bound
    for layer in (agg.attn.proj, agg.mlp.fc1, agg.mlp.fc2):
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))
        assert 0.8 * bound < layer.weight.abs().max() <= bound
    for layer in (agg.attn.qkv, agg.attn.proj, agg.mlp.fc1, agg.mlp.fc2):
        assert 0 < layer.bias.abs().max() < 1e-4  # N(0, 1e-6)
    assert torch.equal(agg.norm1.weight, torch.ones(dim)) and not agg.norm1.bias.any()


# ------------------------------------------------------------------------------------------------ DCAL
def test_glca_norm_starts_as_a_copy_of_the_final_norm(tmp_path):
    source = timm.create_model("test_vit", img_size=32, depth=2, num_classes=0)
    with torch.no_grad():
        source.norm.weight.uniform_(0.5, 1.5)
        source.norm.bias.normal_()
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    model = fgvc.create_model("dcal", num_classes=3, img_size=32, backbone="test_vit", checkpoint_path=path,
                              backbone_kwargs=dict(depth=2))
    final, glca = model.backbone.norm, model.glca_norm
    assert torch.equal(final.weight, source.norm.weight) and torch.equal(final.bias, source.norm.bias)
    assert torch.equal(glca.weight, final.weight) and torch.equal(glca.bias, final.bias)
    assert glca.eps == final.eps
    assert glca.weight is not final.weight  # a copy: its own parameters, trained apart
    with torch.no_grad():
        glca.weight.add_(1.0)
    assert not torch.equal(glca.weight, final.weight)


def test_dcal_loss_with_a_batch_of_one_has_no_pwca_term():
    model = fgvc.create_model("dcal", num_classes=4, img_size=32, **TINY).train()
    with torch.no_grad():
        model.loss_weights.copy_(torch.tensor([0.2, -0.1, 0.5]))
    x, y = torch.randn(1, 3, 32, 32), torch.tensor([2])
    out = model(x)
    assert "pwca_logits" not in out.extras  # one image has no distractor: PWCA does not run
    loss = model.loss(out, y)
    w = model.loss_weights.detach()
    ce_sa = F.cross_entropy(out.extras["sa_logits"], y).detach()
    ce_glca = F.cross_entropy(out.extras["glca_logits"], y).detach()
    expected = 0.5 * (torch.exp(-w[0]) * ce_sa + w[0]) + 0.5 * (torch.exp(-w[1]) * ce_glca + w[1])
    assert torch.isfinite(loss) and torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert model.loss_weights.grad[2] == 0 and (model.loss_weights.grad[:2] != 0).all()


class Noise(Dataset):
    def __init__(self, size, n=8):
        self.images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
        self.targets = [i % 3 for i in range(n)]
        self.classes = ["a", "b", "c"]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def test_fit_keeps_dcal_loss_weights_out_of_weight_decay(monkeypatch):
    built = []
    original = fgvc.engine.train.create_optimizer_v2

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(fgvc.engine.train, "create_optimizer_v2", spy)
    model = fgvc.create_model("dcal", num_classes=3, img_size=32, **TINY)
    fgvc.fit(model, Noise(32), epochs=1, batch_size=4, optimizer="adamw", weight_decay=0.05, progress=False)
    (opt,) = built
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decay_of[id(model.loss_weights)] == 0.0  # uncertainty weights are not shrunk towards 0
    assert decay_of[id(model.glca_head.weight)] == 0.05 and decay_of[id(model.head.weight)] == 0.05


@pytest.mark.parametrize("cls_token", [False, True])
def test_glca_feature_is_the_query_mean_or_the_cls_query(cls_token):
    model = fgvc.create_model("dcal", num_classes=3, img_size=32, glca_ratio=0.5, glca_cls_token=cls_token,
                              **TINY).eval()
    assert model.config["options"]["glca_cls_token"] is cls_token
    model.return_glca_attention = True
    x = torch.randn(2, 3, 32, 32)
    bb = model.backbone
    with torch.no_grad():
        out = model(x)
        glca_input = bb.blocks[0](bb.embed(x))  # GLCA runs beside the last of the 2 blocks
        queries = out.extras["glca_queries"] + bb.num_prefix_tokens  # (B, R): the local queries only
        assert queries.shape == (2, 2)
        if cls_token:
            queries = torch.cat([torch.zeros_like(queries[:, :1]), queries], dim=1)  # CLS first
        g = model.glca_norm(block_forward(model.glca, glca_input, query_index=queries)[0])
        expected = g[:, 0] if cls_token else g.mean(dim=1)
    dim = bb.embed_dim
    assert torch.allclose(out.embedding[:, dim:], expected, atol=1e-5)
    assert out.extras["glca_attention"].shape[2] == 2  # rows of the R local queries, either way


def test_glca_cls_token_is_off_by_default():
    model = fgvc.create_model("dcal", num_classes=3, img_size=32, **TINY)
    assert model.glca_cls_token is False and model.config["options"]["glca_cls_token"] is False


# ------------------------------------------------------------------------------------------------ TransFG
def test_transfg_part_block_attention_is_reinitialised_like_torch_linear():
    torch.manual_seed(0)
    vit = fgvc.create_model("vit", num_classes=3, img_size=32, **tiny(3))
    torch.manual_seed(0)
    model = fgvc.create_model("transfg", num_classes=3, img_size=32, **tiny(3))
    attn, ref = model.part_block.attn, vit.backbone.blocks[-1].attn
    dim = model.backbone.embed_dim
    bound = 1 / math.sqrt(dim)  # nn.Linear's default init (the official q, k, v, out are plain Linear(D, D))
    for layer, before in ((attn.qkv, ref.qkv), (attn.proj, ref.proj)):
        assert not torch.equal(layer.weight, before.weight)
        assert 0.8 * bound < layer.weight.abs().max() <= bound
        assert 0.5 * bound < layer.bias.abs().max() <= bound
    # the first L-1 blocks keep their weights
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, vit.backbone.blocks[0].attn.qkv.weight)


def test_transfg_evaluation_loss_is_cross_entropy_alone():
    model = fgvc.create_model("transfg", num_classes=3, img_size=32, **TINY)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 2])
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert torch.allclose(model.loss(out, y), F.cross_entropy(out.logits, y))
    model.train()
    out = model(x)
    expected = F.cross_entropy(out.logits, y) + contrastive_loss(out.extras["features"], y)
    assert torch.allclose(model.loss(out, y), expected)


def test_transfg_dropout_on_embeddings_and_mlps_only():
    model = fgvc.create_model("transfg", num_classes=3, img_size=32, **tiny(3))
    vit = model.backbone.vit
    assert model.config["options"]["dropout"] == 0.1 and vit.pos_drop.p == 0.1
    for block in model.backbone.blocks:  # the part block included
        assert block.mlp.drop1.p == 0.1 and block.mlp.drop2.p == 0.1
        assert block.attn.attn_drop.p == 0.0 and block.attn.proj_drop.p == 0.0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(model.train()(x).logits, model(x).logits)  # dropout draws differ
        assert torch.equal(model.eval()(x).logits, model(x).logits)
    off = fgvc.create_model("transfg", num_classes=3, img_size=32, dropout=0.0, **TINY)
    assert off.backbone.vit.pos_drop.p == 0.0 and off.backbone.blocks[0].mlp.drop1.p == 0.0
    with pytest.raises(ValueError, match="dropout"):
        fgvc.create_model("transfg", num_classes=3, img_size=32, dropout=1.5, **TINY)
