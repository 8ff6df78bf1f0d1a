"""timm ViT blocks computed from their modules, for methods that need more than ``block(x)``.

DCAL needs cross-attention from a subset of query tokens (GLCA) and over the keys / values of a second image
(PWCA); DCAL and TransFG need each block's attention probabilities. ``block_forward`` computes a timm
pre-norm ``Block`` from its own modules (norms, ``Attention``'s qkv / q_norm / k_norm / proj, layer scale,
drop path, MLP) with these options, so the weights stay the backbone's own and ``block_forward(block, x)``
equals ``block(x)``. EVA-02's ``EvaBlock`` is computed the same way: its ``EvaAttention`` (fused qkv with
q / v biases, or separate q / k / v projections) applies the rotary embedding (``rope``, the backbone's
``block_kwargs()``) to the patch tokens' queries and keys after q_norm / k_norm, as timm does; every
probability, query subset and extra key below is then that of the rotated q and k (extra keys come rotated,
from their own image's pass).

Attention probabilities, when asked for (a ``ProbsRequest``), come one of two ways:

* default: the output uses fused ``F.scaled_dot_product_attention`` and the probabilities are computed
  separately under ``no_grad`` (they only feed token selection, which has no gradient), so no
  (B, heads, T, T) map is kept for backward; ``rows=n`` computes only the first n query rows (the CLS row:
  ``n = 1``), so the separate pass costs O(n T) instead of O(T^2) per head;
* ``explicit=True``: one explicit attention (``softmax(q k^T * scale) @ v``) gives both the output and the
  probabilities (returned detached). No second pass over q k^T; under autograd the map is kept for backward
  like in any explicit attention. When the whole map is wanted this is the cheaper way: the separate pass
  repeats q k^T and the softmax, about as much work as the attention itself.

``average_heads=True`` returns the head mean (B, 1, rows, Tk) in float32 instead of the per-head maps
(explicit attention on CPU without gradient then goes one image at a time, so that image's map is still in
the caches for the softmax, the product with the values and the mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import Attention, apply_rot_embed_cat
from timm.models.eva import EvaAttention, EvaBlock
from timm.models.vision_transformer import Block
from torch import Tensor, nn

__all__ = ["ProbsRequest", "attend", "block_forward", "check_timm_block", "gather_tokens"]


def check_timm_block(block: nn.Module) -> None:
    """Fail early, naming the type, if ``block`` is not a timm ``Block`` with ``Attention`` or an ``EvaBlock``
    with ``EvaAttention``."""
    supported = (isinstance(block, Block) and isinstance(block.attn, Attention)) or (
        isinstance(block, EvaBlock) and isinstance(block.attn, EvaAttention)
    )
    if not supported:
        raise TypeError(
            f"DCAL / TransFG compute attention from the block's modules (fgvc.layers.blocks) and support "
            f"timm's Block with Attention and EvaBlock with EvaAttention; got {type(block).__name__} with "
            f"{type(getattr(block, 'attn', None)).__name__}; methods 'vit' and 'glsim' work with this backbone"
        )


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """x (B, T, D), index (B, K) token positions -> (B, K, D)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


@dataclass(frozen=True)
class ProbsRequest:
    """The attention probabilities ``attend`` should also return (without gradient), and how to get them.

    rows: only the first ``rows`` query rows (the CLS row: 1); None: every query row.
    average_heads: the head mean (B, 1, rows, Tk) in float32 instead of (B, heads, rows, Tk).
    explicit: take them from one explicit attention that also gives the output (see the module doc),
        instead of a separate pass beside fused attention.
    """

    rows: int | None = None
    average_heads: bool = False
    explicit: bool = False


QKV = tuple[Tensor, Tensor, Tensor]


def attend(
    attn: Attention | EvaAttention,
    x: Tensor,
    *,
    query_index: Tensor | None = None,
    extra_kv: tuple[Tensor, Tensor] | None = None,
    qkv: QKV | None = None,
    probs: ProbsRequest | None = None,
    rope: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, QKV]:
    """timm ``Attention`` (or ``EvaAttention``) on normed tokens x (B, T, D), with optional query subset and
    extra keys / values.

    query_index: (B, R) token positions used as queries (default: all T tokens); only they are projected to
        queries (keys and values: all T tokens).
    extra_kv: (k, v), each (B, heads, T2, head_dim), appended to this input's keys and values; the softmax
        runs over all T + T2 keys together.
    qkv: this input's (q, k, v), each (B, H, T, hd) after q_norm / k_norm (and the rotary embedding), when
        already computed (another stream with the same input): the projection is not computed again. Not
        with ``query_index``.
    probs: also return the softmax probabilities (B, heads, Tq or rows, T + T2), without gradient (before
        attention dropout, like ``ViTBackbone.record_attention``), as the request says.
    rope: ``EvaAttention`` only: the rotary embedding of the patch tokens, (N, 2 hd) or per image
        (B, 1, N, 2 hd), applied to the queries and keys after the ``num_prefix_tokens`` prefix tokens.
    Returns the projected output (B, Tq, D), the probabilities or None, and this input's (q, k, v).
    """
    b = x.shape[0]
    if rope is not None and not isinstance(attn, EvaAttention):
        raise TypeError(f"a rotary embedding (rope) needs EvaAttention, got {type(attn).__name__}")
    q, k, v, gate_input = _project(attn, x, query_index, qkv)
    if rope is not None and qkv is None:
        q, k = _rotate(attn, q, rope, query_index), _rotate(attn, k, rope, None)
    keys, values = k, v
    if extra_kv is not None:
        keys = torch.cat([k, extra_kv[0]], dim=2)  # (B, H, T + T2, hd)
        values = torch.cat([v, extra_kv[1]], dim=2)
    if probs is None:
        out, weights = _fused(attn, q, keys, values), None
    elif not probs.explicit:
        out, weights = _fused(attn, q, keys, values), _separate_probs(attn, q, keys, probs.rows)
    elif probs.average_heads and x.device.type == "cpu" and not torch.is_grad_enabled():
        out, weights = _explicit_by_image(attn, q, keys, values, probs.rows)
    else:
        out, weights = _explicit(attn, q, keys, values, probs.rows)
    if weights is not None and probs.average_heads and weights.shape[1] != 1:
        weights = weights.mean(dim=1, keepdim=True, dtype=torch.float32)  # (B, 1, rows, Tk)
    out = out.transpose(1, 2).reshape(b, q.shape[2], attn.num_heads * attn.head_dim)  # (B, Tq, H * hd)
    out = getattr(attn, "norm", nn.Identity())(out)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(gate_input).sigmoid()
    return attn.proj_drop(attn.proj(out)), weights, (q, k, v)


def _project(
    attn: Attention | EvaAttention, x: Tensor, query_index: Tensor | None, qkv: QKV | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(q, k, v) of x (B, T, D), each (B, H, Tq or T, hd) after q_norm / k_norm, and the gate's input."""
    b, t, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    if qkv is not None:
        if query_index is not None:
            raise ValueError("attend: pass qkv or query_index, not both")
        return *qkv, x
    picked = x if query_index is None else gather_tokens(x, query_index)  # (B, R, D) the queries' tokens
    if getattr(attn, "qkv", None) is None:  # EvaAttention with separate q / k / v projections
        q, k, v = attn.q_proj(picked), attn.k_proj(x), attn.v_proj(x)
        q = q.reshape(b, -1, heads, head_dim).transpose(1, 2)  # (B, H, R, hd)
        k, v = (y.reshape(b, t, heads, head_dim).transpose(1, 2) for y in (k, v))  # (B, H, T, hd)
        return attn.q_norm(q), attn.k_norm(k), v, picked
    weight, bias = attn.qkv.weight, _qkv_bias(attn)  # (3 dim, D), (3 dim,) or None
    if query_index is None:
        if isinstance(attn, EvaAttention):
            qkv_out = _linear(attn, x, weight, bias)
        else:
            qkv_out = attn.qkv(x)
        q, k, v = qkv_out.reshape(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, hd)
        return attn.q_norm(q), attn.k_norm(k), v, x
    # queries for the R chosen tokens only: split the fused qkv projection
    dim = heads * head_dim
    q = _linear(attn, picked, weight[:dim], None if bias is None else bias[:dim])  # (B, R, dim)
    q = q.reshape(b, -1, heads, head_dim).transpose(1, 2)  # (B, H, R, hd)
    kv = _linear(attn, x, weight[dim:], None if bias is None else bias[dim:])  # (B, T, 2 dim)
    k, v = kv.reshape(b, t, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
    return attn.q_norm(q), attn.k_norm(k), v, picked


def _qkv_bias(attn: Attention | EvaAttention) -> Tensor | None:
    """The fused projection's bias (3 dim,): ``qkv.bias``, or EVA's q / (zero) k / v biases, or None."""
    if getattr(attn, "q_bias", None) is not None:
        return torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    return attn.qkv.bias


def _linear(attn: Attention | EvaAttention, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x W^T + b`` as the attention computes it (EVA's ``qkv_bias_separate`` adds the bias after the product)."""
    if bias is not None and getattr(attn, "qkv_bias_separate", False):
        return F.linear(x, weight) + bias
    return F.linear(x, weight, bias)


def _rotate(attn: EvaAttention, t: Tensor, rope: Tensor, index: Tensor | None) -> Tensor:
    """Queries or keys (B, H, T or R, hd) -> the same with EVA's rotary embedding on the patch tokens.

    ``index`` (B, R): the token positions of the rows (a query subset); rows of prefix tokens stay as they are.
    Without it the rows are all T tokens, prefix first, as timm's ``EvaAttention`` rotates them.
    """
    npt = attn.num_prefix_tokens
    half = {"half": True} if getattr(attn, "rotate_half", False) else {}  # timm's keyword, for that layout only
    if index is None:
        return torch.cat([t[:, :, :npt], apply_rot_embed_cat(t[:, :, npt:], rope, **half)], dim=2).type_as(t)
    if rope.ndim != 2:
        raise ValueError("a query subset needs the rotary embedding of the whole grid, (N, 2 hd)")
    # per row: the embedding of its patch, or the identity rotation (sin 0, cos 1) for a prefix token
    sin, cos = rope.chunk(2, -1)  # each (N, hd)
    sin = torch.cat([sin.new_zeros(npt, sin.shape[-1]), sin])[index]  # (B, R, hd)
    cos = torch.cat([cos.new_ones(npt, cos.shape[-1]), cos])[index]
    rotated = apply_rot_embed_cat(t, torch.cat([sin, cos], -1)[:, None], **half)  # (B, H, R, hd)
    return torch.where((index < npt)[:, None, :, None], t, rotated).type_as(t)


def _fused(attn: Attention | EvaAttention, q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """Fused attention output (B, H, Tq, hd); no probabilities are formed."""
    dropout = attn.attn_drop.p if attn.training else 0.0
    return F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout, scale=attn.scale)


def _separate_probs(attn: Attention | EvaAttention, q: Tensor, keys: Tensor, rows: int | None) -> Tensor:
    """The probabilities (B, H, rows or Tq, Tk) of the first ``rows`` queries, apart and without gradient."""
    with torch.no_grad():
        qw = q if rows is None else q[:, :, :rows]  # (B, H, rows, hd)
        return ((qw * attn.scale) @ keys.transpose(-2, -1)).softmax(dim=-1)  # (B, H, rows, Tk)


def _explicit(attn: Attention | EvaAttention, q: Tensor, keys: Tensor, values: Tensor, rows: int | None) -> tuple[Tensor, Tensor]:
    """Explicit attention: the output (B, H, Tq, hd) and the detached probabilities (B, H, rows or Tq, Tk)."""
    a = ((q * attn.scale) @ keys.transpose(-2, -1)).softmax(dim=-1)  # (B, H, Tq, Tk)
    out = attn.attn_drop(a) @ values  # (B, H, Tq, hd)
    return out, (a.detach() if rows is None else a.detach()[:, :, :rows])


def _explicit_by_image(
    attn: Attention | EvaAttention, q: Tensor, keys: Tensor, values: Tensor, rows: int | None
) -> tuple[Tensor, Tensor]:
    """Explicit attention without gradient, one image at a time, and the head mean of its probabilities.

    q (B, H, Tq, hd), keys / values (B, H, Tk, hd). On CPU one image's (H, Tq, Tk) map stays in the caches
    for the softmax, the product with the values and the head mean; no (B, H, Tq, Tk) map is built.
    Returns the output (B, H, Tq, hd) and the head mean (B, 1, rows or Tq, Tk) float32.
    """
    outs, means = [], []
    for qi, ki, vi in zip(q * attn.scale, keys, values, strict=True):
        a = (qi @ ki.transpose(-2, -1)).softmax(dim=-1)  # (H, Tq, Tk)
        outs.append(attn.attn_drop(a) @ vi)  # (H, Tq, hd)
        means.append(a[:, :rows].mean(dim=0, keepdim=True, dtype=torch.float32))  # (1, rows, Tk)
    return torch.stack(outs), torch.stack(means)


def block_forward(
    block: Block | EvaBlock,
    x: Tensor,
    *,
    query_index: Tensor | None = None,
    extra_kv: tuple[Tensor, Tensor] | None = None,
    qkv: QKV | None = None,
    probs: ProbsRequest | None = None,
    rope: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, QKV]:
    """A timm pre-norm ``Block`` (or ``EvaBlock``) on tokens x (B, T, D), computed from its modules (see ``attend``).

    With ``query_index`` the residual stream is that of the query tokens: returns (B, R, D).
    Returns (tokens, probabilities or None, (q, k, v) of this block's input).
    """
    y, weights, qkv = attend(block.attn, block.norm1(x), query_index=query_index, extra_kv=extra_kv, qkv=qkv,
                             probs=probs, rope=rope)
    if query_index is not None:
        x = gather_tokens(x, query_index)  # (B, R, D)
    x = x + block.drop_path1(_layer_scale(block, 1, y))
    x = x + block.drop_path2(_layer_scale(block, 2, block.mlp(block.norm2(x))))
    return x, weights, qkv


def _layer_scale(block: Block | EvaBlock, i: int, y: Tensor) -> Tensor:
    """Branch ``i``'s layer scale: timm's ``ls1`` / ``ls2`` modules, or EVA's ``gamma_1`` / ``gamma_2`` (or none)."""
    ls = getattr(block, f"ls{i}", None)
    if ls is not None:
        return ls(y)
    gamma = getattr(block, f"gamma_{i}", None)
    return y if gamma is None else gamma * y
