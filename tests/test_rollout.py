"""Attention rollout: the product of explicit per-layer matrices, at any resolution and prefix-token count."""

import pytest
import torch

import fgvc
from fgvc.layers import attention_rollout, rollout_map


def reference_rollout(attentions, residual=0.5):
    """Textbook rollout, one image at a time in float64: R = A_L ... A_1, A = rownorm(0.5 mean_h + 0.5 I).

    (``residual`` replaces the two 0.5 weights: ``(1 - residual) mean_h + residual I``.)
    """
    b, _, t, _ = attentions[0].shape
    eye = torch.eye(t, dtype=torch.float64)
    out = torch.empty(b, t, t, dtype=torch.float64)
    for i in range(b):
        r = eye.clone()
        for attn in attentions:
            a = (1 - residual) * attn[i].double().mean(0) + residual * eye
            a = a / a.sum(1, keepdim=True)
            r = a @ r
        out[i] = r
    return out


def test_two_layer_example_by_hand():
    # layer 1: heads [[1,0],[0,1]] and [[1,0],[1,0]] -> mean [[1,0],[.5,.5]]
    #          -> 0.5 A + 0.5 I = [[1,0],[.25,.75]]
    # layer 2: both heads [[0,1],[0,1]] -> 0.5 A + 0.5 I = [[.5,.5],[0,1]]
    # R = A2 A1 = [[.625,.375],[.25,.75]]  (A1 A2 would be [[.5,.5],[.125,.875]]: the order matters)
    layer1 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])[None]  # (1, 2, 2, 2)
    layer2 = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]] * 2)[None]
    expected = torch.tensor([[[0.625, 0.375], [0.25, 0.75]]])
    assert torch.allclose(attention_rollout([layer1, layer2]), expected)
    assert torch.allclose(rollout_map([layer1, layer2], num_prefix_tokens=1), torch.tensor([[0.375]]))


@pytest.mark.parametrize(
    "name, kwargs, img_size, prefix",
    [
        ("test_vit", dict(depth=3), (48, 32), 1),  # non-square, 3 x 2 patches
        ("deit_tiny_distilled_patch16_224", dict(depth=2), 48, 2),  # CLS + distillation token
    ],
)
def test_rollout_equals_the_explicit_product_on_a_tiny_model(name, kwargs, img_size, prefix):
    bb = fgvc.ViTBackbone(name, img_size=img_size, **kwargs)
    assert bb.num_prefix_tokens == prefix
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    attentions = bb(torch.randn(2, 3, h, w), return_attention=True).attentions
    ref = reference_rollout(attentions)

    rollout = attention_rollout(attentions)
    t = prefix + bb.grid_size[0] * bb.grid_size[1]
    assert rollout.shape == (2, t, t)
    assert torch.allclose(rollout.double(), ref, atol=1e-6)
    assert torch.allclose(rollout.sum(-1), torch.ones(2, t), atol=1e-6)  # rows stay stochastic

    rows, cols = bb.grid_size
    cls_map = rollout_map(attentions, prefix, (rows, cols))
    assert cls_map.shape == (2, rows, cols)
    assert torch.allclose(cls_map.double(), ref[:, 0, prefix:].reshape(2, rows, cols), atol=1e-6)
    assert torch.allclose(rollout_map(attentions, prefix), cls_map.reshape(2, -1))


def test_cls_row_from_head_means_and_a_last_layer_of_one_row():
    # what DCAL passes: (B, 1, T, T) head means in float32, and only the CLS row (B, 1, 1, T) of the last
    # layer (nothing else of it reaches the CLS row of the rollout)
    bb = fgvc.ViTBackbone("test_vit", img_size=48, depth=3)
    attentions = bb(torch.randn(2, 3, 48, 48), return_attention=True).attentions
    ref = reference_rollout(attentions)[:, 0, 1:]  # (B, N)
    means = [a.mean(1, keepdim=True) for a in attentions]
    for maps in (attentions[:-1] + [attentions[-1][:, :, :1]], means, means[:-1] + [means[-1][:, :, :1]],
                 attentions[:-1] + [attentions[-1][:, :, :5]]):
        assert torch.allclose(rollout_map(maps, 1).double(), ref, atol=1e-6)
    # one layer, given as its CLS row only: the CLS row of rownorm(0.5 mean_h + 0.5 I)
    a = attentions[0][:, :, :1]
    ref = reference_rollout(attentions[:1])[:, 0, 1:]
    assert torch.allclose(rollout_map([a], 1).double(), ref, atol=1e-6)


def test_rows_are_renormalized_for_maps_that_do_not_sum_to_one():
    # softmax rows sum to 1 within ~1e-6 in float32, so the renormalization is a no-op there; other maps
    # (dropped-out or masked attention) are renormalized as the reference does
    torch.manual_seed(1)
    softmax = torch.randn(2, 3, 50, 50).mul(3).softmax(-1)
    assert (softmax.sum(-1) - 1).abs().max() < 1e-6
    maps = [torch.rand(2, 3, 50, 50) * (torch.rand(2, 3, 50, 50) > 0.3) for _ in range(3)]
    maps.append(softmax)
    ref = reference_rollout(maps)[:, 0, 1:]
    assert torch.allclose(rollout_map(maps, 1).double(), ref, atol=1e-6)
    assert torch.allclose(rollout_map(maps[:-1] + [maps[-1][:, :, :1]], 1).double(), ref, atol=1e-6)
    ref = reference_rollout(maps, residual=0.2)[:, 0, 1:]
    assert torch.allclose(rollout_map(maps, 1, residual=0.2).double(), ref, atol=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])
    a = torch.full((1, 2, 5, 5), 0.2)
    with pytest.raises(ValueError, match="expected 2x3=6 patch tokens, got 4"):
        rollout_map([a], 1, (2, 3))
    with pytest.raises(ValueError, match="of one B and T"):
        attention_rollout([a, torch.full((1, 2, 4, 4), 0.25)])
    with pytest.raises(ValueError, match="CLS token"):
        rollout_map([a], 0)
    with pytest.raises(ValueError, match="the last may have fewer rows"):  # only the last layer may
        rollout_map([a[:, :, :1], a], 1)
    with pytest.raises(ValueError, match="of one B and T"):  # the full product needs every row
        attention_rollout([a, a[:, :, :1]])
