"""Evaluation: top-1 / top-5, per-class accuracy, confusion matrix, and crop localization where possible."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .distributed import all_gather_objects, get_rank, get_world_size, is_distributed
from .methods.base import FGVCModel
from .retrieval import RetrievalResult, retrieval_metrics

__all__ = ["EvalResult", "box_iou_pairs", "evaluate", "pointing_game"]


@dataclass
class EvalResult:
    """Metrics of one pass over a dataset (accuracies in percent)."""

    top1: float
    top5: float
    loss: float
    num_samples: int
    per_class_accuracy: np.ndarray  # (C,) percent; NaN for classes without samples
    confusion_matrix: np.ndarray  # (C, C) rows = true class, columns = predicted
    predictions: np.ndarray  # (N,)
    targets: np.ndarray  # (N,)
    mean_iou: float | None = None  # crop box vs ground-truth box, when both exist
    pointing_game: float | None = None  # percent of map peaks (output.similarity) inside the ground-truth box
    retrieval: RetrievalResult | None = None  # Recall@K / mAP of the embeddings (``retrieval=True``)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """The headline numbers as a flat dict (for tables and logs)."""
        out = {"top1": self.top1, "top5": self.top5, "loss": self.loss}
        if self.mean_iou is not None:
            out["mean_iou"] = self.mean_iou
        if self.pointing_game is not None:
            out["pointing_game"] = self.pointing_game
        if self.retrieval is not None:
            out.update(self.retrieval.summary())
        return out


def box_iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of matching rows of two (N, 4) box tensors (x0, y0, x1, y1), exclusive ends. Returns (N,)."""
    a, b = a.float(), b.float()
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter).clamp(min=1e-12)


def pointing_game(
    maps: Tensor,
    boxes: Tensor,
    patch_size: tuple[int, int],
    patch_stride: tuple[int, int] | None = None,
) -> Tensor:
    """Whether each map's peak falls inside its box (the pointing game). Returns (B,) bool.

    maps: (B, rows, cols) over the patch grid; the peak is the highest cell (the first one on ties), placed at
    its patch centre ``(col * stride + patch / 2, row * stride + patch / 2)`` in input pixels.
    boxes: (B, 4) ground truth (x0, y0, x1, y1) in input pixels, exclusive ends.
    """
    b, rows, cols = maps.shape
    ph, pw = patch_size
    sh, sw = patch_stride if patch_stride is not None else patch_size
    peak = maps.reshape(b, -1).float().argmax(dim=1)  # (B,)
    y = (peak // cols).float() * sh + ph / 2
    x = (peak % cols).float() * sw + pw / 2
    boxes = boxes.float()
    return (boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3])


@torch.inference_mode()
def evaluate(
    model: FGVCModel,
    data: Dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
    retrieval: bool = False,
    distributed: bool | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``data`` (items ``(image, label)``), in order, in eval mode.

    If ``data.input_boxes`` exists ((N, 4) ground-truth boxes as fractions of the width and height of the
    image *as the model receives it*, after the transform) and the model outputs crop boxes, ``mean_iou`` is
    the mean IoU between the two, and if it outputs a map (``similarity``: GLSim's CLS-patch similarity,
    DCAL's rollout) ``pointing_game`` is the percentage of images whose map peak falls inside the box
    (``pointing_game()``). Datasets read from disk have ``.boxes`` in the original image's frame,
    which a resize + center crop changes: wrap them in ``fgvc.data.EvalBoxes`` to map the boxes through the
    test transform. ``SyntheticFGVC`` (drawn at the input size) has ``input_boxes`` itself.

    Under ``torchrun`` (``distributed=None``: whenever a process group of more than one process is up) every
    rank must call this: each evaluates a contiguous run of whole batches, without the padding
    ``DistributedSampler`` would add, and the per-batch results are gathered in order, so every rank returns
    metrics over exactly the N images, equal to a single-process run with the same ``batch_size``.
    ``distributed=False`` evaluates everything on this rank alone.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    sharded = distributed is not False and is_distributed()
    start, stop = _shard(len(data), batch_size) if sharded else (0, len(data))
    shard = Subset(data, range(start, stop)) if sharded else data
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    gt_boxes = getattr(data, "input_boxes", None)
    h, w = model.img_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    logits_all, targets_all, ious, embeddings = [], [], [], []
    hits: list[Tensor] = []  # pointing game, per batch (B,) bool
    batch_losses: list[float] = []  # per batch: mean loss x batch size
    seen = start  # index in ``data`` of the next image
    for images, targets in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        images, targets = images.to(device), targets.to(device)
        out = model(images)
        _check_labels(targets, out.logits.shape[1])
        batch_losses.append(model.loss(out, targets).item() * len(targets))
        logits_all.append(out.logits.float().cpu())
        targets_all.append(targets.cpu())
        if retrieval:
            if out.embedding is None:
                raise ValueError(f"{type(model).__name__} outputs no embedding: retrieval metrics need one")
            embeddings.append(out.embedding.float().cpu())
        if gt_boxes is not None and out.boxes is not None:
            gt = torch.as_tensor(gt_boxes[seen : seen + len(targets)], dtype=torch.float32) * scale
            ious.append(box_iou_pairs(out.boxes.cpu(), gt))
        if gt_boxes is not None and out.similarity is not None:
            gt = torch.as_tensor(gt_boxes[seen : seen + len(targets)], dtype=torch.float32) * scale
            bb = model.backbone
            hits.append(pointing_game(out.similarity.cpu(), gt, bb.patch_size, bb.patch_stride))
        seen += len(targets)
    model.train(was_training)
    if sharded:  # gather the shards, in rank order = data order
        parts = all_gather_objects((logits_all, targets_all, ious, embeddings, hits, batch_losses))
        logits_all, targets_all, ious, embeddings, hits, batch_losses = (
            [x for part in parts for x in part[i]] for i in range(6)
        )
    seen = sum(len(t) for t in targets_all)
    loss_sum = sum(batch_losses)  # summed in batch order, as a single process does
    if seen == 0:
        raise ValueError("evaluate() got an empty dataset")

    logits, targets = torch.cat(logits_all), torch.cat(targets_all)
    finite = torch.isfinite(logits).all(1)
    if not bool(finite.all()):  # argmax of NaN is class 0: the accuracy would be silently meaningless
        first = int((~finite).nonzero()[0])
        raise FloatingPointError(
            f"the model's output is not finite (NaN or inf) for {int((~finite).sum())} of {len(finite)} images, "
            f"the first at index {first} of the data: NaN in the images, or weights that are corrupt or diverged"
        )
    num_classes = logits.shape[1]
    preds = logits.argmax(1)
    top5 = logits.topk(min(5, num_classes), dim=1).indices.eq(targets[:, None]).any(1)
    cm = sk_confusion_matrix(targets.numpy(), preds.numpy(), labels=np.arange(num_classes))
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, 100.0 * np.diag(cm) / support, np.nan)
    return EvalResult(
        top1=100.0 * preds.eq(targets).float().mean().item(),
        top5=100.0 * top5.float().mean().item(),
        loss=loss_sum / seen,
        num_samples=seen,
        per_class_accuracy=per_class,
        confusion_matrix=cm,
        predictions=preds.numpy(),
        targets=targets.numpy(),
        mean_iou=torch.cat(ious).mean().item() if ious else None,
        pointing_game=100.0 * torch.cat(hits).float().mean().item() if hits else None,
        retrieval=retrieval_metrics(torch.cat(embeddings), targets) if retrieval else None,
    )


def _shard(n: int, batch_size: int) -> tuple[int, int]:
    """(start, stop) of this rank's contiguous run of whole batches (possibly empty)."""
    batches, world, rank = -(-n // batch_size), get_world_size(), get_rank()
    b0, b1 = rank * batches // world, (rank + 1) * batches // world
    return min(b0 * batch_size, n), min(b1 * batch_size, n)


def _check_labels(targets: Tensor, num_classes: int) -> None:
    """A wrong class count between data and model is named, not left to a CUDA assert."""
    if len(targets) and (int(targets.max()) >= num_classes or int(targets.min()) < 0):
        raise ValueError(
            f"label {int(targets.max())} found in the data but the model has {num_classes} classes "
            f"(labels must be 0..{num_classes - 1}): wrong dataset or num_classes?"
        )
