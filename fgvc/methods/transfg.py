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

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.blocks import ProbsRequest, block_forward, check_timm_block, gather_tokens
from .base import FGVCModel, ModelOutput, create_model, register_model
from .declare import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIT_HEADS_BY_WIDTH,
    MethodRecipes,
    OfficialFormat,
    block_count,
    strip_prefixes,
)
from .explain import (
    Explanation,
    GridMap,
    MapInfo,
    SelectionStep,
    backbone_attention,
    explaining,
    scatter_to_grid,
)

__all__ = [
    "TransFG", "contrastive_loss", "convert_transfg_official", "part_selection", "reset_block_official",
    "set_official_dropout",
]


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
            tokens, probs, _ = self.run_block(block_forward, block, tokens, probs=ProbsRequest(), **rope)
            maps.append(probs)
        parts = part_selection(maps, prefix, class_token=bb.has_class_token)  # (B, H)
        prefix_tokens, patches = bb.patch_grid.split(tokens)  # (B, prefix, D), (B, N, D)
        seq = torch.cat([prefix_tokens, gather_tokens(patches, parts)], dim=1)  # (B, prefix + H, D)
        if rope:  # each part keeps its patch's rotary embedding: (B, 1, H parts, 2 hd)
            rope = dict(rope=rope["rope"][parts][:, None])
        seq = self.run_block(self.part_block, seq, **rope)
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


# ------------------------------------------------------------------------- the official code's checkpoints
# ``transfg-official``: ``torch.save`` of ``TACJu/TransFG``'s ``train.py::save_model``: ``{"model": state dict}``
# (plus ``"amp"`` with ``--fp16``: apex O2 half-precision weights, converted to float32), keys
# ``transformer.embeddings.patch_embeddings.weight``, ``transformer.encoder.layer.0.attn.query.weight``, ...,
# ``transformer.encoder.part_layer``, ``part_norm``, ``part_head``. No config is stored: the width, depth and
# MLP size come from the shapes, the heads from the ViT family of that width (ViT-B: 12), and the image size
# and patch stride from the number of position embeddings (``--split overlap --slide_step 12`` at 448 px:
# 37 x 37 patches; non-overlapping 16 px patches: 28 x 28).
# The official TransFG's strides (--slide_step, default 12) and the image sizes tried, in that order, when
# inferring (image size, stride) from the position embeddings: the first pair giving that grid wins.
TRANSFG_STRIDES = (12,)
TRANSFG_SIZES = (448, 224, 384, 512, 336, 320, 288, 256, 600)


def _transfg_geometry(side: int, patch: int, img_size: int | None, patch_stride: int | None) -> tuple[int, int]:
    """(image size, stride) whose grid is ``side`` x ``side``: given, or inferred as the module docstring says."""
    strides = [patch_stride] if patch_stride else [*TRANSFG_STRIDES, patch]
    sizes = [img_size] if img_size else list(TRANSFG_SIZES)
    for size in sizes:
        for stride in strides:
            if (size - patch) // stride + 1 == side:
                return size, stride
    raise ValueError(
        f"cannot tell the image size and patch stride of a {side}x{side} grid of {patch} px patches; pass "
        f"img_size= and patch_stride= to fgvc.methods.transfg.convert_transfg_official"
    )


def _transfg_block(state: dict[str, Tensor], src: str, dst: str) -> dict[str, Tensor]:
    """One official TransFG ``Block`` (query / key / value / out, attention_norm, ffn_norm) as a timm ``Block``."""
    out = {
        f"{dst}attn.qkv.weight": torch.cat([state[f"{src}attn.{n}.weight"] for n in ("query", "key", "value")]),
        f"{dst}attn.qkv.bias": torch.cat([state[f"{src}attn.{n}.bias"] for n in ("query", "key", "value")]),
    }
    for a, b in (("attn.out", "attn.proj"), ("attention_norm", "norm1"), ("ffn_norm", "norm2"),
                 ("ffn.fc1", "mlp.fc1"), ("ffn.fc2", "mlp.fc2")):
        out[f"{dst}{b}.weight"] = state[f"{src}{a}.weight"]
        out[f"{dst}{b}.bias"] = state[f"{src}{a}.bias"]
    return out


def convert_transfg_official(
    obj: dict[str, Any], *, img_size: int | None = None, patch_stride: int | None = None
) -> FGVCModel:
    """An official TransFG checkpoint, already loaded, as an fgvc ``transfg`` model (float32)."""
    state = strip_prefixes(dict(obj["model"] if isinstance(obj.get("model"), dict) else obj), "module.")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # apex O2: fp16 weights
    emb = "transformer.embeddings."
    conv = state[f"{emb}patch_embeddings.weight"]  # (D, 3, P, P)
    dim, patch = conv.shape[0], conv.shape[-1]
    layers = block_count(state, "transformer.encoder.layer.")  # the first L-1 blocks
    mlp = state["transformer.encoder.layer.0.ffn.fc1.weight"].shape[0]
    heads = VIT_HEADS_BY_WIDTH.get(dim, max(dim // 64, 1))
    tokens = state[f"{emb}position_embeddings"].shape[1] - 1
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"{tokens} position embeddings are not a square grid")
    size, stride = _transfg_geometry(side, patch, img_size, patch_stride)
    mapped: dict[str, Tensor] = {
        "backbone.vit.patch_embed.proj.weight": conv,
        "backbone.vit.patch_embed.proj.bias": state[f"{emb}patch_embeddings.bias"],
        "backbone.vit.cls_token": state[f"{emb}cls_token"],
        "backbone.vit.pos_embed": state[f"{emb}position_embeddings"],
        "backbone.vit.norm.weight": state["transformer.encoder.part_norm.weight"],
        "backbone.vit.norm.bias": state["transformer.encoder.part_norm.bias"],
        "head.weight": state["part_head.weight"],
        "head.bias": state["part_head.bias"],
    }
    for i in range(layers):
        mapped.update(_transfg_block(state, f"transformer.encoder.layer.{i}.", f"backbone.vit.blocks.{i}."))
    mapped.update(_transfg_block(state, "transformer.encoder.part_layer.", f"backbone.vit.blocks.{layers}."))
    model = create_model(
        "transfg",
        backbone="vit_base_patch16_224",
        num_classes=state["part_head.weight"].shape[0],
        img_size=size,
        patch_stride=None if stride == patch else stride,
        backbone_kwargs=dict(patch_size=patch, embed_dim=dim, depth=layers + 1, num_heads=heads, mlp_ratio=mlp / dim),
    )
    used = {f"{emb}patch_embeddings.weight", f"{emb}patch_embeddings.bias", f"{emb}cls_token",
            f"{emb}position_embeddings", "transformer.encoder.part_norm.weight", "transformer.encoder.part_norm.bias",
            "part_head.weight", "part_head.bias"}
    used |= {k for k in state if k.startswith(("transformer.encoder.layer.", "transformer.encoder.part_layer."))}
    unknown = set(state) - used
    if unknown:
        raise ValueError(f"official TransFG checkpoint has weights fgvc does not know: {sorted(unknown)[:5]}")
    model.load_state_dict(mapped, strict=True)
    return model


OFFICIAL_FORMAT = OfficialFormat(
    name="transfg-official",
    description="the official TransFG train.py's ('model': transformer.embeddings... keys)",
    keys=("transformer.embeddings.",),
    convert=convert_transfg_official,
)


# ------------------------------------------------------------------------------------------- recipes
PAPER = "He et al.: TransFG: A Transformer Architecture for Fine-Grained Recognition, AAAI 2022"


def recipe_settings(dataset: str, size: int) -> tuple[dict, dict, dict, list[str]]:
    """TransFG, from TACJu/TransFG (README.md:51: train.py --dataset ... --split overlap --num_steps 10000 --fp16)."""
    r = 600 if size == 448 else 300  # 448 px: Resize((600, 600)) (utils/data_utils.py:21); 224 px: fgvc's choice
    model = dict(
        patch_stride=12,  # --split overlap (README.md:51), slide_step 12 (train.py:356-358, models/modeling.py:151-156)
        part_block_init="random",  # the part layer is not loaded from the npz (models/modeling.py:348-351)
        # dropout_rate 0.1 (models/configs.py:30) on the embeddings (modeling.py:160, 174) and in every Mlp
        # (modeling.py:118, 131, 133); attention_dropout_rate 0.0 (configs.py:29)
        dropout=0.1,
        # position embeddings resampled to the overlapping grid: ndimage.zoom(order=1) (models/modeling.py, load_from)
        pos_embed_interpolation="scipy_zoom",
        backbone_kwargs=dict(
            pretrained_cfg_overlay=dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear")
        ),  # Normalize(ImageNet) and Image.BILINEAR (utils/data_utils.py:21-29, 38-43, 50-53, 78-86)
    )
    data = dict(
        resize=[r, r],  # square Resize((600, 600)) then RandomCrop / CenterCrop 448 (utils/data_utils.py:21-29)
        # AutoAugImageNetPolicy on Cars only (utils/data_utils.py:41; CUB :21-25 and NABirds :78-82 have none).
        # fgvc uses torchvision's AutoAugment with the ImageNet policy (the official copies DeepVoltaire's).
        auto_augment=dataset == "cars",
        trivial_augment=False,
        random_erasing=0.0,
    )
    train = dict(
        steps=10000,  # num_steps 10000 (train.py:328); fgvc rounds up to whole epochs
        batch_size=16,  # train_batch_size 16 (train.py:316; the paper: batch size 16)
        optimizer="momentum",  # torch.optim.SGD(momentum=0.9), no Nesterov (train.py:180-183): timm's "momentum"
        momentum=0.9,
        lr=0.03,  # learning_rate 3e-2 (train.py:324)
        weight_decay=0.0,  # train.py:326
        warmup_steps=500,  # train.py:332
        min_lr=0.0,  # WarmupCosineSchedule decays to 0 (train.py:185-186, utils/scheduler.py:46-63)
        label_smoothing=0.0,  # smoothing_value 0.0 (train.py:353)
        grad_clip=1.0,  # max_grad_norm 1.0 (train.py:334, 253-255)
    )
    aug = " + AutoAugment (ImageNet policy)" if dataset == "cars" else ""
    notes = [
        f"TransFG, official code (TACJu/TransFG): square resize {r} x {r} then crop {size}, bilinear, ImageNet",
        f"mean / std, flip{aug}, overlapping patches (stride 12), dropout 0.1, plain SGD (no Nesterov)",
        "momentum 0.9, lr 0.03, batch 16, 10k steps (rounded up to whole epochs), 500 warmup steps, cosine to 0,",
        "weight decay 0, gradient clipping 1.0, cross-entropy + contrastive loss (cross-entropy alone at",
        "evaluation).",
    ]
    if size == 224:
        notes.append("224 px: the paper reports 448 px only; the resize is scaled alike (300 x 300): fgvc's choice.")
    if dataset == "aircraft":
        notes.append("FGVC-Aircraft: no official setting (not in the paper or code); CUB's pipeline: fgvc's choice.")
    return model, data, train, notes


RECIPES = MethodRecipes(
    settings=recipe_settings,
    expected={
        ("cub", 448): (
            91.7,
            f"{PAPER} (CUB-200-2011, 448 px). Users of the official code report 90.8-91.2 (90.8 without, 91.0-91.2 "
            "with overlapping patches) in github.com/TACJu/TransFG issues #2, #14 and #30",
        ),
        ("cars", 448): (94.8, f"{PAPER} (Stanford Cars, 448 px)"),
        ("nabirds", 448): (90.8, f"{PAPER} (NABirds, 448 px)"),
    },
    not_reported=lambda dataset, size: f"{PAPER}: reports 448 px only (CUB, Cars, Dogs, NABirds, iNat2017)",
)
