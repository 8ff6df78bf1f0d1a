"""timm ViT blocks computed from their modules, for methods that need more than ``block(x)``.

DCAL needs cross-attention from a subset of query tokens (GLCA) and over the keys / values of a second image
(PWCA); DCAL and TransFG need each block's attention probabilities. ``block_forward`` computes a timm
pre-norm ``Block`` from its own modules (norms, ``Attention``'s qkv / q_norm / k_norm / proj, layer scale,
drop path, MLP) with these options, so the weights stay the backbone's own and ``block_forward(block, x)``
equals ``block(x)``.

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
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import Tensor, nn

__all__ = ["ProbsRequest", "attend", "block_forward", "check_timm_block", "gather_tokens"]


def check_timm_block(block: nn.Module) -> None:
    """Fail early, naming the type, if ``block`` is not a timm ``Block`` with standard ``Attention``."""
    if not isinstance(block, Block) or not isinstance(block.attn, Attention):
        raise TypeError(
            f"DCAL / TransFG compute attention from the block's modules (fgvc.layers.blocks) and support "
            f"timm's Block with Attention; got {type(block).__name__} with "
            f"{type(getattr(block, 'attn', None)).__name__}"
            + (" (EVA-02's rotary embeddings)" if "Eva" in type(block).__name__ else "")
            + "; methods 'vit' and 'glsim' work with this backbone"
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
    attn: Attention,
    x: Tensor,
    *,
    query_index: Tensor | None = None,
    extra_kv: tuple[Tensor, Tensor] | None = None,
    qkv: QKV | None = None,
    probs: ProbsRequest | None = None,
) -> tuple[Tensor, Tensor | None, QKV]:
    """timm ``Attention`` on normed tokens x (B, T, D), with optional query subset and extra keys / values.

    query_index: (B, R) token positions used as queries (default: all T tokens); only they are projected to
        queries (keys and values: all T tokens).
    extra_kv: (k, v), each (B, heads, T2, head_dim), appended to this input's keys and values; the softmax
        runs over all T + T2 keys together.
    qkv: this input's (q, k, v), each (B, H, T, hd) after q_norm / k_norm, when already computed (another
        stream with the same input): the projection is not computed again. Not with ``query_index``.
    probs: also return the softmax probabilities (B, heads, Tq or rows, T + T2), without gradient (before
        attention dropout, like ``ViTBackbone.record_attention``), as the request says.
    Returns the projected output (B, Tq, D), the probabilities or None, and this input's (q, k, v).
    """
    b = x.shape[0]
    q, k, v, gate_input = _project(attn, x, query_index, qkv)
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
    attn: Attention, x: Tensor, query_index: Tensor | None, qkv: QKV | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(q, k, v) of x (B, T, D), each (B, H, Tq or T, hd) after q_norm / k_norm, and the gate's input."""
    b, t, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    if qkv is not None:
        if query_index is not None:
            raise ValueError("attend: pass qkv or query_index, not both")
        return *qkv, x
    if query_index is None:
        q, k, v = attn.qkv(x).reshape(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, hd)
        return attn.q_norm(q), attn.k_norm(k), v, x
    # queries for the R chosen tokens only: split the fused qkv projection
    picked = gather_tokens(x, query_index)  # (B, R, D)
    dim = heads * head_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias  # (3 dim, D), (3 dim,)
    q = F.linear(picked, weight[:dim], None if bias is None else bias[:dim])  # (B, R, dim)
    q = q.reshape(b, -1, heads, head_dim).transpose(1, 2)  # (B, H, R, hd)
    kv = F.linear(x, weight[dim:], None if bias is None else bias[dim:])  # (B, T, 2 dim)
    k, v = kv.reshape(b, t, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
    return attn.q_norm(q), attn.k_norm(k), v, picked


def _fused(attn: Attention, q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """Fused attention output (B, H, Tq, hd); no probabilities are formed."""
    dropout = attn.attn_drop.p if attn.training else 0.0
    return F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout, scale=attn.scale)


def _separate_probs(attn: Attention, q: Tensor, keys: Tensor, rows: int | None) -> Tensor:
    """The probabilities (B, H, rows or Tq, Tk) of the first ``rows`` queries, apart and without gradient."""
    with torch.no_grad():
        qw = q if rows is None else q[:, :, :rows]  # (B, H, rows, hd)
        return ((qw * attn.scale) @ keys.transpose(-2, -1)).softmax(dim=-1)  # (B, H, rows, Tk)


def _explicit(attn: Attention, q: Tensor, keys: Tensor, values: Tensor, rows: int | None) -> tuple[Tensor, Tensor]:
    """Explicit attention: the output (B, H, Tq, hd) and the detached probabilities (B, H, rows or Tq, Tk)."""
    a = ((q * attn.scale) @ keys.transpose(-2, -1)).softmax(dim=-1)  # (B, H, Tq, Tk)
    out = attn.attn_drop(a) @ values  # (B, H, Tq, hd)
    return out, (a.detach() if rows is None else a.detach()[:, :, :rows])


def _explicit_by_image(
    attn: Attention, q: Tensor, keys: Tensor, values: Tensor, rows: int | None
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
    block: Block,
    x: Tensor,
    *,
    query_index: Tensor | None = None,
    extra_kv: tuple[Tensor, Tensor] | None = None,
    qkv: QKV | None = None,
    probs: ProbsRequest | None = None,
) -> tuple[Tensor, Tensor | None, QKV]:
    """A timm pre-norm ``Block`` on tokens x (B, T, D), computed from its modules (see ``attend``).

    With ``query_index`` the residual stream is that of the query tokens: returns (B, R, D).
    Returns (tokens, probabilities or None, (q, k, v) of this block's input).
    """
    y, weights, qkv = attend(block.attn, block.norm1(x), query_index=query_index, extra_kv=extra_kv, qkv=qkv,
                             probs=probs)
    if query_index is not None:
        x = gather_tokens(x, query_index)  # (B, R, D)
    x = x + block.drop_path1(block.ls1(y))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, weights, qkv
