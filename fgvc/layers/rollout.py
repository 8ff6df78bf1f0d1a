"""Attention rollout (Abnar & Zuidema, 2020): how much each token of the input reaches each output token.

Per layer the attention probabilities are averaged over heads and the residual connection is accounted for
as ``0.5 * A + 0.5 * I``; rows are renormalized (they already sum to one for plain softmax attention, but
not after attention dropout or with masked keys) and the layers are multiplied in order, later layers on the
left: ``R = A_L ... A_2 A_1``. Row ``i`` of ``R`` says how the output token ``i`` is made of input tokens;
the CLS row over the patch tokens is the *rollout map* (DCAL selects its local queries with it, and it is a
standard attention visualization).

Everything works on the token axis as given, so any resolution (square or not) and any number of prefix
tokens (CLS, DeiT's distillation token, registers) is handled; the map keeps the patch tokens only.
The products are computed in float32 with autocast off: a product of many bf16 matrices drifts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["attention_rollout", "rollout_map"]


def _check(attentions: Sequence[Tensor], residual: float, last_rows: bool = False) -> tuple[int, int]:
    """Validate the maps; returns (B, T). ``last_rows``: the last map may have fewer query rows."""
    if len(attentions) == 0:
        raise ValueError("attention rollout needs the attention of at least one layer")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    b, t = attentions[0].shape[0], attentions[0].shape[-1]
    for i, attn in enumerate(attentions):
        rows_ok = attn.dim() == 4 and (
            attn.shape[-2] == t or (last_rows and i == len(attentions) - 1 and 1 <= attn.shape[-2] <= t)
        )
        if not rows_ok or attn.shape[0] != b or attn.shape[-1] != t:
            raise ValueError(
                f"attention maps must all be (B, heads, T, T) of one B and T"
                f"{' (the last may have fewer rows)' if last_rows else ''}: got "
                f"{tuple(attentions[0].shape)} and {tuple(attn.shape)}"
            )
    return b, t


def _residual_attention(attn: Tensor, residual: float) -> Tensor:
    """(B, heads, T, T) -> (B, T, T) float32: head mean, ``(1 - residual) A + residual I``, rownorm."""
    a = attn.float().mean(dim=1)  # (B, T, T)
    a = (1.0 - residual) * a + residual * torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    return a / a.sum(dim=-1, keepdim=True)


def attention_rollout(attentions: Sequence[Tensor], *, residual: float = 0.5) -> Tensor:
    """Roll attention out through the layers.

    attentions: per layer, (B, heads, T, T) attention probabilities (rows sum to one), first layer first.
    residual: weight of the identity (the skip connection); ``0.5`` as in the rollout paper and DCAL.
    Returns (B, T, T) float32 ``R = A_L ... A_1`` with ``A_l = rownorm((1 - residual) mean_h(attn_l) +
    residual I)``.
    """
    _check(attentions, residual)
    with torch.autocast(attentions[0].device.type, enabled=False):
        rollout = _residual_attention(attentions[0], residual)  # (B, T, T)
        for attn in attentions[1:]:
            rollout = _residual_attention(attn, residual) @ rollout  # later layers on the left
    return rollout


def rollout_map(
    attentions: Sequence[Tensor],
    num_prefix_tokens: int = 1,
    grid_size: tuple[int, int] | None = None,
    *,
    residual: float = 0.5,
    class_token: bool = True,
) -> Tensor:
    """The CLS row of the rollout over the patch tokens.

    ``class_token=False`` (ViTs without a CLS token): the row of the global token fgvc uses instead, the mean
    of the patch tokens, i.e. the mean of the rollout's patch rows (the rollout is linear in its start
    vector, so this is ``u^T A_L ... A_1`` with ``u`` uniform over the patches); it needs every row of the
    last layer.

    attentions: per layer (B, heads, T, T), T = num_prefix_tokens + patches; the CLS token is index 0. The
        last layer may give only its first rows, (B, heads, Tq, T) with Tq >= 1 (the CLS row is all this
        uses of it). Maps already averaged over heads, (B, 1, ., T), are used as they are.
    Returns (B, N) float32 over the N patch tokens, or (B, rows, cols) when ``grid_size`` is given.

    Only the CLS row is computed, ``r = e_0^T A_L ... A_1`` as a vector from the last layer down: O(L T^2)
    instead of the O(L T^3) of the full product, and no (T, T) matrix is built. With ``M`` the head mean,
    ``s = (1 - residual) M 1 + residual`` the row sums and
    ``A = diag(1 / s) ((1 - residual) M + residual I)``, each step is ``r <- (1 - residual) (r / s) M + residual (r / s)``: one pass for the row sums, one
    vector-matrix product. For softmax maps ``s`` is 1 up to rounding (float32 rows of a softmax sum to 1
    within ~1e-6), so the renormalization changes nothing but keeps other maps (masked keys, dropout) right.
    """
    if class_token and num_prefix_tokens < 1:
        raise ValueError("the rollout map is the CLS row: it needs a CLS token (num_prefix_tokens >= 1)")
    b, t = _check(attentions, residual, last_rows=class_token)
    with torch.autocast(attentions[0].device.type, enabled=False):
        row = torch.zeros(b, 1, t, device=attentions[0].device, dtype=torch.float32)  # (B, 1, T)
        if class_token:
            row[:, :, 0] = 1.0
        else:  # the mean of the patch tokens
            row[:, :, num_prefix_tokens:] = 1.0 / (t - num_prefix_tokens)
        for attn in reversed(attentions):  # row is zero beyond the rows given (only the last layer has fewer)
            m = attn[:, 0].float() if attn.shape[1] == 1 else attn.float().mean(dim=1)  # (B, Tq, T)
            tq = m.shape[1]
            s = (1.0 - residual) * m.sum(dim=-1) + residual  # (B, Tq) row sums of (1 - r) M + r I
            w = row[:, :, :tq] / s[:, None, :]  # (B, 1, Tq)
            row = (1.0 - residual) * (w @ m)  # (B, 1, T)
            row[:, :, :tq] += residual * w
    cls_row = row[:, 0, num_prefix_tokens:]  # (B, N)
    if grid_size is None:
        return cls_row
    rows, cols = grid_size
    if cls_row.shape[1] != rows * cols:
        raise ValueError(f"expected {rows}x{cols}={rows * cols} patch tokens, got {cls_row.shape[1]}")
    return cls_row.reshape(-1, rows, cols)
