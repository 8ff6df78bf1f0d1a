"""``fgvc pretrain``: fgvc's own small ViT backbone, pretrained on synthetic fine-grained data.

GLSim, DCAL and TransFG are fine-tuning methods: their selection (CLS-patch similarity, attention rollout,
part attention) only means something in a backbone that already knows where to look. This module makes such
a backbone on a laptop CPU, from data fgvc generates itself, so every method can be shown working with no
download (``fgvc demo``).

**Why a classifier alone is not enough.** A small ViT trained only with cross-entropy on its CLS token can
learn the task while its *final* patch tokens stay unsupervised: nothing asks them to resemble the CLS token,
and their cosine similarity with it is set by whatever the last block leaves in them (positions, colours).
GLSim fine-tuned from the previous demo's from-scratch ViT (64 px, 10 px detail) put the peak of that
similarity inside the detail for 2.3 % of test images, about chance for a detail covering 2.5 % of the
image, while the rollout of the same backbone found it for 71 %. GLSim's selection reads exactly that similarity, so it needs a backbone in
which the CLS token and the patches it draws on agree.

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
selection multiplies out the same attention). In a backbone trained only to classify, the rollout of the
previous shipped weights found the detail for about half of the demo's images (DCAL's pointing game 49-53%).
The localization terms are an auxiliary signal, the synthetic counterpart of part annotations; they train,
openly, the property the methods' selection relies on. Fine-tuning (``fgvc demo``) uses no box at all.

**Data.** ``SyntheticFGVC`` at 128 px with the *pretraining vocabulary*: the 48 colour-shape classes left
when the 16 classes of the default grids ({red, green, blue, yellow} x {circle, ring, square, diamond}: every
class of ``SyntheticFGVC(num_classes=k)`` for k <= 16) are removed. Those 16 never appear in pretraining, as
the detail or as a distractor, as ImageNet pretraining does not see a user's private dataset. Details of
several sizes (``detail_sides``), and with probability ``zoom_p`` a zoomed view: a random crop that holds
the detail, resized to full size as GLSim's crop pass resizes its box (bilinear, ``align_corners=True``).
Pretraining uses its own seeds, disjoint from the demo's.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.shipped import SHIPPED_BACKBONES
from ..backbones.vit import ViTBackbone
from ..data.synthetic import SyntheticFGVC, all_class_names, grid_class_names
from ..engine.evaluate import pointing_game
from ..engine.run_folder import claim_run_folder
from ..engine.train import reproducible
from ..io import cpu_tensors, write_safetensors
from ..layers.geometry import PatchGrid, box_iou_pairs
from ..layers.rollout import rollout_map

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
class PretrainSettings:
    """Everything pretraining uses (written to the model card)."""

    backbone: str = "fgvc_synth_vit_tiny"
    img_size: int = 128
    detail_sides: tuple[int, ...] = (7, 14, 20, 31, 40)  # px at img_size: from the hard demo's to past the demo's
    images_per_side: int = 5000  # rendered once, seen again under fresh zoom / flip draws
    num_distractors: int = 4
    zoom_p: float = 0.5
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1.5e-3
    min_lr: float = 1e-5
    warmup_steps: int = 150
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    loc_weight: float = 1.0
    tau: float = 0.1
    rollout_weight: float = 1.0  # the attention rollout's CLS row (DCAL's / TransFG's selection) on the detail
    token_label_weight: float = 1.0
    min_region: float = 3.0  # patches: small details' target region grows to min_region x min_region patches
    seed: int = 1000  # the demo uses seeds 0-2
    val_per_side: int = 400
    threads: int = 2
    init: str | None = None  # start from these backbone weights (a timm state dict) instead of at random


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
    """Pretraining images: several detail sizes, rendered once; zoomed / flipped views drawn per batch."""

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
        # arrays between the large activation buffers fragment the heap (RSS grew ~50 MB per step).
        self.pixels = np.empty((len(self), h, w, 3), dtype=np.uint8)
        self.rendered = np.zeros(len(self), dtype=bool)

    def __len__(self) -> int:
        return self.n_per_side * len(self.parts)

    def batch(self, index: np.ndarray, rng: np.random.Generator | None, zoom_p: float) -> tuple[Tensor, ...]:
        """Images (B, 3, S, S) normalised to [-1, 1], labels (B,), true boxes (B, 4) in pixels of the view."""
        images, labels, boxes = [], [], []
        for i in index:
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
            images.append(img)
            labels.append(part.targets[j])
            boxes.append(box)
        x = torch.stack(images).div_(127.5).sub_(1.0)
        return x, torch.tensor(labels), torch.stack(boxes)

    def _zoom(self, img: Tensor, box: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
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


class _Pretrainer(nn.Module):
    """Backbone + a linear head on CLS; returns the classification and localization losses."""

    def __init__(self, s: PretrainSettings, num_classes: int) -> None:
        super().__init__()
        self.backbone = ViTBackbone(s.backbone, img_size=s.img_size, pretrained=False, checkpoint_path=s.init)
        self.head = nn.Linear(self.backbone.embed_dim, num_classes)
        self.s = s

    def forward(self, x: Tensor, *, rollout: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """CLS logits (B, C), GLSim's similarity (B, N), final patch tokens (B, N, D), and with ``rollout``
        the attention rollout's CLS row over the patches (B, N) (what DCAL selects its queries with)."""
        enc = self.backbone(x, return_attention=rollout)  # tokens after the final norm: CLS (B, D), patches
        logits = self.head(enc.cls)  # (B, C)
        sim = F.cosine_similarity(enc.cls[:, None], enc.patches, dim=-1)  # (B, N): GLSim's similarity
        roll = rollout_map(enc.attentions, self.backbone.num_prefix_tokens) if rollout else None
        return logits, sim, enc.patches, roll

    def losses(self, x: Tensor, y: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Classification (CLS + token labels) and localization losses; also the CLS logits and similarity.

        The localization loss is the similarity term plus ``rollout_weight`` times the rollout term.
        """
        logits, sim, patches, roll = self(x, rollout=self.s.rollout_weight > 0)
        bb = self.backbone
        region = grow_boxes(boxes, self.s.min_region * bb.patch_size[0], bb.img_size)
        cover = detail_coverage(region, bb.grid_size, bb.patch_size[0]).flatten(1)  # (B, N)
        target = cover / cover.sum(-1, keepdim=True).clamp(min=1e-6)  # (B, N), rows sum to 1
        loss_cls = F.cross_entropy(logits, y, label_smoothing=self.s.label_smoothing)
        if self.s.token_label_weight:  # the patches of the detail's region carry its label (same head)
            token_ce = F.cross_entropy(
                self.head(patches).flatten(0, 1), y.repeat_interleave(patches.shape[1]), reduction="none"
            ).view_as(target)  # (B, N)
            loss_cls = loss_cls + self.s.token_label_weight * (target * token_ce).sum(-1).mean()
        loss_loc = -(target * F.log_softmax(sim / self.s.tau, dim=-1)).sum(-1).mean()
        if roll is not None:  # the rollout's mass over the patches, as a distribution, matched to the same target
            share = roll / roll.sum(-1, keepdim=True)  # (B, N)
            loss_loc = loss_loc - self.s.rollout_weight * (target * share.clamp(min=1e-8).log()).sum(-1).mean()
        return loss_cls, loss_loc, logits, sim


@torch.no_grad()
def _evaluate(model: _Pretrainer, views: _Views, batch_size: int = 200) -> dict[str, float]:
    """Per detail size: CLS top-1, the pointing game (peak inside the box) of GLSim's similarity and of the
    attention rollout, and the IoU of GLSim's top-8 box."""

    model.eval()
    out: dict[str, float] = {}
    bb = model.backbone
    for k, part in enumerate(views.parts):
        idx = np.arange(k * views.n_per_side, (k + 1) * views.n_per_side)
        correct = hit = roll_hit = iou_sum = 0.0
        for lo in range(0, len(idx), batch_size):
            x, y, boxes = views.batch(idx[lo : lo + batch_size], None, 0.0)
            logits, sim, _, roll = model(x, rollout=True)
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
    model.train()
    return out


def pretrain(
    out_dir: str | os.PathLike,
    settings: PretrainSettings | None = None,
    *,
    progress: bool = True,
    eval_every: int = 400,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Pretrain the backbone; writes ``NAME.safetensors`` (timm state dict), ``NAME.md`` and ``log.jsonl``.

    ``out_dir`` is locked while it runs, and one holding an earlier run's files is refused unless
    ``overwrite=True``, which deletes them first (``fgvc.engine.run_folder``). Returns the final validation metrics.
    Deterministic for given settings and thread count.
    """
    s = settings or PretrainSettings()
    if s.backbone not in SHIPPED_BACKBONES:
        raise ValueError(f"unknown backbone {s.backbone!r}; fgvc pretrains {sorted(SHIPPED_BACKBONES)}")
    files = ("log.jsonl", f"{s.backbone}.safetensors", f"{s.backbone}.md")
    if overwrite and s.init is not None and Path(s.init).resolve() in {(Path(out_dir) / f).resolve() for f in files}:
        raise ValueError(f"--init {s.init} is one of the files --overwrite deletes in {out_dir}: copy it elsewhere first")
    with claim_run_folder(out_dir, overwrite=overwrite, patterns=files) as folder, reproducible(s.threads):
        folder.clear()  # fixed threads and deterministic algorithms, restored afterwards
        return _pretrain(out_dir, s, progress, eval_every)


def _pretrain(out_dir: str | os.PathLike, s: PretrainSettings, progress: bool, eval_every: int) -> dict[str, Any]:
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = _Views(s, "train", s.images_per_side)
    val = _Views(s, "val", s.val_per_side)
    model = _Pretrainer(s, len(PRETRAIN_VOCABULARY))
    opt = timm.optim.create_optimizer_v2(model, "adamw", lr=s.lr, weight_decay=s.weight_decay)

    def lr_at(step: int) -> float:
        if step < s.warmup_steps:
            return s.lr * (step + 1) / s.warmup_steps
        t = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
        return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * t))

    from tqdm.auto import tqdm

    log = (out / "log.jsonl").open("w")
    start = time.perf_counter()
    order = np.empty(0, dtype=np.int64)
    bar = tqdm(range(s.steps), desc="pretrain", disable=not progress)
    metrics: dict[str, float] = {}
    for step in bar:
        if len(order) < s.batch_size:
            order = np.concatenate([order, rng.permutation(len(train))])
        index, order = order[: s.batch_size], order[s.batch_size :]
        x, y, boxes = train.batch(index, rng, s.zoom_p)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss_cls, loss_loc, logits, _ = model.losses(x, y, boxes)
        loss = loss_cls + s.loc_weight * loss_loc
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        if step % 20 == 0:
            acc = (logits.argmax(-1) == y).float().mean().item() * 100
            bar.set_postfix(cls=f"{loss_cls.item():.2f}", loc=f"{loss_loc.item():.2f}", acc=f"{acc:.0f}")
            rec = dict(step=step, loss_cls=loss_cls.item(), loss_loc=loss_loc.item(), train_top1=acc)
            rec["seconds"] = time.perf_counter() - start
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if (step + 1) % eval_every == 0 or step + 1 == s.steps:
            metrics = _evaluate(model, val)
            log.write(json.dumps(dict(step=step + 1, seconds=time.perf_counter() - start, **metrics)) + "\n")
            log.flush()
            tqdm.write(f"step {step + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
            _save_weights(model, out / f"{s.backbone}.safetensors", step + 1)
    seconds = time.perf_counter() - start
    log.close()
    state = _save_weights(model, out / f"{s.backbone}.safetensors", s.steps)
    _write_card(out / f"{s.backbone}.md", s, metrics, seconds, sum(v.numel() for v in state.values()))
    return metrics


def _save_weights(model: _Pretrainer, path: Path, step: int) -> dict[str, Tensor]:
    """The backbone as a timm state dict (what ``checkpoint_path=`` and the shipped loader read)."""
    state = cpu_tensors(model.backbone.vit.state_dict())
    write_safetensors(state, path, dict(format="timm", source="fgvc pretrain", step=str(step)))
    return state


def _write_card(path: Path, s: PretrainSettings, metrics: dict[str, float], seconds: float, n: int) -> None:
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
AdamW, lr {s.lr} (warmup {s.warmup_steps} steps, cosine to {s.min_lr}), weight decay {s.weight_decay},
batch {s.batch_size}, {s.steps} steps, gradient clipping {s.grad_clip}, seed {s.seed}, {s.threads} threads,
deterministic algorithms.

Time: {seconds / 60:.1f} min on {platform.machine()} CPU ({os.cpu_count()} cores), torch {torch.__version__},
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
