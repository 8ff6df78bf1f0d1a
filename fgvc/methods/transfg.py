"""TransFG (He et al., AAAI 2022) on the shared backbone, following the official code (TACJu/TransFG,
``models/modeling.py``).

* **Part selection**: the raw attention probabilities of the first L-1 blocks are multiplied per head,
  later layers on the left (``A_{L-1} ... A_1``, no identity term, no head averaging: unlike the
  rollout); for every head the argmax over the patch tokens of the CLS row picks one token. Ties go to
  the first index. The selection has no gradient.
* **Part block**: the picked tokens of block L-1's output (before the final norm), preceded by the prefix
  tokens (CLS; DeiT-distilled also keeps its distillation token), go through one more transformer block,
  the final norm and the head on the pooled token (the CLS after the norm for a ViT, as in the official
  code). The official encoder has L-1 ordinary layers plus this part layer, so here the part block **is the
  backbone's last block** (it never sees all tokens) and the part norm is the backbone's final norm (the
  official code loads it from the pretrained encoder norm): no weight is left unused.
* **Part block initialisation** (option ``part_block_init``): ``"random"`` (default) reproduces the official
  code, which does not load pretrained weights into the part layer: the block is re-initialised the way the
  official ``Block`` starts (attention projections with PyTorch's default Linear init, MLP weights Xavier
  uniform, MLP biases normal with std 1e-6, norms at ones / zeros). ``"pretrained"`` keeps the backbone's
  pretrained last block.
* **Loss**: in training, cross-entropy (label smoothing passed through) plus the contrastive loss of the
  official ``con_loss`` on the L2-normalized pooled features: ``1 - cos`` for same-label pairs,
  ``max(cos - 0.4, 0)`` for different-label pairs, summed over all B^2 ordered pairs (the diagonal included)
  and divided by B^2. In evaluation mode, cross-entropy only, as the official ``valid`` (``train.py``), so
  the reported validation loss is the official one.
* **Dropout** (option ``dropout``, default 0.1 as the official ``configs.py`` ``dropout_rate``): on the
  embeddings after the position embedding and after both MLP layers of every block (the official
  ``Embeddings`` and ``Mlp``), the part block included; attention probabilities and the attention output
  projection keep none (the official ``attention_dropout_rate`` is 0).
* **Overlapping patches** (the official ``--split overlap --slide_step 12``): the common option
  ``patch_stride=12`` (``fgvc.backbones.vit.OverlapPatchEmbed``): the patch-embedding convolution keeps its
  kernel (and pretrained weights) but moves by stride S, so the grid is ``(H - P) // S + 1`` by
  ``(W - P) // S + 1``. The model is built with that grid, so pretrained position embeddings are resampled
  once, from their own grid to it, by the common option ``pos_embed_interpolation`` (the recipes'
  ``"scipy_zoom"`` is the official ``scipy.ndimage.zoom(order=1)``; unset, timm's bicubic). Part indices are
  over that grid (``backbone.grid_size``).
* **EVA-02** (rotary embeddings): the blocks are computed from timm's ``EvaBlock`` modules, the probabilities
  from q and k after the rotary embedding; in the part block each part keeps its patch's rotary embedding.

Implementation: the first L-1 blocks are computed from their modules (``fgvc.layers.blocks.block_forward``)
with fused attention for the output and the probabilities computed under ``no_grad`` for the selection,
so no (B, heads, T, T) map is kept for backward.

Outputs: ``logits``, ``embedding`` (the pooled feature, also ``extras["features"]`` for the loss),
``extras["part_indices"]`` (B, heads) patch indices (0 = first patch token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.blocks import ProbsRequest, block_forward, check_timm_block, gather_tokens
from .base import FGVCModel, ModelOutput, register_model
from .explain import (
    Explanation,
    GridMap,
    MapInfo,
    SelectionStep,
    backbone_attention,
    explaining,
    scatter_to_grid,
)

__all__ = ["TransFG", "contrastive_loss", "part_selection", "reset_block_official", "set_official_dropout"]


def part_selection(attentions: Sequence[Tensor], num_prefix_tokens: int = 1, class_token: bool = True) -> Tensor:
    """Per-head argmax of the CLS row of ``A_{L-1} ... A_1`` over the patch tokens.

    attentions: per layer (B, heads, T, T) probabilities, first layer first (the first L-1 blocks).
    Returns (B, heads) int64 patch indices (0 = first patch token). Only the CLS row is multiplied out.
    ``class_token=False`` (ViTs without one): the row of the mean of the patch tokens, the mean of the patch rows.
    """
    if len(attentions) == 0:
        raise ValueError("part selection needs the attention of at least one layer")
    with torch.no_grad(), torch.autocast(attentions[0].device.type, enabled=False):
        last = attentions[-1].float()
        # (B, H, 1, T): the global token's row of the last layer (CLS, or the mean of the patch rows)
        row = last[:, :, :1] if class_token else last[:, :, num_prefix_tokens:].mean(2, keepdim=True)
        for attn in reversed(attentions[:-1]):
            row = row @ attn.float()  # (B, H, 1, T)
    return row[:, :, 0, num_prefix_tokens:].argmax(dim=-1)  # (B, H)


def contrastive_loss(features: Tensor, labels: Tensor, margin: float = 0.4) -> Tensor:
    """TransFG's contrastive loss. features (B, D), labels (B,) -> scalar.

    On L2-normalized features: ``1 - cos`` for same-label pairs, ``max(cos - margin, 0)`` otherwise, summed
    over the B x B ordered pairs and divided by B^2.
    """
    b = features.shape[0]
    z = F.normalize(features.float(), dim=-1)  # (B, D)
    cos = z @ z.t()  # (B, B)
    same = labels[:, None] == labels[None, :]  # (B, B)
    pair_loss = torch.where(same, 1.0 - cos, (cos - margin).clamp(min=0.0))
    return pair_loss.sum() / (b * b)


@torch.no_grad()
def reset_block_official(block: nn.Module) -> None:
    """Re-initialise a block as the official TransFG ``Block`` starts (its part layer is never pretrained).

    Linear / norm / layer-scale modules get their own default init; MLP Linear layers then Xavier uniform
    weights and normal(std=1e-6) biases, as the official ``Mlp._init_weights``.
    """
    for module in block.modules():
        if module is not block and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    if hasattr(block, "reset_parameters"):  # the block's own parameters (EVA's layer scales gamma_1, gamma_2)
        block.reset_parameters()
    for module in block.mlp.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.normal_(module.bias, std=1e-6)


def set_official_dropout(backbone: nn.Module, p: float) -> None:
    """Dropout ``p`` where the official TransFG has it: after the position embedding and in every MLP."""
    backbone.vit.pos_drop = nn.Dropout(p)
    for block in backbone.blocks:
        mlp = block.mlp
        if not (hasattr(mlp, "drop1") and hasattr(mlp, "drop2")):
            raise ValueError(f"TransFG's dropout needs timm's Mlp (drop1, drop2), got {type(mlp).__name__}")
        mlp.drop1, mlp.drop2 = nn.Dropout(p), nn.Dropout(p)


@register_model("transfg")
class TransFG(FGVCModel):
    """TransFG: per-head part selection from the attention product, a part block, contrastive loss.

    Options: ``part_block_init`` (``"random"``, official; or ``"pretrained"``), ``dropout`` (0.1, official:
    embeddings and MLPs). The official overlapping 16 px patches are the common option ``patch_stride=12``.
    """

    display_name = "TransFG"
    own_maps = {"parts": MapInfo("TransFG parts", "TransFG: selected parts (heads per patch)", mask=True,
                                 per_head=True)}
    selection_reads_attention = True
    # the part block starts from the backbone's last block instead of at random (official): for small
    # pretrained backbones, where a random block is a large share of the network
    variants = {
        "pretrained_part": dict(part_block_init="pretrained"),
        # no dropout: for backbones pretrained without it (the official 0.1 matches Google's ViT pretraining)
        "nodropout": dict(dropout=0.0),
    }

    def __init__(
        self,
        *,
        part_block_init: str = "random",
        dropout: float = 0.1,
        **common: Any,
    ) -> None:
        options = dict(part_block_init=part_block_init, dropout=dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout is a probability in [0, 1), got {dropout!r}")
        super().__init__(options=options, **common)
        bb = self.backbone
        if bb.depth < 2:
            raise ValueError(f"TransFG needs at least 2 blocks (L-1 to select, 1 part block), got {bb.depth}")
        for block in list(bb.blocks)[:-1]:
            check_timm_block(block)
        if part_block_init not in ("random", "pretrained"):
            raise ValueError(f"part_block_init must be 'random' or 'pretrained', got {part_block_init!r}")
        if part_block_init == "random":
            reset_block_official(self.part_block)
        set_official_dropout(bb, dropout)
        self.head = nn.Linear(bb.embed_dim, self.num_classes)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The backbone's, less the part block when it starts at random (the official init)."""
        if self.config["options"]["part_block_init"] == "pretrained":
            return super().pretrained_parameters()
        fresh = {id(p) for p in self.part_block.parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in fresh]

    @property
    def part_block(self) -> nn.Module:
        """The block over [prefix tokens, parts]: the backbone's last block."""
        return self.backbone.blocks[-1]

    def forward(self, x: Tensor) -> ModelOutput:
        bb = self.backbone
        prefix = bb.num_prefix_tokens
        tokens = bb.embed(x)  # (B, T, D)
        rope = bb.block_kwargs()  # EVA-02's rotary embedding ({"rope": (N, 2 hd)}), else nothing
        maps: list[Tensor] = []  # per block 1..L-1: (B, H, T, T), no gradient
        for block in list(bb.blocks)[:-1]:
            tokens, probs, _ = block_forward(block, tokens, probs=ProbsRequest(), **rope)
            maps.append(probs)
        parts = part_selection(maps, prefix, class_token=bb.has_class_token)  # (B, H)
        prefix_tokens, patches = bb.split_tokens(tokens)  # (B, prefix, D), (B, N, D)
        seq = torch.cat([prefix_tokens, gather_tokens(patches, parts)], dim=1)  # (B, prefix + H, D)
        if rope:  # each part keeps its patch's rotary embedding: (B, 1, H parts, 2 hd)
            rope = dict(rope=rope["rope"][parts][:, None])
        seq = self.part_block(seq, **rope)
        feature = bb.pool(bb.norm(seq))  # (B, D)
        return ModelOutput(
            logits=self.head(feature), embedding=feature, extras=dict(features=feature, part_indices=parts)
        )

    def loss(self, output: ModelOutput, targets: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
        """Training: cross-entropy + contrastive loss on the pooled features. Evaluation: cross-entropy only."""
        ce = F.cross_entropy(output.logits, targets, label_smoothing=label_smoothing)
        if not self.training:
            return ce
        return ce + contrastive_loss(output.extras["features"], targets)

    def explain(self, x: Tensor) -> Explanation:
        """The selected ``parts``; ``attention`` and ``rollout`` of the first L-1 blocks (those that see every
        patch), and as the last layer the part block's CLS attention to the parts, placed at their patches."""
        bb = self.backbone
        with explaining(self):
            with bb.record_attention(blocks=[self.part_block]) as recorded:
                output = self(x)
            attention, rollout = backbone_attention(bb, x, blocks=list(bb.blocks)[:-1])
        grid, prefix = bb.grid_size, bb.num_prefix_tokens
        parts = output.extras["part_indices"]  # (B, heads) patch indices
        a = recorded[0].float()[:, :, 0, prefix:]  # (B, heads, K parts): CLS attention in the part block
        heads = range(parts.shape[1])
        attention.append(GridMap(scatter_to_grid(parts, a.mean(1), grid),
                                 heads=torch.stack([scatter_to_grid(parts, a[:, h], grid) for h in heads], 1)))
        ones = torch.ones_like(parts)
        counts = GridMap(scatter_to_grid(parts, ones, grid),  # how many heads picked each patch
                         heads=torch.stack([scatter_to_grid(parts[:, [h]], ones[:, [h]], grid) for h in heads], 1))
        return Explanation(output=output, attention=attention, maps={"rollout": rollout, "parts": counts})

    def grad_cam_layer(self) -> nn.Module:
        """The last block that sees every patch is the one before the part block."""
        return self.backbone.blocks[-2].norm1

    def selection_steps(self, tokens: Tensor, attentions: Sequence[Tensor] | None) -> list[SelectionStep]:
        """Part selection from the CLS row of the first L-1 blocks' attention product; and for reference the
        official product of whole T x T maps."""
        prefix, depth = self.backbone.num_prefix_tokens, self.backbone.depth
        part_maps = list(attentions or [])[: depth - 1]

        def full_product() -> Tensor:  # the official Part_Attention: whole (T, T) products, then the CLS row
            product = part_maps[0]
            for attn in part_maps[1:]:
                product = attn @ product  # (B, H, T, T)
            return product[:, :, 0, prefix:].argmax(-1)

        return [
            SelectionStep(f"part selection of blocks 1-{depth - 1} (CLS row)", lambda: part_selection(part_maps, prefix)),
            SelectionStep(f"official full product of blocks 1-{depth - 1} (T x T)", full_product, reference=True),
        ]
