"""EVA-02 with DCAL and TransFG: attention computed from ``EvaBlock``'s modules, rotary embedding included.

Parity with timm: the blocks' outputs equal timm's ``EvaBlock``, and every probability equals the softmax timm's
``EvaAttention`` computes internally (read where it enters attention dropout, on its explicit path), i.e. that
of q and k after the rotary embedding. Tiny random models only (pretrained=False)."""

import pytest
import timm
import torch

import fgvc
import fgvc.methods.transfg as transfg_module
from fgvc.layers.blocks import ProbsRequest, block_forward
from fgvc.layers.rollout import rollout_map
from fgvc.methods.transfg import part_selection

EVA = dict(backbone="eva02_tiny_patch14_224", backbone_kwargs=dict(depth=3))
VARIANTS = {  # EvaBlock layouts: fused qkv with q / v biases (EVA-02), separate projections, layer scale, ...
    "eva02": {}, "separate_qkv": dict(qkv_fused=False), "layer_scale": dict(init_values=0.5),
    "rotate_half": dict(rope_rotate_half=True), "qk_norm": dict(qk_norm=True, scale_attn_inner=True),
}


def random_eva(depth=1, **kwargs):
    """A tiny EVA-02 at 56 px (4 x 4 patches of 14 px, 3 heads, CLS) with every weight random."""
    model = timm.create_model("eva02_tiny_patch14_224", img_size=56, depth=depth, num_classes=0, **kwargs).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


def timm_block_and_probs(block, x, rope):
    """timm's own output of ``block`` and its softmax probabilities (B, heads, T, T), read inside EvaAttention."""
    recorded = []
    fused, block.attn.fused_attn = block.attn.fused_attn, False
    hook = block.attn.attn_drop.register_forward_hook(lambda m, i, o: recorded.append(i[0]))
    try:
        y = block(x, rope=rope)
    finally:
        hook.remove()
        block.attn.fused_attn = fused
    return y, recorded[0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_eva_block_computed_from_its_modules_equals_timms_block_and_attention(variant):
    """Output, probabilities (all rows, CLS row, head mean), query subsets and q, k after the rotary embedding."""
    model = random_eva(**VARIANTS[variant])
    block, rope = model.blocks[0], model.rope.get_embed()
    x = torch.randn(2, 17, 192)
    with torch.no_grad():
        ref, ref_probs = timm_block_and_probs(block, x, rope)
        for explicit in (False, True):
            y, probs, (q, k, _) = block_forward(block, x, probs=ProbsRequest(explicit=explicit), rope=rope)
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(probs, ref_probs, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close((q @ k.transpose(-1, -2) * block.attn.scale).softmax(-1), ref_probs,
                                       rtol=1e-5, atol=1e-6)  # the returned q, k are the rotated ones
            _, row, _ = block_forward(block, x, probs=ProbsRequest(rows=1, average_heads=True, explicit=explicit),
                                      rope=rope)
            torch.testing.assert_close(row, ref_probs[:, :, :1].mean(1, keepdim=True), rtol=1e-5, atol=1e-6)
        # a query subset with the CLS token (position 0, no rotation) and patches: the rows of the full block
        idx = torch.tensor([[0, 5, 16], [3, 0, 9]])
        y, probs, _ = block_forward(block, x, query_index=idx, probs=ProbsRequest(), rope=rope)
    torch.testing.assert_close(y, ref.gather(1, idx[..., None].expand(-1, -1, 192)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs, ref_probs.gather(2, idx[:, None, :, None].expand(-1, 3, -1, 17)),
                               rtol=1e-5, atol=1e-6)


def test_extra_keys_and_values_of_another_image_join_one_softmax_with_their_own_rotation():
    """PWCA's keys of image 2 come rotated from image 2's pass: one softmax over both images' rotated keys."""
    block = random_eva().blocks[0]
    rope = random_eva().rope.get_embed()
    x = torch.randn(2, 17, 192)
    with torch.no_grad():
        _, _, (q, k, v) = block_forward(block, x, rope=rope)
        pairs = torch.tensor([1, 0])
        y, probs, _ = block_forward(block, x, extra_kv=(k[pairs], v[pairs]), probs=ProbsRequest(), rope=rope)
    a = (q @ torch.cat([k, k[pairs]], 2).transpose(-1, -2) * block.attn.scale).softmax(-1)  # (B, heads, T, 2T)
    torch.testing.assert_close(probs, a, rtol=1e-5, atol=1e-6)
    attn = a @ torch.cat([v, v[pairs]], 2)  # (B, heads, T, hd)
    mid = x + block.attn.proj(block.attn.norm(attn.transpose(1, 2).reshape(2, 17, 192)))
    torch.testing.assert_close(y, mid + block.mlp(block.norm2(mid)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["dcal", "transfg"])
def test_dcal_and_transfg_train_on_eva02_and_gradients_reach_every_parameter(method):
    """EVA-02 builds with DCAL and TransFG (timm's EvaAttention is supported) and every parameter learns."""
    model = fgvc.create_model(method, num_classes=3, img_size=56, **EVA).train()
    out = model(torch.randn(2, 3, 56, 56))
    model.loss(out, torch.tensor([0, 1])).backward()
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_dcal_on_eva02_rolls_out_timms_attention_and_its_sa_branch_is_timms_forward():
    """GLCA's queries are the top rollout patches of timm's own attention maps; SA classifies timm's features."""
    model = fgvc.create_model("dcal", num_classes=3, img_size=56, **EVA).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 3, 56, 56)
    bb = model.backbone
    with torch.no_grad():
        out = model(x)
        enc = bb(x, return_attention=True)  # timm's blocks, their probabilities recorded inside EvaAttention
        sa = model.head(bb.pool(bb.vit.forward_features(x)))
    maps = [a.mean(1, keepdim=True) for a in enc.attentions[: model.glca_index]]
    queries = rollout_map(maps, bb.num_prefix_tokens).topk(model.num_queries, dim=-1).indices
    assert torch.equal(out.extras["glca_queries"].sort(-1).values, queries.sort(-1).values)
    torch.testing.assert_close(out.extras["sa_logits"], sa, rtol=1e-5, atol=1e-5)


def test_transfg_on_eva02_selects_from_timms_attention_and_each_part_keeps_its_rotary_embedding(monkeypatch):
    """Parts are chosen from timm's attention; the part block over [CLS, parts] equals timm's block over the whole
    image with attention limited to CLS and the parts, read at the parts: each part is at its own position."""
    model = fgvc.create_model("transfg", num_classes=3, img_size=56, **EVA).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    bb, x = model.backbone, torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        enc = bb(x, return_attention=True)
        assert torch.equal(model(x).extras["part_indices"], part_selection(enc.attentions[:-1], 1))
        parts = torch.tensor([[0, 5, 15], [2, 9, 12]])  # distinct patches, so the limited attention sees each once
        monkeypatch.setattr(transfg_module, "part_selection", lambda *args, **kwargs: parts)
        feature = model(x).embedding
        rope = bb.vit.rope.get_embed()
        tokens = bb.embed(x)
        for block in list(bb.blocks)[:-1]:  # timm's own blocks
            tokens = block(tokens, rope=rope)
        keep = torch.zeros(2, 17, dtype=torch.bool)
        keep[:, 0] = True
        keep.scatter_(1, parts + 1, True)
        full = model.part_block(tokens, rope=rope, attn_mask=keep[:, None, None, :])  # (B, T, D)
        seq = torch.cat([full[:, :1], full.gather(1, (parts + 1)[..., None].expand(-1, -1, full.shape[-1]))], 1)
        expected = bb.pool(bb.norm(seq))
    torch.testing.assert_close(feature, expected, rtol=1e-5, atol=1e-5)
