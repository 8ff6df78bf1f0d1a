"""``fgvc pretrain``: fgvc's own small ViT backbone, pretrained on synthetic fine-grained data.

GLSim, DCAL and TransFG are fine-tuning methods: their selection (CLS-patch similarity, attention rollout,
part attention) only means something in a backbone that already knows where to look. This module makes such
a backbone on a laptop CPU, from data fgvc generates itself, so every method can be shown working with no
download (``fgvc demo``).

**Why a classifier alone is not enough.** A small ViT trained only with cross-entropy on its CLS token can
learn the task while its *final* patch tokens stay unsupervised: nothing asks them to resemble the CLS token,
and their cosine similarity with it is set by whatever the last block leaves in them (positions, colours).
GLSim's selection reads exactly that similarity, so it needs a backbone in which the CLS token and the
patches it draws on agree; DCAL's and TransFG's read the attention rollout, which classification alone does
not put on the detail either (docs/results.md has the measurements).

**Objective** (the model card states it): cross-entropy on the CLS token (label smoothing 0.1), plus
``token_label_weight`` times a token-labelling term (the same head on the patch tokens of the detail's region
predicts the image's class, weighted by the target below: Jiang et al., "All Tokens Matter", 2021), plus
``loc_weight`` times a localization term: over the patches of an image, the softmax of
``cos(CLS, patch) / tau`` (final-norm tokens, the similarity GLSim computes) is matched by cross-entropy to
the share of each patch covered by the detail's true box (grown about its centre to at least
``min_region`` x ``min_region`` patches, the area GLSim's top-8 patches span, so that for a detail smaller
than that the most similar patches form one compact region around it rather than the detail plus
scattered patches), plus ``rollout_weight`` times the same cross-entropy for the attention rollout's CLS row
over the patches, renormalised to sum to one (the map DCAL selects its local queries with; TransFG's part
selection multiplies out the same attention).
The localization terms are an auxiliary signal, the synthetic counterpart of part annotations; they train,
openly, the property the methods' selection relies on. Fine-tuning (``fgvc demo``) uses no box at all.

**Data.** ``SyntheticFGVC`` at 128 px with the *pretraining vocabulary*: the 48 colour-shape classes left
when the 16 classes of the default grids ({red, green, blue, yellow} x {circle, ring, square, diamond}: every
class of ``SyntheticFGVC(num_classes=k)`` for k <= 16) are removed. Those 16 never appear in pretraining, as
the detail or as a distractor, as ImageNet pretraining does not see a user's private dataset. Details of
several sizes (``detail_sides``), and with probability ``zoom_p`` a zoomed view: a random crop that holds
the detail, resized to full size as GLSim's crop pass resizes its box (bilinear, ``align_corners=True``).
Pretraining uses its own seeds, disjoint from the demo's.

**Training** is ``fgvc.fit``'s: the objective is an ``FGVCModel`` (``_Pretrainer``) whose loss takes each
image's box (``loss_inputs``), the views a dataset of ``(image, label, {"boxes": box})`` items whose zoom and
flip are drawn from fit's per-sample seeded RNG, the schedule timm's warmup + cosine over ``steps``
optimizer steps. One fit epoch is one validation period (``eval_every`` steps at most), so ``log.jsonl``,
``train_state.safetensors``, ``last`` / ``best.safetensors``, the guards against non-finite values and
``resume=True`` (``fgvc pretrain --resume``) are fit's.
"""

from __future__ import annotations

import math
import os
import platform
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..backbones.shipped import SHIPPED_BACKBONES
from ..data.synthetic import SyntheticFGVC, all_class_names, grid_class_names
from ..engine.evaluate import pointing_game
from ..engine.run_folder import FIT_FILES, claim_run_folder, run_files
from ..engine.train import fit, reproducible
from ..io import cpu_tensors, write_safetensors
from ..layers.geometry import PatchGrid, box_iou_pairs
from ..layers.rollout import rollout_map
from ..methods.base import FGVCModel, ModelOutput
from ..settings import (
    Settings,
    TrainConfig,
    at_least,
    fraction,
    integers,
    like,
    non_negative,
    option,
    positive,
    text,
)

__all__ = [
    "HELD_OUT_CLASSES",
    "PRETRAIN_VOCABULARY",
    "PretrainSettings",
    "detail_coverage",
    "grow_boxes",
    "pretrain",
]

#: Every class of the default synthetic grids up to 16 classes: never seen in pretraining.
HELD_OUT_CLASSES: tuple[str, ...] = tuple(grid_class_names(16))
#: The 48 classes pretraining uses.
PRETRAIN_VOCABULARY: tuple[str, ...] = tuple(c for c in all_class_names() if c not in HELD_OUT_CLASSES)


@dataclass(frozen=True)
class PretrainSettings(Settings):
    """Everything pretraining uses (written to the model card; ``fgvc pretrain`` has a flag for each). The
    training options mean what ``fgvc.TrainConfig``'s of the same name mean, checked alike."""

    section: ClassVar[str] = "pretrain"

    backbone: str = option("fgvc_synth_vit_tiny", text("fgvc_synth_vit_tiny"), "the backbone pretrained")
    img_size: int = option(128, at_least(16), "image side in pixels")
    detail_sides: tuple[int, ...] = option((7, 14, 20, 31, 40), integers(1), "detail sides in px at img_size: "
                                           "from the hard demo's to past the demo's")
    images_per_side: int = option(5000, at_least(1), "images per detail side (rendered once, seen again under "
                                  "fresh zoom / flip draws)")
    num_distractors: int = option(4, at_least(0), "distractor shapes per image")
    zoom_p: float = option(0.5, fraction(closed=True), "probability of a zoomed view")
    steps: int = option(2000, at_least(1), "optimizer steps")
    batch_size: int = like(TrainConfig, "batch_size", 128)
    lr: float = like(TrainConfig, "lr", 1.5e-3, help="peak AdamW learning rate")
    min_lr: float = like(TrainConfig, "min_lr", 1e-5)
    warmup_steps: int = like(TrainConfig, "warmup_steps", 150)
    weight_decay: float = like(TrainConfig, "weight_decay", 0.05)
    grad_clip: float = like(TrainConfig, "grad_clip", 1.0)
    label_smoothing: float = like(TrainConfig, "label_smoothing", 0.1)
    loc_weight: float = option(1.0, non_negative, "weight of the localization loss")
    tau: float = option(0.1, positive(), "temperature of the softmax over cos(CLS, patch) in the localization loss")
    rollout_weight: float = option(1.0, non_negative, "weight of the attention rollout's CLS row (DCAL's / "
                                   "TransFG's selection) on the detail")
    token_label_weight: float = option(1.0, non_negative, "weight of token labelling: the class head on the detail region's patch tokens")
    min_region: float = option(3.0, positive(), "small details' target region grows to min_region x "
                               "min_region patches")
    seed: int = like(TrainConfig, "seed", 1000, help="seeds data and training (the demo uses seeds 0-2)")
    val_per_side: int = option(400, at_least(1), "validation images per detail side")
    threads: int = option(2, at_least(1), "CPU threads")
    init: str | None = option(None, text("runs/pretrain/fgvc_synth_vit_tiny.safetensors", optional=True),
                              "start from these backbone weights (a timm state dict) instead of at random")


def detail_coverage(boxes: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """Share of each patch covered by each box: boxes (B, 4) pixels (x0, y0, x1, y1) -> (B, rows, cols)."""
    return PatchGrid(*grid, (patch, patch)).coverage(boxes)


def grow_boxes(boxes: Tensor, min_side: float, img_size: tuple[int, int]) -> Tensor:
    """Boxes (B, 4) grown about their centres to at least ``min_side`` pixels a side, kept in the image."""
    h, w = img_size
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (B, 2) x, y
    half = torch.maximum((boxes[:, 2:] - boxes[:, :2]) / 2, torch.full_like(centre, min_side / 2))
    limit = torch.tensor([w, h], dtype=boxes.dtype)
    lo = (centre - half).clamp(min=0)
    lo = torch.minimum(lo, (limit - 2 * half).clamp(min=0))  # shift inward at the borders
    return torch.cat([lo, torch.minimum(lo + 2 * half, limit)], dim=1)


class _Views:
    """Pretraining images: several detail sizes, rendered once; zoomed / flipped views drawn per image."""

    def __init__(self, s: PretrainSettings, split: str, n_per_side: int) -> None:
        h = w = s.img_size
        self.size = s.img_size
        self.parts = [
            SyntheticFGVC(
                n_per_side,
                image_size=s.img_size,
                seed=s.seed + k,
                split=split,
                vocabulary=PRETRAIN_VOCABULARY,
                num_distractors=s.num_distractors,
                detail_fraction=(side * side + 0.5) / (h * w),
                cache=False,
            )
            for k, side in enumerate(s.detail_sides)
        ]
        self.n_per_side = n_per_side
        # One preallocated block for every picture, filled on first use: tens of thousands of small cached
        # arrays between the large activation buffers would fragment the heap.
        self.pixels = np.empty((len(self), h, w, 3), dtype=np.uint8)
        self.rendered = np.zeros(len(self), dtype=bool)

    def __len__(self) -> int:
        return self.n_per_side * len(self.parts)

    @property
    def targets(self) -> list[int]:
        """The label of every image, in order."""
        return [int(t) for part in self.parts for t in part.targets]

    def view(self, i: int, rng: Any, zoom_p: float) -> tuple[Tensor, int, Tensor]:
        """Image ``i`` (3, S, S) normalised to [-1, 1], its label and its true box (4,) in pixels of the view;
        zoomed and flipped by draws from ``rng`` (a numpy ``Generator`` or ``np.random``; None: as rendered)."""
        part, j = self.parts[i // self.n_per_side], int(i % self.n_per_side)
        if not self.rendered[i]:
            self.pixels[i] = part._array(j)
            self.rendered[i] = True
        img = torch.from_numpy(self.pixels[i]).permute(2, 0, 1).float()  # (3, S, S), 0..255
        box = torch.tensor(part.box_pixels(j), dtype=torch.float32)
        if rng is not None and rng.random() < zoom_p:
            img, box = self._zoom(img, box, rng)
        if rng is not None and rng.random() < 0.5:  # every shape is left-right symmetric
            img = img.flip(-1)
            box = torch.stack([self.size - box[2], box[1], self.size - box[0], box[3]])
        return img.div_(127.5).sub_(1.0), int(part.targets[j]), box

    def batch(self, index: np.ndarray, rng: Any, zoom_p: float) -> tuple[Tensor, ...]:
        """Images (B, 3, S, S) normalised to [-1, 1], labels (B,), true boxes (B, 4) in pixels of the view."""
        images, labels, boxes = zip(*(self.view(int(i), rng, zoom_p) for i in index), strict=True)
        return torch.stack(images), torch.tensor(labels), torch.stack(boxes)

    def _zoom(self, img: Tensor, box: Tensor, rng: Any) -> tuple[Tensor, Tensor]:
        """A crop that holds (most of) the detail, resized to full size: what GLSim's second pass sees."""
        s = self.size
        x0, y0, x1, y1 = box.tolist()
        d = x1 - x0
        side = d * math.exp(rng.uniform(math.log(0.9), math.log(s / d)))
        cw = int(round(min(s, max(4.0, side * math.exp(rng.uniform(-0.25, 0.25))))))
        ch = int(round(min(s, max(4.0, side * math.exp(rng.uniform(-0.25, 0.25))))))

        def start(a0: float, a1: float, c: int) -> int:
            lo, hi = min(a0, a1 - c), max(a0, a1 - c)  # the crop holds the detail (or sits inside it)
            lo, hi = max(0.0, lo), min(float(s - c), hi)
            return int(round(rng.uniform(lo, hi))) if hi > lo else int(max(0.0, min(lo, s - c)))

        cx, cy = start(x0, x1, cw), start(y0, y1, ch)
        crop = img[None, :, cy : cy + ch, cx : cx + cw]
        out = F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=True)[0]
        sx, sy = s / cw, s / ch
        new = torch.tensor([(x0 - cx) * sx, (y0 - cy) * sy, (x1 - cx) * sx, (y1 - cy) * sy]).clamp(0, s)
        return out, new


class _TrainViews(Dataset):
    """One validation period of training views: ``steps_per_epoch * batch_size`` items
    ``(image, label, {"boxes": box})`` drawn from the images of ``views``.

    Item ``k`` is image ``k mod N`` for the whole passes over the N images an epoch holds, and an image drawn
    at random for the rest, so every image is seen about equally often however the period and N compare. The
    draw, the zoom and the flip read ``np.random``, which fit seeds per (seed, epoch, item).
    """

    def __init__(self, views: _Views, length: int, zoom_p: float) -> None:
        self.views, self.length, self.zoom_p = views, length, zoom_p
        self.classes = list(PRETRAIN_VOCABULARY)
        self.targets = views.targets  # the images' labels (what a resume checks the data by)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> tuple[Tensor, int, dict[str, Tensor]]:
        n = len(self.views)
        i = k % n if k < self.length // n * n else int(np.random.randint(n))
        image, label, box = self.views.view(i, np.random, self.zoom_p)
        return image, label, {"boxes": box}


class _ValViews(Dataset):
    """The validation images as rendered, items ``(image, label)``, with their boxes (``input_boxes``)."""

    def __init__(self, views: _Views) -> None:
        self.views = views
        self.classes = list(PRETRAIN_VOCABULARY)
        self.targets = views.targets
        boxes = [torch.tensor(p.box_pixels(j), dtype=torch.float32) for p in views.parts for j in range(len(p))]
        self.input_boxes = torch.stack(boxes) / views.size  # fractions of the input: fgvc.evaluate's pointing game

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label, _ = self.views.view(i, None, 0.0)
        return image, label


@dataclass(repr=False)
class _Output(ModelOutput):
    """The objective's forward: a ``ModelOutput`` (``similarity`` (B, rows, cols), which ``fgvc.evaluate``'s
    pointing game reads) that also unpacks as its terms read it."""

    def __iter__(self) -> Iterator[Tensor | None]:
        """``logits, similarity (B, N), patches (B, N, D), rollout (B, N) or None``."""
        return iter((self.logits, self.extras["similarity"], self.extras["patches"], self.extras.get("rollout")))


class _Pretrainer(FGVCModel):
    """Backbone + a linear head on CLS, trained by ``fit``; its loss is the pretraining objective, which takes
    each image's box (``loss_inputs``) and leaves its two terms in ``loss_terms``."""

    method = "fgvc_pretrain"  # not registered: only ``pretrain`` builds it
    loss_inputs = ("boxes",)

    def __init__(self, s: PretrainSettings, num_classes: int) -> None:
        objective = {k: v for k, v in asdict(s).items() if k not in ("threads", "init")}
        super().__init__(backbone=s.backbone, num_classes=num_classes, img_size=s.img_size, checkpoint_path=s.init,
                         options=objective)
        self.head = nn.Linear(self.backbone.embed_dim, num_classes)
        self.s = s
        self.loss_terms: dict[str, Tensor] = {}

    def no_weight_decay(self) -> set[str]:
        """None besides the 1-D parameters: the position embedding and CLS token decay too, as the shipped
        weights were trained."""
        return set()

    def forward(self, x: Tensor, *, rollout: bool | None = None) -> _Output:
        """CLS logits (B, C), GLSim's similarity, the final patch tokens (B, N, D), and with ``rollout``
        (default: in training, when the objective weighs it) the attention rollout's CLS row over the patches
        (B, N) (what DCAL selects its queries with)."""
        if rollout is None:
            rollout = self.training and self.s.rollout_weight > 0
        enc = self.backbone(x, return_attention=rollout)  # tokens after the final norm: CLS (B, D), patches
        cls = self.backbone.global_token(enc.tokens)  # (B, D)
        _, patches = self.backbone.patch_grid.split(enc.tokens)  # (B, N, D)
        logits = self.head(cls)  # (B, C)
        sim = F.cosine_similarity(cls[:, None], patches, dim=-1)  # (B, N): GLSim's similarity
        extras = dict(similarity=sim, patches=patches)
        if rollout:
            extras["rollout"] = rollout_map(enc.attentions, self.backbone.num_prefix_tokens)
        return _Output(logits=logits, selection_map=sim.reshape(-1, *self.backbone.grid_size), extras=extras)

    def loss(self, output: ModelOutput, targets: Tensor, *, label_smoothing: float = 0.0,
             boxes: Tensor | None = None) -> Tensor:
        """``loss_cls + loc_weight * loss_loc`` for true ``boxes`` (B, 4) in pixels; without boxes (evaluation)
        the cross-entropy of the CLS logits."""
        if boxes is None:
            return F.cross_entropy(output.logits, targets, label_smoothing=label_smoothing)
        loss_cls, loss_loc = self._terms(output, targets, boxes, label_smoothing)
        self.loss_terms = dict(loss_cls=loss_cls.detach(), loss_loc=loss_loc.detach())
        return loss_cls + self.s.loc_weight * loss_loc

    def losses(self, x: Tensor, y: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Classification (CLS + token labels) and localization losses; also the CLS logits and similarity.

        The localization loss is the similarity term plus ``rollout_weight`` times the rollout term.
        """
        out = self(x, rollout=self.s.rollout_weight > 0)
        loss_cls, loss_loc = self._terms(out, y, boxes, self.s.label_smoothing)
        return loss_cls, loss_loc, out.logits, out.extras["similarity"]

    def _terms(self, out: ModelOutput, y: Tensor, boxes: Tensor, label_smoothing: float) -> tuple[Tensor, Tensor]:
        logits, sim, patches, roll = out
        bb = self.backbone
        region = grow_boxes(boxes, self.s.min_region * bb.patch_size[0], bb.img_size)
        cover = detail_coverage(region, bb.grid_size, bb.patch_size[0]).flatten(1)  # (B, N)
        target = cover / cover.sum(-1, keepdim=True).clamp(min=1e-6)  # (B, N), rows sum to 1
        loss_cls = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if self.s.token_label_weight:  # the patches of the detail's region carry its label (same head)
            token_ce = F.cross_entropy(
                self.head(patches).flatten(0, 1), y.repeat_interleave(patches.shape[1]), reduction="none"
            ).view_as(target)  # (B, N)
            loss_cls = loss_cls + self.s.token_label_weight * (target * token_ce).sum(-1).mean()
        loss_loc = -(target * F.log_softmax(sim / self.s.tau, dim=-1)).sum(-1).mean()
        if roll is not None:  # the rollout's mass over the patches, as a distribution, matched to the same target
            share = roll / roll.sum(-1, keepdim=True)  # (B, N)
            loss_loc = loss_loc - self.s.rollout_weight * (target * share.clamp(min=1e-8).log()).sum(-1).mean()
        return loss_cls, loss_loc

    def validation_metrics(self, data: Dataset) -> dict[str, float]:
        """Per detail size of ``data`` (a ``_ValViews``): the numbers of the model card (``_evaluate``)."""
        return _evaluate(self, data.views)  # type: ignore[attr-defined]


@torch.no_grad()
def _evaluate(model: _Pretrainer, views: _Views, batch_size: int = 200) -> dict[str, float]:
    """Per detail size: CLS top-1, the pointing game (peak inside the box) of GLSim's similarity and of the
    attention rollout, and the IoU of GLSim's top-8 box."""

    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    bb = model.backbone
    device = next(model.parameters()).device
    for k, part in enumerate(views.parts):
        idx = np.arange(k * views.n_per_side, (k + 1) * views.n_per_side)
        correct = hit = roll_hit = iou_sum = 0.0
        for lo in range(0, len(idx), batch_size):
            x, y, boxes = views.batch(idx[lo : lo + batch_size], None, 0.0)
            logits, sim, _, roll = model(x.to(device), rollout=True)
            logits, sim, roll = logits.cpu(), sim.cpu(), roll.cpu()
            correct += (logits.argmax(-1) == y).sum().item()
            sim, roll = sim.reshape(-1, *bb.grid_size), roll.reshape(-1, *bb.grid_size)  # (B, rows, cols)
            hit += pointing_game(sim, boxes, bb.patch_size).sum().item()  # as fgvc.evaluate and the demo count it
            roll_hit += pointing_game(roll, boxes, bb.patch_size).sum().item()
            sel = bb.patch_grid.top_box(sim, 8, include_last=False)  # GLSim's box
            iou_sum += box_iou_pairs(sel, boxes).sum().item()
        n = len(idx)
        out[f"top1_{part.side}px"] = 100.0 * correct / n
        out[f"pointing_{part.side}px"] = 100.0 * hit / n
        out[f"glsim_box_iou_{part.side}px"] = iou_sum / n
        out[f"rollout_pointing_{part.side}px"] = 100.0 * roll_hit / n
    model.train(was_training)
    return out


def validation_period(steps: int, eval_every: int) -> int:
    """The steps between validations: the largest divisor of ``steps`` up to ``eval_every`` (fit's epochs are
    all of one length); refused when it is under half of ``eval_every``, which would validate far more often."""
    period = max(d for d in range(1, min(steps, eval_every) + 1) if steps % d == 0)
    if period < min(steps, eval_every) / 2:
        raise ValueError(
            f"steps={steps} has no divisor between {eval_every // 2} and eval_every={eval_every}: validation "
            f"runs every steps / k steps; choose steps with one (e.g. {steps // eval_every * eval_every})"
        )
    return period


def pretrain(
    out_dir: str | os.PathLike,
    settings: PretrainSettings | None = None,
    *,
    progress: bool = True,
    eval_every: int = 400,
    overwrite: bool = False,
    resume: bool = False,
    save_every: int | None = 100,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Pretrain the backbone with ``fgvc.fit``; writes ``NAME.safetensors`` (timm state dict of the backbone)
    and ``NAME.md`` (the model card) beside fit's ``log.jsonl``, ``train_state.safetensors`` and ``last`` /
    ``best.safetensors``. Returns the final validation metrics (per detail size).

    ``out_dir`` is locked while it runs, and one holding an earlier run's files is refused unless
    ``overwrite=True``, which deletes them first, or ``resume=True``, which continues the run saved there
    (fit's checkpoint every ``save_every`` steps and at every validation, every ``eval_every`` steps at most).
    Deterministic for given settings, thread count and ``device``; a resumed run ends with the weights of an
    uninterrupted one.
    """
    s = settings or PretrainSettings()
    if s.backbone not in SHIPPED_BACKBONES:
        raise ValueError(f"unknown backbone {s.backbone!r}; fgvc pretrains {sorted(SHIPPED_BACKBONES)}")
    period = validation_period(s.steps, eval_every)
    patterns = (*FIT_FILES, f"{s.backbone}.safetensors", f"{s.backbone}.md")
    if overwrite and s.init is not None and Path(s.init).resolve() in {f.resolve() for f in run_files(out_dir, patterns)}:
        raise ValueError(f"--init {s.init} is one of the files --overwrite deletes in {out_dir}: copy it elsewhere first")
    with claim_run_folder(out_dir, resume=resume, overwrite=overwrite, patterns=patterns) as folder, \
            reproducible(s.threads):  # fixed threads and deterministic algorithms, restored afterwards
        folder.clear()
        torch.manual_seed(s.seed)
        train = _TrainViews(_Views(s, "train", s.images_per_side), period * s.batch_size, s.zoom_p)
        val = _ValViews(_Views(s, "val", s.val_per_side))
        model = _Pretrainer(s, len(PRETRAIN_VOCABULARY))
        history = fit(
            model, train, val, epochs=s.steps // period, batch_size=s.batch_size, optimizer="adamw", lr=s.lr,
            min_lr=s.min_lr, warmup_steps=s.warmup_steps, weight_decay=s.weight_decay, grad_clip=s.grad_clip,
            label_smoothing=s.label_smoothing, amp=None, device=device, seed=s.seed, out_dir=out_dir,
            resume=resume, progress=progress, log_every_steps=20, save_every_steps=save_every,
        )
        model.to("cpu")
        last = history.epochs[-1]
        metrics = {k: last[k] for k in _evaluate_keys(s)}
        seconds = sum(e["seconds"] for e in history.epochs)
        state = _save_weights(model, Path(out_dir) / f"{s.backbone}.safetensors", s.steps)
        _write_card(Path(out_dir) / f"{s.backbone}.md", s, metrics, seconds, sum(v.numel() for v in state.values()),
                    period=period, device=str(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))))
    return metrics


def _evaluate_keys(s: PretrainSettings) -> list[str]:
    """The names of ``_evaluate``'s metrics, in its order."""
    kinds = ("top1", "pointing", "glsim_box_iou", "rollout_pointing")
    return [f"{kind}_{side}px" for side in s.detail_sides for kind in kinds]


def _save_weights(model: _Pretrainer, path: Path, step: int) -> dict[str, Tensor]:
    """The backbone as a timm state dict (what ``checkpoint_path=`` and the shipped loader read)."""
    state = cpu_tensors(model.backbone.vit.state_dict())
    write_safetensors(state, path, dict(format="timm", source="fgvc pretrain", step=str(step)))
    return state


def _write_card(path: Path, s: PretrainSettings, metrics: dict[str, float], seconds: float, n: int, *,
                period: int, device: str = "cpu") -> None:
    from ..version import __version__

    shipped = SHIPPED_BACKBONES[s.backbone]
    rows = "\n".join(
        f"| {side} px | {metrics[f'top1_{side}px']:.1f} | {metrics[f'pointing_{side}px']:.1f} | "
        f"{metrics.get(f'rollout_pointing_{side}px', float('nan')):.1f} | {metrics[f'glsim_box_iou_{side}px']:.2f} |"
        for side in s.detail_sides
    )
    defaults = asdict(PretrainSettings())
    changed = " ".join(
        f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
        for k, v in asdict(s).items()
        if v != defaults[k] and k not in ("backbone", "init")
    )
    recreate, earlier = _recreate(s, changed)
    text = f"""# {s.backbone}

A {shipped.timm_name} architecture ({", ".join(f"{k}={v}" for k, v in shipped.timm_kwargs.items())}),
{n / 1e6:.2f} M parameters, pretrained by fgvc at {s.img_size} x {s.img_size} px on its own synthetic data.
Load it with `fgvc.create_model(METHOD, backbone="{s.backbone}", pretrained=True, num_classes=..., img_size=...)`;
position embeddings are resampled to other sizes. Input normalisation: mean 0.5, std 0.5 (the synthetic data's).

## Data
`SyntheticFGVC` ({s.img_size} px, {s.num_distractors} distractors) with the pretraining vocabulary: the
{len(PRETRAIN_VOCABULARY)} colour-shape classes left when the 16 classes of the default grids
({", ".join(HELD_OUT_CLASSES)}) are removed. Those 16 never appear in pretraining, neither as the detail nor as a
distractor: fine-tuning on `SyntheticFGVC(num_classes=k)`, k <= 16, meets unseen classes. Detail sides
{", ".join(map(str, s.detail_sides))} px, {s.images_per_side} images each (seeds {s.seed}..{s.seed + len(s.detail_sides) - 1},
disjoint from the demo's 0-2), each seen again under fresh draws of a zoomed view (probability {s.zoom_p}: a
random crop holding the detail, resized to full size as GLSim's crop pass does) and a horizontal flip.

## Objective
Cross-entropy of a linear head on the CLS token (label smoothing {s.label_smoothing}), plus
{s.token_label_weight:g} x token labelling (the same head on the patch tokens of the detail's region predicts the
class, weighted by the target below), plus {s.loc_weight} x a
localization term: the softmax over patches of cos(CLS, patch) / {s.tau} (final-norm tokens: the similarity
GLSim selects with) is matched by cross-entropy to the share of each patch covered by the detail's true box,
grown about its centre to at least {s.min_region:g} x {s.min_region:g} patches (so that the most similar
patches of a small detail form one compact region around it), plus {s.rollout_weight:g} x the same cross-entropy
for the attention rollout's CLS row over the patches (renormalised to sum to one: the map DCAL selects its
local queries with and TransFG's part selection multiplies out).
The localization terms are an auxiliary signal (the synthetic counterpart of part annotations); they
train the property the methods' selection relies on. Fine-tuning uses no boxes.

## Settings
Trained by `fgvc.fit`: AdamW, lr {s.lr} (timm's schedule: linear warmup from {s.min_lr} over {s.warmup_steps}
steps, then cosine to {s.min_lr} over all {s.steps} steps), weight decay {s.weight_decay}, batch {s.batch_size},
{s.steps} steps, gradient clipping {s.grad_clip}, seed {s.seed}, {s.threads} threads, deterministic algorithms,
validation every {period} steps.

Time: {seconds / 60:.1f} min on {_machine(device)}, torch {torch.__version__},
timm {timm.__version__}, fgvc {__version__}.{earlier}

## Validation (pretraining vocabulary, {s.val_per_side} images per detail size, no zoom)
Pointing game: the peak patch's centre inside the detail's box, as `fgvc.evaluate` and `fgvc demo` count it.

| detail | CLS top-1 (%) | pointing game, similarity (%) | pointing game, rollout (%) | GLSim box IoU (top-8) |
|---|---|---|---|---|
{rows}

## Re-create
```
{recreate}
```
then copy `runs/pretrain/{s.backbone}.safetensors` and `.md` into `fgvc/weights/`.
"""
    path.write_text(text)


def _machine(device: str) -> str:
    """The device the run trained on, as the card names it."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} CPU ({os.cpu_count()} cores)"


def _recreate(s: PretrainSettings, changed: str) -> tuple[str, str]:
    """The commands that re-create the weights (two stages when ``init`` continues an earlier run of this
    command, read from the model card written next to it), and a sentence on the earlier stage's time."""
    command = f"fgvc pretrain --out runs/pretrain {changed}".rstrip()
    if s.init is None:
        return command, ""
    card = Path(s.init).with_suffix(".md")
    text = card.read_text() if card.exists() else ""
    first = re.search(r"^fgvc pretrain --out \S+(.*)$", text, re.M)
    took = re.search(r"^Time: ([\d.]+) min", text, re.M)
    if first is None:  # weights from elsewhere: name them
        return f"fgvc pretrain --out runs/pretrain --init {s.init} {changed}".rstrip(), (
            f"\nStarted from the weights in `{s.init}` (not written by fgvc pretrain, or without their card)."
        )
    stage1 = f"runs/pretrain_stage1/{s.backbone}.safetensors"
    second = f"fgvc pretrain --out runs/pretrain --init {stage1} {changed}".rstrip()
    earlier = "\nA second stage: it continues, with a fresh warmup and cosine schedule, from the weights of the first"
    earlier += f" command below{f' ({took.group(1)} min)' if took else ''}."
    return f"fgvc pretrain --out runs/pretrain_stage1{first.group(1)}\n{second}", earlier
