"""DCAL and TransFG: what the papers / official code specify, checked on tiny timm ViTs (CPU)."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import TINY
from timm.layers import resample_abs_pos_embed
from torch import nn
from torch.utils.data import Dataset

import fgvc
import fgvc.methods.dcal as dcal_module
from fgvc.layers import ProbsRequest, block_forward, rollout_map
from fgvc.methods.base import ModelOutput
from fgvc.methods.dcal import random_derangement
from fgvc.methods.transfg import contrastive_loss


def tiny(depth):
    return dict(backbone="test_vit", backbone_kwargs=dict(depth=depth))


def qkv_of(block, x):
    """(B, T, D) block input -> q, k, v, each (B, heads, T, head_dim), as timm's Attention computes them."""
    attn = block.attn
    b, t, _ = x.shape
    return attn.qkv(block.norm1(x)).reshape(b, t, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)


# ------------------------------------------------------------------------------------------------ DCAL
@pytest.mark.parametrize(
    "ratio, img_size, expected",
    [(0.1, 64, 2), (0.25, 64, 4), (0.3, (48, 64), 4), (1.0, 32, 4), (0.1, (80, 96), 3), (0.01, 32, 1),
     (0.55, 160, 55)],
)
def test_glca_uses_ceil_r_times_n_queries_chosen_by_the_rollout(ratio, img_size, expected):
    # N = 16, 16, 12, 4, 30, 4, 100 patches: ceil(0.1*16)=2, 4, ceil(3.6)=4, 4, 3, 1, and 55 although
    # 0.55 * 100 == 55.00000000000001 in floating point
    model = fgvc.create_model("dcal", num_classes=3, img_size=img_size, glca_ratio=ratio, **TINY).eval()
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    x = torch.randn(2, 3, h, w)
    seen = []
    model.glca.mlp.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    out = model(x)
    assert seen == [(2, expected, 64)]  # the GLCA block runs on exactly R query tokens
    assert out.extras["glca_queries"].shape == (2, expected)
    # the queries are the top-R patches of the CLS rollout over the blocks before GLCA (here: block 1)
    attentions = model.backbone(x, return_attention=True).attentions
    score = rollout_map(attentions[:1], num_prefix_tokens=1)
    ref = score.topk(expected, dim=-1).indices
    assert torch.equal(out.extras["glca_queries"].sort(-1).values, ref.sort(-1).values)
    assert out.selection_map.shape == (2, h // 16, w // 16)


@pytest.mark.parametrize("glca_block", [-1, 1])
def test_glca_is_cross_attention_from_local_queries_to_all_tokens(glca_block):
    model = fgvc.create_model("dcal", num_classes=4, img_size=(48, 64), glca_block=glca_block, **tiny(3))
    model.eval()
    p = 2 if glca_block == -1 else 1
    assert model.glca_index == p
    # own weights, initialised as a copy of SA block p
    sa_block = model.backbone.blocks[p]
    for (name, a), (_, b) in zip(model.glca.named_parameters(), sa_block.named_parameters(), strict=True):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name
    with torch.no_grad():
        model.glca.attn.proj.bias.add_(0.1)  # make GLCA differ from SA block p

    x = torch.randn(2, 3, 48, 64)
    out = model(x)
    enc = model.backbone(x, return_attention=True, return_hidden_states=True)
    inp = enc.hidden_states[p - 1]  # output of block p-1 feeds GLCA
    idx = rollout_map(enc.attentions[:p], 1).topk(2, dim=-1).indices + 1  # ceil(0.1 * 12) = 2 queries
    assert torch.equal(out.extras["glca_queries"].sort(-1).values, (idx - 1).sort(-1).values)
    g = model.glca
    q, k, v = qkv_of(g, inp)  # (B, heads, T, hd)
    feats = []
    for i in range(2):
        qi = q[i][:, idx[i]]  # (heads, R, hd): local queries
        a = (qi @ k[i].transpose(-1, -2) * g.attn.scale).softmax(-1)  # over all T = 13 tokens
        assert a.shape == (2, 2, 13)
        y = inp[i, idx[i]] + g.attn.proj((a @ v[i]).transpose(0, 1).reshape(2, 64))
        y = y + g.mlp(g.norm2(y))
        feats.append(model.glca_norm(y).mean(0))
    ref = model.glca_head(torch.stack(feats))
    assert torch.allclose(out.extras["glca_logits"], ref, atol=1e-5)


def test_pwca_adds_no_parameters_and_runs_only_in_training():
    torch.manual_seed(0)
    with_pwca = fgvc.create_model("dcal", num_classes=5, img_size=32, **TINY)
    torch.manual_seed(0)
    without = fgvc.create_model("dcal", num_classes=5, img_size=32, pwca=False, **TINY)
    vit = fgvc.create_model("vit", num_classes=5, img_size=32, **TINY)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(with_pwca) == count(without)
    # beyond the plain ViT: the GLCA block, its norm and head, and the 3 uncertainty weights
    glca = count(with_pwca.glca) + count(with_pwca.glca_norm) + count(with_pwca.glca_head)
    assert count(with_pwca) == count(vit) + glca + 3

    calls = []
    with_pwca.backbone.blocks[0].mlp.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = torch.randn(3, 3, 32, 32)
    out = with_pwca.eval()(x)
    assert calls == [3] and "pwca_logits" not in out.extras  # inference: SA only, nothing paired
    calls.clear()
    out = with_pwca.train()(x)
    assert calls == [3, 3] and out.extras["pwca_logits"].shape == (3, 5)  # SA stream + PWCA stream
    calls.clear()
    out = with_pwca(x[:1])  # a batch of one has no distractor: PWCA is skipped
    assert calls == [1] and "pwca_logits" not in out.extras
    assert "pwca_logits" not in without.train()(x).extras


def test_pwca_queries_attend_over_both_images_in_one_softmax():
    model = fgvc.create_model("dcal", num_classes=4, img_size=(32, 48), **TINY).train()
    x = torch.randn(4, 3, 32, 48)
    out = model(x)
    pairs = out.extras["pwca_pairs"]
    assert sorted(pairs.tolist()) == [0, 1, 2, 3] and (pairs != torch.arange(4)).all()
    # reference: image i's PWCA tokens attend over [its own keys; SA keys of image pairs[i]], 2T = 14 keys
    bb = model.backbone
    sa = pw = bb.embed(x)
    for block in bb.blocks:
        _, k_sa, v_sa = qkv_of(block, sa)
        q, k, v = qkv_of(block, pw)
        mid = []
        for i in range(4):
            keys = torch.cat([k[i], k_sa[pairs[i]]], dim=1)  # (heads, 2T, hd)
            values = torch.cat([v[i], v_sa[pairs[i]]], dim=1)
            a = (q[i] @ keys.transpose(-1, -2) * block.attn.scale).softmax(-1)  # (heads, T, 2T)
            assert a.shape == (2, 7, 14)
            mid.append(pw[i] + block.attn.proj((a @ values).transpose(0, 1).reshape(7, 64)))
        mid = torch.stack(mid)
        pw = mid + block.mlp(block.norm2(mid))
        sa = block(sa)
    ref = model.head(bb.pool(bb.norm(pw)))  # PWCA shares SA's weights, norm and head
    assert torch.allclose(out.extras["pwca_logits"], ref, atol=1e-5)
    assert torch.allclose(out.extras["sa_logits"], model.head(bb.pool(bb.norm(sa))), atol=1e-5)


@pytest.mark.parametrize("pwca_blocks", [None, 1, 2])
def test_pwca_in_the_last_t_blocks_branches_from_the_sa_stream(pwca_blocks):
    # the paper's T (default None: all L blocks): the PWCA stream is the SA stream up to block L-T, then PWCA
    # runs in the last T blocks; the first PWCA block takes SA's q, k, v (both streams have the same input)
    model = fgvc.create_model("dcal", num_classes=4, img_size=(32, 48), pwca_blocks=pwca_blocks, **tiny(3))
    model.train()
    bb = model.backbone
    counts = [0] * 3
    for i, block in enumerate(bb.blocks):
        block.attn.qkv.register_forward_hook(lambda m, inp, o, i=i: counts.__setitem__(i, counts[i] + 1))
    x = torch.randn(4, 3, 32, 48)
    out = model(x)
    start = 0 if pwca_blocks is None else 3 - pwca_blocks
    assert counts == [1 if i <= start else 2 for i in range(3)]  # no PWCA cost before block L-T
    pairs = out.extras["pwca_pairs"]
    params = [w for w in bb.parameters() if w.requires_grad]
    grads = torch.autograd.grad(out.extras["pwca_logits"].square().sum(), params, allow_unused=True)
    sa = bb.embed(x)
    for i, block in enumerate(bb.blocks):
        if i == start:
            pw = sa
        if i >= start:
            _, k_sa, v_sa = qkv_of(block, sa)
            q, k, v = qkv_of(block, pw)
            keys, values = torch.cat([k, k_sa[pairs]], 2), torch.cat([v, v_sa[pairs]], 2)  # (B, heads, 2T, hd)
            a = (q @ keys.transpose(-1, -2) * block.attn.scale).softmax(-1)
            mid = pw + block.attn.proj((a @ values).transpose(1, 2).reshape(4, 7, 64))
            pw = mid + block.mlp(block.norm2(mid))
        sa = block(sa)
    ref_logits = model.head(bb.pool(bb.norm(pw)))
    assert torch.allclose(out.extras["pwca_logits"], ref_logits, atol=1e-5)
    ref = torch.autograd.grad(ref_logits.square().sum(), params, allow_unused=True)
    for g, r in zip(grads, ref, strict=True):
        assert (g is None and r is None) or torch.allclose(g, r, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="pwca_blocks=4 must be between 1 and the backbone's 3 blocks"):
        fgvc.create_model("dcal", num_classes=4, img_size=32, pwca_blocks=4, **tiny(3))


def test_block_forward_explicit_fused_and_partial_paths_equal_the_timm_block():
    block = timm.create_model("test_vit", img_size=32, depth=1).blocks[0]
    x = torch.randn(3, 5, 64)
    q, k, v = qkv_of(block, x)
    ref_probs = (q @ k.transpose(-1, -2) * block.attn.scale).softmax(-1)  # (B, heads, T, T)
    idx = torch.tensor([[4, 1], [0, 2], [3, 3]])
    other = torch.randn(3, 2, 7, 32), torch.randn(3, 2, 7, 32)  # extra keys / values, T2 = 7
    grads, calls = {}, []
    hook = block.attn.qkv.register_forward_hook(lambda m, i, o: calls.append(1))
    for explicit in (False, True):
        xg = x.clone().requires_grad_()
        y, probs, (q2, k2, v2) = block_forward(block, xg, probs=ProbsRequest(explicit=explicit))
        assert torch.allclose(y, block(x), atol=1e-5) and torch.allclose(probs, ref_probs, atol=1e-6)
        assert not probs.requires_grad
        assert torch.allclose(q2, q) and torch.allclose(k2, k) and torch.allclose(v2, v)
        block.zero_grad()
        y.square().sum().backward()
        grads[explicit] = [xg.grad] + [p.grad.clone() for p in block.parameters()]
        # the CLS row only: (B, heads, 1, T)
        _, row, _ = block_forward(block, x, probs=ProbsRequest(rows=1, explicit=explicit))
        assert row.shape == (3, 2, 1, 5) and torch.allclose(row, ref_probs[:, :, :1], atol=1e-6)
        # head means in float32 (explicit without gradient on CPU: one image at a time)
        with torch.no_grad():
            y, mean, _ = block_forward(block, x, probs=ProbsRequest(average_heads=True, explicit=explicit))
            _, row, _ = block_forward(block, x, probs=ProbsRequest(rows=1, average_heads=True, explicit=explicit))
        assert torch.allclose(y, block(x), atol=1e-5) and mean.dtype == torch.float32
        assert torch.allclose(mean, ref_probs.mean(1, keepdim=True), atol=1e-6)
        assert torch.allclose(row, ref_probs[:, :, :1].mean(1, keepdim=True), atol=1e-6)
        # query subset (queries projected alone): the full block's output at those tokens
        y, probs, _ = block_forward(block, x, query_index=idx, probs=ProbsRequest(explicit=explicit))
        assert torch.allclose(y, block(x).gather(1, idx[..., None].expand(-1, -1, 64)), atol=1e-5)
        rows = ref_probs.gather(2, idx[:, None, :, None].expand(-1, 2, -1, 5))  # (B, heads, R, T)
        assert torch.allclose(probs, rows, atol=1e-6)
        # extra keys / values: one softmax over T + T2 keys
        y, probs, _ = block_forward(block, x, extra_kv=other, probs=ProbsRequest(explicit=explicit))
        keys = torch.cat([k, other[0]], 2)
        a = (q @ keys.transpose(-1, -2) * block.attn.scale).softmax(-1)  # (B, heads, T, T + T2)
        mid = x + block.attn.proj((a @ torch.cat([v, other[1]], 2)).transpose(1, 2).reshape(3, 5, 64))
        assert torch.allclose(probs, a, atol=1e-6)
        assert torch.allclose(y, mid + block.mlp(block.norm2(mid)), atol=1e-5)
        # q, k, v given (computed by another stream with the same input): not projected again
        calls.clear()
        y2, _, _ = block_forward(block, x, extra_kv=other, qkv=(q, k, v), probs=ProbsRequest(explicit=explicit))
        assert calls == [] and torch.allclose(y2, y, atol=1e-6)
    hook.remove()
    with pytest.raises(ValueError, match="not both"):
        block_forward(block, x, query_index=idx, qkv=(q, k, v))
    for fused, explicit in zip(grads[False], grads[True], strict=True):  # same gradients either way
        assert torch.allclose(fused, explicit, atol=1e-5)


def test_block_forward_applies_the_query_and_key_norms():
    """A timm block with qk_norm: the block computed from its modules still equals the block."""
    block = timm.models.vision_transformer.Block(64, 2, qk_norm=True).eval()
    for norm in (block.attn.q_norm, block.attn.k_norm):
        nn.init.normal_(norm.weight)
    x = torch.randn(2, 5, 64)
    for request in (None, ProbsRequest(), ProbsRequest(explicit=True)):
        assert torch.allclose(block_forward(block, x, probs=request)[0], block(x), atol=1e-5)
    idx = torch.tensor([[4, 1], [0, 2]])
    picked = block_forward(block, x, query_index=idx)[0]
    assert torch.allclose(picked, block(x).gather(1, idx[..., None].expand(-1, -1, 64)), atol=1e-5)


@pytest.mark.parametrize("glca_block", [-1, 1, 2])
def test_dcal_explicit_attention_path_equals_the_fused_one(monkeypatch, glca_block):
    # CPU default: blocks 1..p-2 use explicit attention (inference, and training on CPU); without it they
    # use fused attention + the probabilities computed apart. Same outputs, queries, map and gradients.
    model = fgvc.create_model("dcal", num_classes=4, img_size=(48, 64), glca_block=glca_block, **tiny(4))
    x, y = torch.randn(4, 3, 48, 64), torch.tensor([0, 1, 2, 3])
    p = model.glca_index
    calls = []

    def spy(block, tokens, **kwargs):
        calls.append(kwargs.get("probs") is not None and kwargs["probs"].explicit)
        return block_forward(block, tokens, **kwargs)

    monkeypatch.setattr(dcal_module, "block_forward", spy)

    def run(explicit_training):
        monkeypatch.setattr(dcal_module, "EXPLICIT_TRAINING_DEVICES", ("cpu",) if explicit_training else ())
        model.eval()
        calls.clear()
        with torch.inference_mode():
            fast = model(x)  # explicit attention whatever the setting: no gradient is needed
        assert calls == [True] * (p - 1) + [False] * (4 - (p - 1)) + [False]  # 4 blocks, then GLCA
        slow = model(x)  # grad enabled: explicit only on an explicit training device
        model.train()
        model.zero_grad()
        calls.clear()
        torch.manual_seed(3)  # the same distractors
        out = model(x)
        model.loss(out, y).backward()
        sa = [explicit_training] * (p - 1) + [False] * (4 - (p - 1))
        assert calls[0:8:2] == sa and calls[1:8:2] == [False] * 4 and len(calls) == 9  # SA, PWCA; GLCA
        return fast, slow, out, [w.grad.clone() for w in model.parameters()]

    a = run(True)
    b = run(False)
    for one, two in [(a[0], b[1]), (a[1], b[1]), (a[2], b[2])]:
        queries = [o.extras["glca_queries"].sort(-1).values for o in (one, two)]
        assert torch.equal(*queries)
        assert torch.allclose(one.selection_map, two.selection_map, atol=1e-6)
        assert torch.allclose(one.logits, two.logits, atol=1e-5)
        for key in ("glca_logits", "pwca_logits"):
            if key in two.extras:
                assert torch.allclose(one.extras[key], two.extras[key], atol=1e-5)
    assert torch.equal(a[2].extras["pwca_pairs"], b[2].extras["pwca_pairs"])
    for ga, gb in zip(a[3], b[3], strict=True):
        assert torch.allclose(ga, gb, atol=1e-5)


def test_random_derangement_never_pairs_an_image_with_itself():
    for n in range(2, 7):
        for _ in range(50):
            perm = random_derangement(n)
            assert sorted(perm.tolist()) == list(range(n)) and (perm != torch.arange(n)).all()
    assert {tuple(random_derangement(3).tolist()) for _ in range(60)} == {(1, 2, 0), (2, 0, 1)}


def test_dcal_inference_is_the_summed_probabilities_and_independent_of_the_batch():
    model = fgvc.create_model("dcal", num_classes=6, img_size=(48, 32), **TINY).eval()
    x = torch.randn(4, 3, 48, 32)
    out = model(x)
    sa, glca = out.extras["sa_logits"], out.extras["glca_logits"]
    summed = sa.softmax(-1) + glca.softmax(-1)
    assert torch.allclose(out.logits, (summed / 2).log(), atol=1e-6)  # log-probabilities
    assert torch.equal(out.logits.argmax(-1), summed.argmax(-1))
    assert torch.allclose(out.logits.exp().sum(-1), torch.ones(4), atol=1e-6)
    # the SA branch is the plain ViT; the embedding is [SA feature, GLCA feature]
    feature = model.backbone.pool(model.backbone(x).tokens)
    assert torch.allclose(sa, model.head(feature), atol=1e-5)
    assert out.embedding.shape == (4, 128) and torch.allclose(out.embedding[:, :64], feature, atol=1e-5)
    # evaluation loss: cross-entropy of the averaged prediction
    y = torch.tensor([0, 1, 2, 5])
    assert torch.allclose(model.loss(out, y), F.cross_entropy(out.logits, y))
    # no pairing at inference: permuting the batch permutes the outputs; one image alone gives the same
    perm = torch.tensor([2, 0, 3, 1])
    out_p = model(x[perm])
    assert torch.allclose(out_p.logits, out.logits[perm], atol=1e-5)
    assert torch.allclose(out_p.embedding, out.embedding[perm], atol=1e-5)
    for i in range(4):
        assert torch.allclose(model(x[i : i + 1]).logits, out.logits[i : i + 1], atol=1e-5)


def test_uncertainty_weighted_loss_and_its_gradients():
    model = fgvc.create_model("dcal", num_classes=5, img_size=32, **TINY).train()
    with torch.no_grad():
        model.loss_weights.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 4, 1])
    out = model(x)
    # training: .logits are the prediction evaluation scores too (log-probabilities of the averaged SA + GLCA
    # prediction); the loss reads the branches' raw logits in extras
    summed = out.extras["sa_logits"].softmax(-1) + out.extras["glca_logits"].softmax(-1)
    assert torch.allclose(out.logits, (summed / 2).log(), atol=1e-6)
    w = model.loss_weights.detach()
    branches = ("sa_logits", "glca_logits", "pwca_logits")
    ce = torch.stack([F.cross_entropy(out.extras[k], y, label_smoothing=0.1) for k in branches]).detach()
    loss = model.loss(out, y, label_smoothing=0.1)
    assert torch.allclose(loss, 0.5 * (torch.exp(-w) * ce + w).sum(), atol=1e-6)
    loss.backward()
    # d loss / d w_i = 0.5 (1 - exp(-w_i) L_i): the weights are trained with the model
    assert torch.allclose(model.loss_weights.grad, 0.5 * (1 - torch.exp(-w) * ce), atol=1e-6)
    assert (model.loss_weights.grad != 0).all()


# ------------------------------------------------------------------------------------------------ TransFG
def test_transfg_picks_the_per_head_argmax_of_the_attention_product():
    model = fgvc.create_model("transfg", num_classes=4, img_size=(48, 64), **tiny(3)).eval()
    x = torch.randn(3, 3, 48, 64)
    part_input = []
    hook = model.part_block.register_forward_pre_hook(lambda m, args: part_input.append(args[0]))
    out = model(x)
    hook.remove()
    enc = model.backbone(x, return_attention=True, return_hidden_states=True)
    # official Part_Attention: last_map = x[0]; last_map = x[i] @ last_map; argmax of last_map[:, :, 0, 1:]
    last_map = enc.attentions[0]
    for attn in enc.attentions[1:-1]:  # the first L-1 = 2 layers
        last_map = attn @ last_map
    ref = last_map[:, :, 0, 1:].argmax(2)  # (B, heads)
    assert torch.equal(out.extras["part_indices"], ref)
    # the part block sees [CLS, the picked tokens of block L-1's output]
    hidden = enc.hidden_states[-2]
    expected = torch.stack([torch.cat([hidden[i, :1], hidden[i, ref[i] + 1]]) for i in range(3)])
    assert len(part_input) == 1 and torch.allclose(part_input[0], expected, atol=1e-5)
    feature = model.backbone.norm(model.part_block(expected))[:, 0]
    assert torch.allclose(out.logits, model.head(feature), atol=1e-5)
    assert torch.allclose(out.embedding, feature, atol=1e-5)


def test_contrastive_loss_by_hand():
    features = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.6, 0.8]])
    labels = torch.tensor([0, 0, 1, 1])
    # cos: f1.f2 = 1, f1.f3 = 0, f1.f4 = .6, f2.f4 = .6, f3.f4 = .8
    # same label 1 - cos: (3,4) and (4,3) give .2 each -> .4; the others 0
    # different label max(cos - .4, 0): (1,4), (4,1), (2,4), (4,2) give .2 each -> .8; (1,3) etc. 0
    expected = (0.4 + 0.8) / 16
    assert contrastive_loss(features, labels).item() == pytest.approx(expected)
    model = fgvc.create_model("transfg", num_classes=3, img_size=32, **TINY)
    logits = torch.randn(4, 3)
    out = ModelOutput(logits=logits, extras=dict(features=features))
    ce = F.cross_entropy(logits, labels, label_smoothing=0.2)
    assert model.loss(out, labels, label_smoothing=0.2).item() == pytest.approx(ce.item() + expected)


def test_overlapping_patch_embedding_grid_and_position_embeddings():
    model = fgvc.create_model("transfg", num_classes=3, img_size=(64, 48), patch_stride=12, **TINY).eval()
    bb, vit = model.backbone, model.backbone.vit
    grid = ((64 - 16) // 12 + 1, (48 - 16) // 12 + 1)
    assert grid == (5, 3) and bb.grid_size == grid and bb.patch_size == (16, 16) and bb.patch_stride == (12, 12)
    assert vit.patch_embed.proj.stride == (12, 12) and vit.patch_embed.proj.kernel_size == (16, 16)
    assert vit.pos_embed.shape == (1, 1 + 15, 64)
    assert fgvc.create_model("vit", num_classes=3, img_size=(64, 48), **TINY).backbone.grid_size == (4, 3)
    x = torch.randn(2, 3, 64, 48)
    proj = vit.patch_embed.proj
    patches = F.conv2d(x, proj.weight, proj.bias, stride=12)  # (2, 64, 5, 3)
    ref = torch.cat([vit.cls_token.expand(2, -1, -1), patches.flatten(2).transpose(1, 2)], 1) + vit.pos_embed
    assert torch.allclose(bb.embed(x), ref, atol=1e-5)
    out = model(x)
    assert out.logits.shape == (2, 3) and int(out.extras["part_indices"].max()) < 15
    # the DCAL rollout map follows the overlapping grid too; GLSim's pixel boxes assume stride = patch
    dcal = fgvc.create_model("dcal", num_classes=3, img_size=(64, 48), patch_stride=12, **TINY).eval()
    assert dcal(x).selection_map.shape == (2, 5, 3)
    with pytest.raises(ValueError, match="patch_stride must be an int in 1..16"):
        fgvc.create_model("transfg", num_classes=3, img_size=32, patch_stride=20, **TINY)
    with pytest.raises(ValueError, match="overlapping patches \\(patch_stride=12\\) are not supported"):
        fgvc.create_model("glsim", num_classes=3, img_size=32, top_k=2, patch_stride=12, **TINY)


def test_overlapping_patches_resample_pretrained_position_embeddings_once(tmp_path):
    # a "pretrained" file at 32 px: a 2 x 2 grid of position embeddings
    source = timm.create_model("test_vit", img_size=32, depth=2, num_classes=1000)
    state = source.state_dict()
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    model = fgvc.create_model(
        "transfg", num_classes=3, img_size=(64, 48), patch_stride=12, checkpoint_path=path,
        part_block_init="pretrained", **TINY,
    )
    vit = model.backbone.vit
    once = resample_abs_pos_embed(state["pos_embed"], new_size=(5, 3), num_prefix_tokens=1)  # 2x2 -> 5x3
    assert vit.pos_embed.shape == (1, 1 + 15, 64) and torch.allclose(vit.pos_embed, once, atol=1e-6)
    twice = resample_abs_pos_embed(  # what resampling to img_size // P = 4x3 first, then 5x3, would give
        resample_abs_pos_embed(state["pos_embed"], new_size=(4, 3), num_prefix_tokens=1),
        new_size=(5, 3), old_size=(4, 3), num_prefix_tokens=1,
    )
    assert not torch.allclose(twice, once, atol=1e-3)  # the check above tells the two apart
    assert torch.equal(vit.patch_embed.proj.weight, state["patch_embed.proj.weight"])  # kernel kept
    assert torch.equal(vit.blocks[1].mlp.fc2.weight, state["blocks.1.mlp.fc2.weight"])


def test_part_block_is_random_by_default_or_the_pretrained_last_block():
    torch.manual_seed(0)
    vit = fgvc.create_model("vit", num_classes=3, img_size=32, **tiny(3))
    torch.manual_seed(0)
    pretrained = fgvc.create_model("transfg", num_classes=3, img_size=32, part_block_init="pretrained",
                                   **tiny(3))
    torch.manual_seed(0)
    random = fgvc.create_model("transfg", num_classes=3, img_size=32, **tiny(3))
    assert random.config["options"]["part_block_init"] == "random"
    ref = vit.backbone.state_dict()
    for model, same_last in [(pretrained, True), (random, False)]:
        for name, tensor in model.backbone.state_dict().items():
            if not name.startswith("vit.blocks.2."):  # the first L-1 blocks, embeddings, norm: untouched
                assert torch.equal(tensor, ref[name]), name
            elif ".norm" not in name:  # norms start at ones / zeros either way
                assert torch.equal(tensor, ref[name]) == same_last, name
    fc = random.part_block.mlp.fc1
    assert fc.bias.abs().max() < 1e-4  # official Mlp init: biases ~ N(0, 1e-6), Xavier weights
    bound = math.sqrt(6 / (fc.in_features + fc.out_features))
    assert fc.weight.abs().max() <= bound and fc.weight.abs().max() > 0.5 * bound
    # no unused weights: TransFG has the plain ViT's parameters (its last block is the part block) + head
    assert sum(p.numel() for p in random.parameters()) == sum(p.numel() for p in vit.parameters())


# ------------------------------------------------------------------------------------------------ all models
@pytest.mark.parametrize("method", ["dcal", "transfg"])
def test_gradients_reach_every_parameter(method):
    model = fgvc.create_model(method, num_classes=5, img_size=(48, 32), **tiny(3)).train()
    for name, p in model.named_parameters():  # DCAL's heads start at zero: perturb them to reach the backbone
        if name.endswith("head.weight"):
            torch.nn.init.normal_(p, std=0.1)
    out = model(torch.randn(4, 3, 48, 32))
    model.loss(out, torch.tensor([0, 1, 4, 1])).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


@pytest.mark.parametrize("method", ["dcal", "transfg"])
def test_deit_distilled_two_prefix_tokens(method):
    model = fgvc.create_model(
        method, backbone="deit_tiny_distilled_patch16_224", num_classes=3, img_size=48,
        backbone_kwargs=dict(depth=2),
    )
    assert model.backbone.num_prefix_tokens == 2
    x = torch.randn(2, 3, 48, 48)
    out = model.train()(x)
    model.loss(out, torch.tensor([0, 2])).backward()
    out = model.eval()(x)
    assert out.logits.shape == (2, 3)
    key = "glca_queries" if method == "dcal" else "part_indices"
    index = out.extras[key]  # patch indices (prefix tokens excluded) over the 3 x 3 grid
    assert int(index.min()) >= 0 and int(index.max()) < 9


class Noise(Dataset):
    """8 labelled random images (3 classes): enough for a few optimizer steps."""

    def __init__(self, size):
        self.images = torch.randn(8, 3, *size, generator=torch.Generator().manual_seed(0))
        self.targets = [i % 3 for i in range(8)]
        self.classes = ["a", "b", "c"]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


OPTIONS = dict(vit={}, glsim=dict(top_k=2), dcal=dict(glca_ratio=0.25), transfg=dict(patch_stride=12))


@pytest.mark.parametrize("img_size", [32, (64, 48)])
@pytest.mark.parametrize("method", ["vit", "glsim", "dcal", "transfg"])
def test_fit_save_and_reload_to_identical_logits(tmp_path, method, img_size):
    size = (img_size, img_size) if isinstance(img_size, int) else img_size
    model = fgvc.create_model(method, num_classes=3, img_size=img_size, **OPTIONS[method], **TINY)
    history = fgvc.fit(model, Noise(size), epochs=1, batch_size=4, lr=1e-3, label_smoothing=0.1,
                       out_dir=tmp_path, progress=False)
    assert len(history) == 1 and math.isfinite(history["train_loss"][0])
    loaded = fgvc.load_model(tmp_path / "last.safetensors")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.class_names == ["a", "b", "c"]
    x = torch.randn(3, 3, *size)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test_registry_and_bad_options_are_named():
    assert {"vit", "glsim", "dcal", "transfg"} <= set(fgvc.list_models())
    for ratio in (0.0, 1.5):
        with pytest.raises(ValueError, match=f"glca_ratio must be in \\(0, 1\\], got {ratio}"):
            fgvc.create_model("dcal", num_classes=3, img_size=32, glca_ratio=ratio, **TINY)
    with pytest.raises(ValueError, match="glca_block=0 must index blocks 1..1"):
        fgvc.create_model("dcal", num_classes=3, img_size=32, glca_block=0, **TINY)
    with pytest.raises(ValueError, match="TransFG needs at least 2 blocks"):
        fgvc.create_model("transfg", num_classes=3, img_size=32, **tiny(1))
    with pytest.raises(ValueError, match="part_block_init must be 'random' or 'pretrained'"):
        fgvc.create_model("transfg", num_classes=3, img_size=32, part_block_init="copy", **TINY)
