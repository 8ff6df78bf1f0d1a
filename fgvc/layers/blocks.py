"""timm ViT blocks computed from their modules, for methods that need more than ``block(x)``.

DCAL needs cross-attention from a subset of query tokens (GLCA) and over the keys / values of a second image
(PWCA); DCAL and TransFG need each block's attention probabilities while keeping fused attention for the
output. ``block_forward`` computes a timm pre-norm ``Block`` from its own modules (norms, ``Attention``'s
qkv / q_norm / k_norm / proj, layer scale, drop path, MLP) with these options, so the weights stay the
backbone's own and ``block_forward(block, x)`` equals ``block(x)``.

The output uses ``F.scaled_dot_product_attention``; the probabilities, when asked for, are computed
separately under ``no_grad`` (they only feed token selection, which has no gradient), so no (B, heads, T, T)
map is kept for backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import Tensor, nn

__all__ = ["attend", "block_forward", "check_timm_block", "gather_tokens"]


def check_timm_block(block: nn.Module) -> None:
    """Fail early, naming the type, if ``block`` is not a timm ``Block`` with standard ``Attention``."""
    if not isinstance(block, Block) or not isinstance(block.attn, Attention):
        raise TypeError(
            f"DCAL / TransFG compute attention from the block's modules (fgvc.layers.blocks) and support "
            f"timm's Block with Attention; got {type(block).__name__} with "
            f"{type(getattr(block, 'attn', None)).__name__}"
        )


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """x (B, T, D), index (B, K) token positions -> (B, K, D)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def attend(
    attn: Attention,
    x: Tensor,
    *,
    query_index: Tensor | None = None,
    extra_kv: tuple[Tensor, Tensor] | None = None,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]:
    """timm ``Attention`` on normed tokens x (B, T, D), with optional query subset and extra keys / values.

    query_index: (B, R) token positions used as queries (default: all T tokens).
    extra_kv: (k, v), each (B, heads, T2, head_dim), appended to this input's keys and values; the softmax
        runs over all T + T2 keys together.
    need_weights: also return the (B, heads, Tq, T + T2) softmax probabilities, computed under ``no_grad``
        (before attention dropout, like ``ViTBackbone.record_attention``).
    Returns the projected output (B, Tq, D), the probabilities or None, and this input's (k, v).
    """
    b, t, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv = attn.qkv(x).reshape(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
    q, k, v = qkv.unbind(0)  # each (B, H, T, hd)
    q, k = attn.q_norm(q), attn.k_norm(k)
    gate_input = x
    if query_index is not None:
        q = q.gather(2, query_index[:, None, :, None].expand(-1, heads, -1, head_dim))  # (B, H, R, hd)
        gate_input = gather_tokens(x, query_index)  # (B, R, D)
    keys, values = k, v
    if extra_kv is not None:
        keys = torch.cat([k, extra_kv[0]], dim=2)  # (B, H, T + T2, hd)
        values = torch.cat([v, extra_kv[1]], dim=2)
    probs = None
    if need_weights:
        with torch.no_grad():
            probs = ((q * attn.scale) @ keys.transpose(-2, -1)).softmax(dim=-1)  # (B, H, Tq, Tk)
    out = F.scaled_dot_product_attention(
        q, keys, values, dropout_p=attn.attn_drop.p if attn.training else 0.0, scale=attn.scale
    )  # (B, H, Tq, hd)
    out = out.transpose(1, 2).reshape(b, q.shape[2], heads * head_dim)  # (B, Tq, H * hd)
    out = getattr(attn, "norm", nn.Identity())(out)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        out = out * gate(gate_input).sigmoid()
    return attn.proj_drop(attn.proj(out)), probs, (k, v)


def block_forward(
    block: Block,
    x: Tensor,
    *,
    query_index: Tensor | None = None,
    extra_kv: tuple[Tensor, Tensor] | None = None,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]:
    """A timm pre-norm ``Block`` on tokens x (B, T, D), computed from its modules (see ``attend``).

    With ``query_index`` the residual stream is that of the query tokens: returns (B, R, D).
    Returns (tokens, probabilities or None, (k, v) of this block's input).
    """
    y, probs, kv = attend(
        block.attn, block.norm1(x), query_index=query_index, extra_kv=extra_kv, need_weights=need_weights
    )
    if query_index is not None:
        x = gather_tokens(x, query_index)  # (B, R, D)
    x = x + block.drop_path1(block.ls1(y))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, probs, kv
