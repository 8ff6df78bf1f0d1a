"""DCAL: dual cross-attention learning (Zhu et al., CVPR 2022) on the shared backbone.

There is no official code: this follows the paper, and each choice the paper leaves open is named here
(and in docs/methods.md). Branches, all on one ``ViTBackbone`` (L blocks):

* **SA**: the plain ViT (pooled token after the final norm, a linear head), the ``vit`` method's computation.
* **GLCA** (one block beside SA block p, ``glca_block``, default the last): the ``ceil(R * N)`` patch tokens
  with the highest CLS attention rollout over blocks 1..p-1 (``fgvc.layers.rollout``; R = ``glca_ratio``,
  the ceil taken with a 1e-6 tolerance so that ``0.55 * 100`` is not rounded up) query all tokens of the
  same input. Its block has its own weights, initialised as a copy of SA block p so pretrained weights help
  from the first step; its own norm (a copy of the final norm), the mean over the queries and its own head
  classify. ``glca_cls_token=True`` adds CLS as a query and classifies it instead (the paper's re-ID text
  implies one, its FGVC text does not; the default follows the FGVC text). The selection is under
  ``no_grad`` (a top-k has no gradient); prefix tokens are never queries.
* **PWCA** (training only, no new weights, in the last ``pwca_blocks`` blocks, default all L as the paper):
  each image's queries attend over its own keys and values concatenated with those of a distractor (a
  random derangement of the batch, drawn from torch's global generator so ``fgvc.fit``'s seed reproduces
  it; the distractor's keys and values are the SA branch's). Target: the image's own label. Batches of one
  image skip it.
* **Loss**: Kendall et al.'s uncertainty weighting, as the paper: ``0.5 * sum_i (exp(-w_i) L_i + w_i)`` over
  the SA, GLCA and PWCA cross-entropies, ``w`` (``loss_weights``) learned and not decayed.
* **Prediction**: ``log(0.5 * (softmax(SA) + softmax(GLCA)))``, so argmax is the paper's summed
  probabilities and the evaluation loss is that prediction's NLL. ``embedding`` is ``[SA, GLCA]``
  features (B, 2D); ``selection_map`` the rollout (B, rows, cols) that chose the GLCA queries; ``extras``
  the branches' logits (the loss reads them), ``glca_queries``, ``pwca_pairs`` and, in ``explain`` or with
  ``return_glca_attention``, ``glca_attention``.

The blocks are computed from the timm block's modules (``fgvc.layers.blocks.block_forward``, EVA-02 too),
with fused attention wherever the rollout does not need a block's whole map: the rollout's blocks give
their probabilities once (explicit attention at inference and, on ``EXPLICIT_TRAINING_DEVICES``, in
training; elsewhere fused attention plus the probabilities apart under ``no_grad``), detached and kept as
their head mean only; block p-1 gives its CLS row only; and the rollout is propagated as a vector
(``rollout_map``), never as a (T, T) product. What this costs beside the plain ViT: docs/results.md.
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
from .declare import IMAGENET_MEAN, IMAGENET_STD, MethodRecipes
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


def _layer(
    block: nn.Module, sa: Tensor, pw: Tensor, *, probs: ProbsRequest | None, pairs: Tensor | None, first: bool,
    rope: dict[str, Tensor],
) -> tuple[Tensor, Tensor | None, Tensor]:
    """One block of the SA stream (B, T, D) and, with ``pairs``, of the PWCA stream: image b's queries over
    [its own; image pairs[b]'s] keys and values (from SA). One function, so that activation checkpointing
    (``run_block``) keeps only the two streams' inputs. Returns (SA output, SA probabilities or None, PWCA
    stream); ``first``: the PWCA stream still is the SA stream, so SA's q, k, v serve both."""
    sa_next, maps, (q, k, v) = block_forward(block, sa, probs=probs, **rope)
    if pairs is not None:  # image 1's queries over [image 1; image 2] k, v
        pw, _, _ = block_forward(block, sa if first else pw, extra_kv=(k[pairs], v[pairs]),
                                 qkv=(q, k, v) if first else None, **rope)
    return sa_next, maps, pw


@register_model("dcal")
class DCAL(FGVCModel):
    """Dual cross-attention learning: SA + GLCA (local queries from the rollout) + PWCA (training only).

    Options: ``glca_ratio`` (0.1: share of patch tokens used as GLCA queries), ``glca_block`` (-1: the SA
    block GLCA runs beside, at least the second), ``pwca`` (True; False turns the PWCA branch off, an
    ablation; it adds no parameters either way), ``pwca_blocks`` (the paper's T: PWCA in the last T blocks;
    None, the default, is all L as the paper; fewer blocks make the training step cheaper, docs/results.md),
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
                request = ProbsRequest(average_heads=True, explicit=explicit)
            else:  # block p-1: only the CLS row (fused output; all rows without CLS); blocks from p on: no map
                request = ProbsRequest(rows=1 if bb.has_class_token else None, average_heads=True) if i < p else None
            with_pwca = pairs is not None and i >= self.pwca_start
            sa, probs, pw = self.run_block(_layer, block, sa, pw, probs=request, pairs=pairs if with_pwca else None,
                                           first=i == self.pwca_start, rope=rope)
            if probs is not None:
                maps.append(probs)

        # GLCA: local queries from the rollout over blocks 1..p-1, global keys / values
        score = rollout_map(maps, prefix, class_token=bb.has_class_token)  # (B, N), no gradient
        n = t - prefix
        queries = score.topk(local_query_count(self.glca_ratio, n), dim=-1).indices  # (B, R)
        query_index = queries + prefix
        if self.glca_cls_token:  # CLS (token 0) as the first query: R + 1 queries
            query_index = torch.cat([torch.zeros_like(query_index[:, :1]), query_index], dim=1)
        g, glca_probs, _ = self.run_block(
            block_forward, self.glca, glca_input, query_index=query_index,
            probs=ProbsRequest() if glca_attention else None, **rope,
        )  # (B, R [+ 1], D), (B, heads, R [+ 1], T) or None
        g = self.glca_norm(g)
        glca_feature = g[:, 0] if self.glca_cls_token else g.mean(dim=1)  # (B, D)
        glca_logits = self.glca_head(glca_feature)

        sa_feature = bb.pool(bb.norm(sa))  # (B, D)
        sa_logits = self.head(sa_feature)
        rows, cols = bb.grid_size
        selection_map = score.reshape(b, rows, cols) if rows * cols == n else None
        embedding = torch.cat([sa_feature, glca_feature], dim=-1)  # (B, 2D)
        extras = dict(sa_logits=sa_logits, glca_logits=glca_logits, glca_queries=queries)
        if glca_probs is not None:  # the R local queries' rows (the CLS query's row left out)
            extras["glca_attention"] = glca_probs[:, :, 1:] if self.glca_cls_token else glca_probs
        if pairs is not None:
            extras.update(pwca_logits=self.head(bb.pool(bb.norm(pw))), pwca_pairs=pairs)
        logp = torch.stack([sa_logits.float().log_softmax(-1), glca_logits.float().log_softmax(-1)])
        logits = torch.logsumexp(logp, dim=0) - math.log(2.0)  # log(0.5 (p_SA + p_GLCA)), (B, C)
        return ModelOutput(logits=logits, embedding=embedding, selection_map=selection_map, extras=extras)

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


# ------------------------------------------------------------------------------------------- recipes
PAPER = "Zhu et al.: Dual Cross-Attention Learning for Fine-Grained Visual Categorization and Object Re-Identification, CVPR 2022, Table 1"


def recipe_settings(dataset: str, size: int) -> tuple[dict, dict, dict, list[str]]:
    """DCAL has no official code: the paper's implementation details (448 px, FGVC); the rest fgvc's choice."""
    model = dict(
        drop_path_rate=0.1,  # fgvc's choice (the paper follows DeiT, whose recipe uses stochastic depth 0.1)
        # fgvc's choice: the paper is silent; DeiT's pipeline (which it follows) and both official codes of the
        # other methods normalize with the ImageNet statistics
        backbone_kwargs=dict(
            pretrained_cfg_overlay=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bicubic")
        ),
    )
    # paper: resized to 550 x 550, randomly cropped to 448 x 448; 224 px: S / 0.875 short side (fgvc's choice)
    resize: Any = [550, 550] if size == 448 else int(size / 0.875)
    data = dict(resize=resize, trivial_augment=False, random_erasing=0.0)
    train = dict(
        epochs=100,  # paper
        batch_size=16,  # paper
        optimizer="adamw",  # paper: Adam with weight decay 0.05 (decoupled, as DeiT's AdamW)
        lr=5e-4,  # paper: lr 5e-4 / 512 x batch
        lr_base_batch_size=512,
        weight_decay=0.05,  # paper
        label_smoothing=0.0,  # fgvc's choice (the paper mentions none)
        grad_clip=None,  # fgvc's choice (the paper mentions none)
    )  # cosine decay: paper; warmup (one epoch) and the final lr (1e-6): fgvc's defaults
    notes = [
        "DCAL paper (no official code): Adam with weight decay 0.05 (AdamW), lr 5e-4 / 512 x batch (batch 16),",
        "cosine decay, 100 epochs, images resized to 550 x 550 and cropped to 448. fgvc's choice where the paper",
        "is silent: warmup one epoch, stochastic depth 0.1, ImageNet mean / std, the 224 px resize (S / 0.875).",
    ]
    return model, data, train, notes


RECIPES = MethodRecipes(
    settings=recipe_settings,
    expected={
        ("cub", 448): (91.4, f"{PAPER} (ViT-B/16: 90.8 -> 91.4)"),
        ("cars", 448): (93.4, f"{PAPER} (ViT-B/16: 92.5 -> 93.4)"),
        ("aircraft", 448): (91.5, f"{PAPER} (ViT-B/16: 90.0 -> 91.5)"),
    },
    not_reported=lambda dataset, size: f"{PAPER}: reports 448 px only (CUB, Cars, Aircraft)",
)
