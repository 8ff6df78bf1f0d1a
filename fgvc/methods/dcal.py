"""DCAL: dual cross-attention learning (Zhu et al., CVPR 2022) on the shared backbone.

There is no official code; this follows the paper, and every choice the paper leaves open is written here.

Branches (all on one ``ViTBackbone``; L = depth, blocks 1-indexed in this text):

* **SA** (self-attention): the plain ViT. The backbone's pooled token (CLS after the final norm) and a
  linear head. It is exactly the ``vit`` method's computation.
* **GLCA** (global-local cross-attention), M = 1 block:
  - queries: the ``ceil(R * N)`` patch tokens (N patch tokens, R = ``glca_ratio``, 0.1 as the paper for
    FGVC) with the highest CLS attention rollout (``fgvc.layers.rollout``: per layer the head mean,
    ``0.5 A + 0.5 I``, rows renormalized, multiplied). The ceil is taken with a 1e-6 tolerance so that
    floating-point products such as ``0.55 * 100 = 55.00000000000001`` do not round up to an extra
    query. Prefix tokens (CLS, distillation) are never queries; the selection is under ``no_grad`` (a
    top-k has no gradient).
  - keys and values: all tokens (prefix and patches) of the same input.
  - position: in parallel with SA block p (option ``glca_block``, Python index into the blocks, default -1:
    the last block). It reads the output of block p-1 and the rollout over blocks 1..p-1, i.e. the
    attention that produced its input (the paper rolls out "up to the i-th layer"; with GLCA beside block p
    this is the information that reached block p). Its output goes only to its own classifier, never back
    into SA.
  - weights: its own (not shared with SA); a full pre-norm block (norm, cross-attention, residual from each
    query's own input token, norm, MLP, residual), **initialised as a copy of SA block p** so that
    pretrained weights help from the first step.
  - classifier: its own LayerNorm (initialised as a copy of the backbone's final norm) applied to every GLCA
    output token, then the **mean over the R query tokens** (no CLS among the queries, so exactly
    ``ceil(R * N)`` queries), then its own linear head. ``glca_cls_token=True`` adds the CLS token as one
    more query (first, R + 1 queries) and classifies its output alone (after the norm) instead of the mean:
    the paper's re-identification text speaks of "the final class tokens of SA and GLCA", which implies a
    CLS query; its FGVC text selects the R local queries only, and no official code settles it, so the
    default stays the mean of the R local queries (the FGVC description, and the checkpoints trained so far).
* **PWCA** (pair-wise cross-attention), T = all L blocks by default (the paper's T = 12 for 12-block
  models), **training only** (not run at inference, zero cost there), shares every SA weight (no new
  parameters): SA norm and head classify its output. ``pwca_blocks=T`` runs it in the last T blocks only:
  before block L-T+1 the PWCA stream is the SA stream itself (same tensors, so no second pass and the PWCA
  loss's gradient flows through SA's early blocks), and the first PWCA block takes SA's q, k, v.
  - pairing: inside the model, a uniformly random derangement of the batch (a permutation without fixed
    points, so an image is never its own distractor), drawn from torch's global generator (so ``fgvc.fit``'s
    seed makes it reproducible). Batches of one image skip PWCA (no distractor exists).
  - in every block, the queries of image 1 attend over the keys and values of image 1 concatenated with
    those of image 2: one softmax over the 2T keys (T = N + prefix tokens, 2N + 2 for a ViT). Image 1's
    tokens come from the PWCA stream; image 2's keys and values are those of the SA branch at the same
    block (image 2 itself is not contaminated; the paper does not say which stream image 2's keys and
    values come from).
  - target: image 1's label.
* **Loss** (training): the uncertainty weighting of Kendall et al. used by the paper,
  ``0.5 * sum_i (exp(-w_i) L_i + w_i)`` over the cross-entropies of SA, GLCA and PWCA (PWCA omitted when it
  did not run). ``w`` (``loss_weights``, 3 parameters, start at 0) are trained with the model; it is 1-D,
  so ``fgvc.fit`` does not decay it. Label smoothing goes to every cross-entropy.
* **Weight decay** (AdamW 0.05 in the recipes, as DeiT's code the paper builds on): timm's rule, through
  ``model.no_weight_decay()``: besides the 1-D parameters, the position embedding and the class (and
  distillation) tokens are not decayed.
* **Prediction** (training and evaluation alike): ``logits = log(0.5 * (softmax(SA) + softmax(GLCA)))``:
  log-probabilities of the averaged prediction, so ``argmax`` / top-k are those of the summed probabilities
  (the paper's rule), what ``fit`` reports as train top-1 is the prediction evaluation scores, and the
  evaluation loss (cross-entropy of ``logits`` in eval mode) is the NLL of that prediction. The branches' raw
  logits are always in ``extras``: ``sa_logits``, ``glca_logits``, and in training ``pwca_logits`` (when
  PWCA ran); the training loss reads those. ``embedding`` = ``[SA feature, GLCA feature]`` (B, 2D) for
  retrieval. ``similarity`` is the rollout map (B, rows, cols) that chose the GLCA queries.
* **Other outputs**: ``extras`` also holds ``pwca_pairs`` (training, the distractor index of each image),
  ``glca_queries`` (B, R) patch indices (0 = first patch token); ``glca_attention`` (B, heads, R, T) in
  ``explain`` (the rows of the R local queries, also with ``glca_cls_token``) or when
  ``model.return_glca_attention`` is set.

Implementation: the blocks are computed from the timm block's modules (``fgvc.layers.blocks.block_forward``;
EVA-02's ``EvaBlock`` too, every probability that of q and k after its rotary embedding, GLCA's queries each
rotated for its own patch), attention by ``F.scaled_dot_product_attention`` (fused) except where the rollout
needs a whole map:

* blocks 1..p-2 (all rows of their head-mean attention enter the rollout): one explicit attention
  (``softmax(q k^T * scale) @ v``) gives the output and the probabilities, so q k^T is computed once. At
  inference always; in training on the devices in ``EXPLICIT_TRAINING_DEVICES`` (CPU, where explicit
  attention with its backward costs about what fused attention does). Elsewhere (CUDA) training keeps fused
  attention and computes the probabilities apart under ``no_grad``, so no (B, heads, T, T) map is kept for
  backward. Either way the probabilities are detached and only their head mean, (B, 1, T, T) float32, is kept
  for the rollout (on CPU without gradient it is taken one image at a time, while that image's map is in
  the caches);
* block p-1: fused attention plus the CLS row of its probabilities only, the one row of the last layer the
  CLS row of the rollout uses;
* blocks p..L, GLCA (queries projected for its R tokens only) and PWCA (over the concatenated keys and
  values; image 2's are the SA block's own k, v, not projected again) use fused attention. In block 1 the
  PWCA stream's input is the SA stream's (the embedded image), so its q, k, v are SA's, not projected again.

The rollout map is propagated as a vector (``fgvc.layers.rollout.rollout_map``): no (T, T) product.

Cost, as ratios of matmul MACs to the plain ViT's (exact; ``benchmarks/method_cost.py`` measures them and
the times, deit_tiny with 12 blocks): inference adds the rollout over blocks 1..p-1 and one GLCA block over R
queries, 1.02x at 224 and 448 px. Training adds PWCA, a second pass through every PWCA block with its
backward over twice the keys: the ViT's training step again plus the attention's share (1.11x at 224, 1.38x
at 448), so with PWCA in every block (the default, as the paper) a training step has more than twice the
ViT's MACs (2.13x / 2.39x) whatever GLCA and the rollout cost. ``pwca_blocks=T`` keeps PWCA in the last T
blocks only: T = 6 gives 1.57x / 1.70x, T = 3 1.28x / 1.35x.

Paper, Table 1 (448 px, top-1 %, baseline -> DCAL): CUB-200-2011: DeiT-T 82.1 -> 84.6, DeiT-S 85.8 ->
87.6, DeiT-B 88.0 -> 88.8, ViT-B 90.8 -> 91.4; Stanford Cars ViT-B 92.5 -> 93.4; FGVC-Aircraft ViT-B
90.0 -> 91.5.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.blocks import ProbsRequest, block_forward, check_timm_block
from ..layers.rollout import attention_rollout, rollout_map
from .base import FGVCModel, ModelOutput, register_model
from .explain import (
    Explanation,
    GridMap,
    MapInfo,
    SelectionStep,
    backbone_attention,
    explaining,
    scatter_to_grid,
    tokens_to_grid,
)

__all__ = ["DCAL", "local_query_count", "random_derangement"]

# devices where training also uses explicit attention for the rolled-out blocks (see the module doc)
EXPLICIT_TRAINING_DEVICES = ("cpu",)


def local_query_count(ratio: float, num_patches: int) -> int:
    """``ceil(ratio * N)`` GLCA queries, at least 1; the 1e-6 tolerance absorbs floating-point error."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"glca_ratio must be in (0, 1], got {ratio}")
    return min(max(math.ceil(ratio * num_patches - 1e-6), 1), num_patches)


def random_derangement(n: int, device: torch.device | str | None = None) -> Tensor:
    """A uniformly random permutation of ``range(n)`` with no fixed point (rejection sampling, ~e tries)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    identity = torch.arange(n)
    while True:
        perm = torch.randperm(n)
        if (perm != identity).all():
            return perm.to(device)


@register_model("dcal")
class DCAL(FGVCModel):
    """Dual cross-attention learning: SA + GLCA (local queries from the rollout) + PWCA (training only).

    Options: ``glca_ratio`` (0.1: share of patch tokens used as GLCA queries), ``glca_block`` (-1: the SA
    block GLCA runs beside, at least the second), ``pwca`` (True; False turns the PWCA branch off, an
    ablation; it adds no parameters either way), ``pwca_blocks`` (the paper's T: PWCA in the last T blocks;
    None, the default, is all L as the paper; fewer blocks make the training step cheaper, see the module doc),
    ``glca_cls_token`` (False: GLCA's feature is the mean of its R local query outputs; True: CLS is one more
    GLCA query and its output is the feature, the reading of the paper's re-identification text).
    """

    display_name = "DCAL"
    own_maps = {
        "glca_queries": MapInfo("GLCA queries", "DCAL: GLCA local queries (top rollout patches)", mask=True),
        "glca_attention": MapInfo("GLCA attention", "DCAL: GLCA attention from the local queries", per_head=True),
    }
    selection_reads_attention = True
    variants = {
        "nopwca": dict(pwca=False),  # the PWCA branch off: PWCA's share of the training step
        "T6": dict(pwca_blocks=6),  # PWCA in the last 6 blocks only (the paper's T)
    }

    def __init__(
        self,
        *,
        glca_ratio: float = 0.1,
        glca_block: int = -1,
        pwca: bool = True,
        pwca_blocks: int | None = None,
        glca_cls_token: bool = False,
        **common: Any,
    ) -> None:
        options = dict(
            glca_ratio=glca_ratio, glca_block=glca_block, pwca=pwca, pwca_blocks=pwca_blocks,
            glca_cls_token=glca_cls_token,
        )
        super().__init__(options=options, **common)
        bb = self.backbone
        for block in bb.blocks:
            check_timm_block(block)
        depth = bb.depth
        if not -depth <= glca_block < depth or glca_block % depth == 0:
            raise ValueError(
                f"glca_block={glca_block} must index blocks 1..{depth - 1} (or -{depth - 1}..-1) of the "
                f"{depth}-block backbone: GLCA needs at least one block before it for the rollout"
            )
        if pwca_blocks is not None and not 1 <= pwca_blocks <= depth:
            raise ValueError(f"pwca_blocks={pwca_blocks} must be between 1 and the backbone's {depth} blocks (or None: all)")
        rows, cols = bb.grid_size
        self.num_queries = local_query_count(glca_ratio, rows * cols)  # validates glca_ratio
        self.glca_ratio = glca_ratio
        self.glca_index = glca_block % depth
        self.pwca = pwca
        self.glca_cls_token = bool(glca_cls_token)
        self.pwca_start = depth - (depth if pwca_blocks is None else pwca_blocks)  # first block with PWCA
        dim = bb.embed_dim
        self.head = nn.Linear(dim, self.num_classes)  # SA (and PWCA) classifier
        self.glca = copy.deepcopy(bb.blocks[self.glca_index])  # own weights, pretrained start
        self.glca_norm = copy.deepcopy(bb.norm)
        self.glca_head = nn.Linear(dim, self.num_classes)
        for head in (self.head, self.glca_head):  # new heads start at zero, as the vit and glsim methods
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.loss_weights = nn.Parameter(torch.zeros(3))  # uncertainty weights w (SA, GLCA, PWCA)
        # True: every forward also returns extras["glca_attention"], (B, heads, R, T) GLCA probabilities from
        # the R local queries (``explain`` asks for them itself). Off by default: no extra cost.
        self.return_glca_attention = False

    def forward(self, x: Tensor) -> ModelOutput:
        return self._forward(x, glca_attention=self.return_glca_attention)

    def _forward(self, x: Tensor, *, glca_attention: bool) -> ModelOutput:
        """The forward of the module doc; ``glca_attention``: also return GLCA's attention in ``extras``."""
        bb = self.backbone
        prefix, p = bb.num_prefix_tokens, self.glca_index
        sa = bb.embed(x)  # (B, T, D)
        b, t, _ = sa.shape
        run_pwca = self.training and self.pwca and b > 1
        pairs = random_derangement(b, device=sa.device) if run_pwca else None
        pw = sa  # the PWCA stream; before block pwca_start it is the SA stream itself
        explicit = not torch.is_grad_enabled() or sa.device.type in EXPLICIT_TRAINING_DEVICES
        rope = bb.block_kwargs()  # EVA-02's rotary embedding ({"rope": ...}), else nothing
        maps: list[Tensor] = []  # per block before GLCA: (B, 1, T, T) head-mean attention, (B, 1, 1, T) last
        glca_input = sa
        for i, block in enumerate(bb.blocks):
            if i == p:
                glca_input = sa
            if i < p - 1:  # the rollout needs all rows: one explicit attention gives output and map
                sa_next, probs, (q, k, v) = block_forward(
                    block, sa, probs=ProbsRequest(average_heads=True, explicit=explicit), **rope
                )
            else:  # block p-1: only the CLS row (fused output; all rows without CLS); blocks from p on: no map
                cls_row = ProbsRequest(rows=1 if bb.has_class_token else None, average_heads=True)
                sa_next, probs, (q, k, v) = block_forward(block, sa, probs=cls_row if i < p else None, **rope)
            if probs is not None:
                maps.append(probs)
            if pairs is not None and i >= self.pwca_start:  # image 1's queries over [image 1; image 2] k, v
                first = i == self.pwca_start  # the streams still share their input: q, k, v are SA's
                pw, _, _ = block_forward(
                    block, sa if first else pw, extra_kv=(k[pairs], v[pairs]), qkv=(q, k, v) if first else None,
                    **rope,
                )
            sa = sa_next

        # GLCA: local queries from the rollout over blocks 1..p-1, global keys / values
        score = rollout_map(maps, prefix, class_token=bb.has_class_token)  # (B, N), no gradient
        n = t - prefix
        queries = score.topk(local_query_count(self.glca_ratio, n), dim=-1).indices  # (B, R)
        query_index = queries + prefix
        if self.glca_cls_token:  # CLS (token 0) as the first query: R + 1 queries
            query_index = torch.cat([torch.zeros_like(query_index[:, :1]), query_index], dim=1)
        g, glca_probs, _ = block_forward(
            self.glca, glca_input, query_index=query_index, probs=ProbsRequest() if glca_attention else None, **rope
        )  # (B, R [+ 1], D), (B, heads, R [+ 1], T) or None
        g = self.glca_norm(g)
        glca_feature = g[:, 0] if self.glca_cls_token else g.mean(dim=1)  # (B, D)
        glca_logits = self.glca_head(glca_feature)

        sa_feature = bb.pool(bb.norm(sa))  # (B, D)
        sa_logits = self.head(sa_feature)
        rows, cols = bb.grid_size
        similarity = score.reshape(b, rows, cols) if rows * cols == n else None
        embedding = torch.cat([sa_feature, glca_feature], dim=-1)  # (B, 2D)
        extras = dict(sa_logits=sa_logits, glca_logits=glca_logits, glca_queries=queries)
        if glca_probs is not None:  # the R local queries' rows (the CLS query's row left out)
            extras["glca_attention"] = glca_probs[:, :, 1:] if self.glca_cls_token else glca_probs
        if pairs is not None:
            extras.update(pwca_logits=self.head(bb.pool(bb.norm(pw))), pwca_pairs=pairs)
        logp = torch.stack([sa_logits.float().log_softmax(-1), glca_logits.float().log_softmax(-1)])
        logits = torch.logsumexp(logp, dim=0) - math.log(2.0)  # log(0.5 (p_SA + p_GLCA)), (B, C)
        return ModelOutput(logits=logits, embedding=embedding, similarity=similarity, extras=extras)

    def loss(self, output: ModelOutput, targets: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
        """Training: ``0.5 * sum_i (exp(-w_i) CE_i + w_i)`` over SA, GLCA, PWCA (the branches' raw logits in
        ``extras``, those present). Evaluation mode: cross-entropy of ``output.logits`` (the averaged SA + GLCA
        prediction's log-probabilities).
        """
        if not self.training:
            return F.cross_entropy(output.logits, targets, label_smoothing=label_smoothing)
        total = output.extras["sa_logits"].new_zeros((), dtype=torch.float32)
        for w, key in zip(self.loss_weights, ("sa_logits", "glca_logits", "pwca_logits"), strict=True):
            logits = output.extras.get(key)
            if logits is not None:
                ce = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
                total = total + 0.5 * (torch.exp(-w) * ce + w)
        return total

    def explain(self, x: Tensor) -> Explanation:
        """The plain ViT's maps (the SA stream's attention and rollout), GLCA's queries and GLCA's attention."""
        with explaining(self):
            output = self._forward(x, glca_attention=True)
            attention, rollout = backbone_attention(self.backbone, x)
        grid = self.backbone.grid_size
        prefix = self.backbone.num_prefix_tokens
        queries = output.extras["glca_queries"]  # (B, R)
        a = output.extras["glca_attention"].float()  # (B, heads, R, T)
        glca = GridMap(tokens_to_grid(a.mean(1).mean(1)[:, prefix:], grid),  # heads and queries averaged
                       heads=tokens_to_grid(a.mean(2)[:, :, prefix:], grid))  # (B, heads, rows, cols)
        maps = {"rollout": rollout, "glca_queries": GridMap(scatter_to_grid(queries, torch.ones_like(queries), grid)),
                "glca_attention": glca}
        return Explanation(output=output, attention=attention, maps=maps)

    def selection_steps(self, tokens: Tensor, attentions: Sequence[Tensor] | None) -> list[SelectionStep]:
        """The rollout's CLS row over blocks 1..p-1 and its top-R, as DCAL runs it; and for reference the full
        rollout (all rows, T x T products), which is what the GLSim paper counts."""
        prefix, p = self.backbone.num_prefix_tokens, self.glca_index
        r = self.num_queries
        maps = list(attentions or [])
        cls_maps = maps[: p - 1] + [maps[p - 1][:, :, :1]]  # the CLS row of block p-1 is the only one used
        return [
            SelectionStep(f"rollout of blocks 1-{p} (CLS row) + top-{r}", lambda: rollout_map(cls_maps, prefix).topk(r, -1)),
            SelectionStep(f"full rollout of blocks 1-{p} (T x T products) + top-{r}",
                          lambda: attention_rollout(maps[:p])[:, 0, prefix:].topk(r, -1), reference=True),
        ]
