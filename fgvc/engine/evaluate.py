"""Evaluation: top-1 / top-5, per-class accuracy, confusion matrix, calibration (ECE, NLL, Brier, before and
after temperature scaling), and crop localization where possible."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..data.contract import classes_of, input_boxes_of
from ..data.hierarchy import Hierarchy, class_hierarchy, hierarchy_top1, load_hierarchy
from ..data.parts import input_parts_of, part_names_of, parts_pixels_of
from ..layers.geometry import PatchGrid, box_iou_pairs
from ..methods.base import FGVCModel, ModelOutput
from .calibration import (
    Reliability,
    calibration_metrics,
    check_temperature,
    fit_temperature,
    reliability,
    temperature_of,
)
from .distributed import all_gather_objects, get_rank, get_world_size, is_distributed
from .retrieval import RetrievalResult, retrieval_metrics

__all__ = [
    "TTA_MODES",
    "EvalResult",
    "NoPartsError",
    "box_iou_pairs",
    "calibrate",
    "check_labels",
    "check_same_classes",
    "evaluate",
    "part_scores",
    "pointing_game",
    "tta_forward",
]

#: Test-time augmentations of ``evaluate`` / ``predict`` (``tta=``): None (off) or ``"hflip"``.
TTA_MODES = (None, "hflip")


@dataclass(repr=False)
class EvalResult:
    """Metrics of one pass over a dataset (accuracies in percent).

    ``tta`` records the test-time augmentation the numbers were measured with (None: none); ``class_names``
    are the model's (or the dataset's) names when known. ``ece`` / ``nll`` / ``brier`` are the calibration of
    the softmax of the model's class scores (``fgvc.engine.calibration``); ``*_calibrated`` the same after
    dividing the scores by ``temperature`` (when the model has one other than 1, or
    ``evaluate(calibrate=True)``). ``fgvc.save_evaluation(result, out_dir)`` (``fgvc.studies.report``) writes
    everything as files. ``hierarchy_top1``: the top-1 at each coarser level of a class hierarchy
    (``evaluate(hierarchy=...)``; None without one), also in ``summary()`` as ``<level>_top1``.
    """

    top1: float
    top5: float
    loss: float
    num_samples: int
    per_class_accuracy: np.ndarray  # (C,) percent; NaN for classes without samples
    confusion_matrix: np.ndarray  # (C, C) rows = true class, columns = predicted
    predictions: np.ndarray  # (N,)
    targets: np.ndarray  # (N,)
    mean_iou: float | None = None  # crop box vs ground-truth box, when both exist
    pointing_game: float | None = None  # percent of map peaks (output.selection_map) inside the ground-truth box
    retrieval: RetrievalResult | None = None  # Recall@K / mAP of the embeddings (``retrieval=True``)
    extra: dict[str, Any] = field(default_factory=dict)
    tta: str | None = None
    class_names: list[str] | None = None
    hierarchy_top1: dict[str, float] | None = None  # {level: percent}: fine predictions mapped up
    hierarchy: Hierarchy | None = None  # the levels scored: {level: [coarse label per class]}
    ece: float | None = None  # expected calibration error of the top-1 confidence, 15 bins (a fraction)
    nll: float | None = None  # mean -log p(true class)
    brier: float | None = None  # mean over images of sum over classes (p - onehot)^2
    confidence: np.ndarray | None = None  # (N,) top-1 probability
    temperature: float | None = None  # the temperature of the *_calibrated numbers (None: not reported)
    ece_calibrated: float | None = None
    nll_calibrated: float | None = None
    brier_calibrated: float | None = None
    confidence_calibrated: np.ndarray | None = None  # (N,) top-1 probability of softmax(logits / temperature)
    # {part: {"visible": images, "in_box": %, "<map>_peak": %, "<map>_mass": %, "uniform_mass": %}}
    # (``evaluate(parts=True)``; ``parts_table()``), scored within ``part_radius`` grid cells of each part
    parts: dict[str, dict[str, float]] | None = None
    part_radius: float | None = None

    def __repr__(self) -> str:
        """The headline numbers and the array shapes, not the arrays."""
        numbers = ", ".join(f"{k}={v:.4g}" for k, v in self.summary().items())
        classes = len(self.per_class_accuracy)
        return f"EvalResult({numbers}, num_samples={self.num_samples}, classes={classes}, tta={self.tta!r})"

    def summary(self) -> dict[str, float]:
        """The headline numbers as a flat dict (for tables and logs)."""
        out = {"top1": self.top1, "top5": self.top5, "loss": self.loss}
        if self.mean_iou is not None:
            out["mean_iou"] = self.mean_iou
        if self.pointing_game is not None:
            out["pointing_game"] = self.pointing_game
        if self.retrieval is not None:
            out.update(self.retrieval.summary())
        for level, value in (self.hierarchy_top1 or {}).items():
            out[f"{level}_top1"] = value
        calibration = ("ece", "nll", "brier", "temperature")
        for key in calibration + ("ece_calibrated", "nll_calibrated", "brier_calibrated"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def reliability(self, *, calibrated: bool = False, bins: int = 15) -> Reliability:
        """Top-1 confidence against accuracy per bin (``fgvc.viz.plot_reliability`` draws it); ``calibrated``:
        after temperature scaling."""
        confidence = self.confidence_calibrated if calibrated else self.confidence
        if confidence is None:
            what = "calibrated confidences (evaluate(calibrate=True))" if calibrated else "confidences"
            raise ValueError(f"this EvalResult holds no {what}")
        return reliability(confidence, self.predictions == self.targets, bins)

    def parts_table(self, maps: list[str] | None = None) -> str:
        """``parts`` as a markdown table: a row per part, the columns of the maps ``maps`` (default: all)."""
        if self.parts is None:
            raise ValueError("this EvalResult holds no part scores: evaluate with parts=True")
        keys = list(next(iter(self.parts.values()), {}))
        chosen = [k for k in keys if k in ("visible", "in_box", "uniform_mass")
                  or maps is None or k.rpartition("_")[0] in maps]
        titles = [k.replace("_", " ") + ("" if k == "visible" else " (%)") for k in chosen]
        lines = [f"Within {self.part_radius:g} grid cell(s) of each visible part (peak: the map's highest cell; "
                 "mass: the share of the map's positive mass; uniform mass: a flat map's).", "",
                 "| part | " + " | ".join(titles) + " |", "|---|" + "---|" * len(chosen)]
        for part, row in self.parts.items():
            cells = [f"{row[k]:.0f}" if k == "visible" else ("-" if np.isnan(row[k]) else f"{row[k]:.1f}")
                     for k in chosen]
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def names(self) -> list[str]:
        """A name per class: ``class_names`` when known, else the label as text."""
        n = len(self.per_class_accuracy)
        return list(self.class_names) if self.class_names and len(self.class_names) == n else [str(c) for c in range(n)]


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
    _, rows, cols = maps.shape
    x, y = PatchGrid(rows, cols, patch_size, patch_stride).peak_centres(maps)  # (B,), (B,)
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
    tta: str | None = None,
    check_classes: bool = True,
    temperature: float | None = None,
    calibrate: bool | None = None,
    hierarchy: Mapping[str, Any] | str | os.PathLike | bool | None = None,
    parts: bool = False,
    part_radius: float = 1.0,
) -> EvalResult:
    """Evaluate ``model`` on ``data`` (items ``(image, label)``), in order, in eval mode.

    The data's ``classes`` must be the model's (``check_classes``: same count and, where the model knows its
    ``class_names``, the same names in the same label order), since label k of the data is scored against
    output k of the model. ``check_classes=False`` skips this for data whose names are spelled differently
    but whose labels are known to match (e.g. the same classes read from another layout).

    If ``data.input_boxes`` exists ((N, 4) ground-truth boxes as fractions of the width and height of the
    image *as the model receives it*, after the transform) and the model outputs crop boxes, ``mean_iou`` is
    the mean IoU between the two, and if it outputs a map (``selection_map``: GLSim's CLS-patch similarity,
    DCAL's rollout) ``pointing_game`` is the percentage of images whose map peak falls inside the box
    (``pointing_game()``). Datasets read from disk have ``.boxes`` in the original image's frame,
    which a resize + center crop changes: wrap them in ``fgvc.data.EvalBoxes`` to map the boxes through the
    test transform. ``SyntheticFGVC`` (drawn at the input size) has ``input_boxes`` itself.

    Under ``torchrun`` (``distributed=None``: whenever a process group of more than one process is up) every
    rank must call this: each evaluates a contiguous run of whole batches, without the padding
    ``DistributedSampler`` would add, and the per-batch results are gathered in order, so every rank returns
    metrics over exactly the N images, equal to a single-process run with the same ``batch_size``.
    ``distributed=False`` evaluates everything on this rank alone.

    ``tta="hflip"`` averages the class probabilities of each image and its mirror image (``tta_forward``); off
    by default, and recorded in ``EvalResult.tta``.

    Calibration (``ece``, ``nll``, ``brier``) is always measured on the softmax of ``output.logits``, the
    scores top-1 reads (DCAL's: the log of its two branches' mean probabilities; with ``tta``: the two views' mean).
    ``temperature`` (default: the model's, ``model.temperature`` from ``fgvc.calibrate`` or its checkpoint, 1
    when it has none) divides those scores for the ``*_calibrated`` numbers, reported when it is not 1 or when
    ``calibrate=True`` (``calibrate=False``: never). Top-1, top-5, the loss and the confusion matrix are the
    model's own outputs' whatever the temperature (argmax does not change).

    ``hierarchy`` adds ``hierarchy_top1``, the top-1 at coarser levels: a prediction counts at a level when
    the coarse label of the predicted fine class equals the true class's (the fine top-1 prediction mapped
    up, never below the fine top-1). None: the data's own hierarchy when it has one (FGVC-Aircraft: family
    and manufacturer, ``fgvc.data.class_hierarchy``), else none; a dict ``{level: {class name: coarse
    name}}`` or a CSV / JSON file of one (``fgvc.data.load_hierarchy``) covering every class; True: the
    data's own, an error when it has none; False: none.

    ``parts=True`` scores every map of the model's explanation contract (``model.explain``: the last block's
    CLS attention as ``attention``, the rollout, the method's own maps) against the data's ``input_parts``
    ((N, P, 3) x, y as fractions of the model input, visible; ``fgvc.data.parts.EvalParts`` maps CUB's
    ``parts/part_locs.txt`` through the test transform): per part, over the images where it is visible, the
    share whose map peak lies within ``part_radius`` of it, the share of the map's mass there, and for models
    with a crop box (GLSim) the share inside the box (``part_scores``; ``EvalResult.parts`` and
    ``parts_table()``). ``part_radius`` is in grid cells (patch strides: 16 px for a ViT-B/16 at any input
    size), the maps' own resolution: at 1 a peak on the cell holding the part always counts.
    """
    _check_tta(tta)
    temperature = temperature_of(model) if temperature is None else check_temperature(temperature)
    if calibrate is None:
        calibrate = temperature != 1.0
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be a positive integer, got {batch_size!r}")
    if check_classes:
        check_same_classes(model, data)
    levels = _hierarchy_levels(model, data, hierarchy)  # checked before the long pass
    gt_parts = _check_parts(data, part_radius) if parts else None
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    sharded = distributed is not False and is_distributed()
    start, stop = _shard(len(data), batch_size) if sharded else (0, len(data))
    shard = Subset(data, range(start, stop)) if sharded else data
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    batches = tqdm(loader, desc="evaluate", leave=False, disable=not progress)
    try:
        seen = _Collected.run(model, batches, input_boxes_of(data), start, device, tta, retrieval,
                              gt_parts=gt_parts, part_radius=part_radius)
    finally:
        model.train(was_training)
    if sharded:
        seen = seen.gathered()
    result = seen.result(retrieval=retrieval, tta=tta, class_names=lambda n: _class_names(model, data, n),
                         temperature=temperature if calibrate else None)
    if levels:
        result.hierarchy = levels
        result.hierarchy_top1 = hierarchy_top1(result.predictions, result.targets, levels)
    if gt_parts is not None:
        result.parts = _part_shares(seen.parts, part_names_of(data))
        result.part_radius = float(part_radius)
    return result


class NoPartsError(ValueError):
    """``evaluate(parts=True)`` on data without part locations (``fgvc eval --parts`` says which data)."""


def _check_parts(data: Any, part_radius: float) -> Tensor:
    """``data``'s ``input_parts`` for ``evaluate(parts=True)``; a one-line error where it has none."""
    if isinstance(part_radius, bool) or not isinstance(part_radius, (int, float)) or not part_radius > 0:
        raise ValueError(f"evaluate: part_radius is a positive number of grid cells, got {part_radius!r}")
    parts = input_parts_of(data)
    if parts is None and parts_pixels_of(data) is not None:
        raise ValueError(
            f"{type(data).__name__}'s parts are in original pixels: wrap it in "
            "fgvc.data.parts.EvalParts(data, img_size=model.img_size) to map them through the test transform"
        )
    if parts is None or part_names_of(data) is None:
        raise NoPartsError(
            f"{type(data).__name__} has no parts (CUB reads them from parts/parts.txt and parts/part_locs.txt; "
            "the synthetic data has one, its detail)"
        )
    return torch.as_tensor(parts, dtype=torch.float32)


def part_scores(
    maps: Mapping[str, Tensor],
    parts: Tensor,
    grid: PatchGrid,
    radius: float,
    boxes: Tensor | None = None,
    masks: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Tensor]:
    """Per image and part, how each map and the crop box meet the parts. Returns (B, P) tensors by name.

    maps: name -> (B, rows, cols) over ``grid``; parts: (B, P, 3) x, y in input pixels, visible;
    radius: in grid cells (distances are measured in patch strides, cell centres as ``PatchGrid.centres``);
    boxes: (B, 4) crop boxes (x0, y0, x1, y1) in input pixels, exclusive ends. ``"visible"``: bool;
    ``"<map>_peak"``: the map's highest cell within ``radius`` (not for ``masks``, whose cells are equal);
    ``"<map>_mass"``: share of the map's positive mass in cells within ``radius`` (a map without any: flat);
    ``"uniform_mass"``: a flat map's share; ``"in_box"``: the part inside the box.
    """
    sh, sw = grid.stride
    cx, cy = grid.centres(torch.arange(grid.num_patches))  # (rows * cols,) pixel centres
    x, y = parts[..., 0:1], parts[..., 1:2]  # (B, P, 1)
    near = ((cx - x) / sw) ** 2 + ((cy - y) / sh) ** 2 <= radius**2  # (B, P, rows * cols)
    out = {"visible": parts[..., 2] > 0, "uniform_mass": near.float().mean(-1)}
    for name, heat in maps.items():
        flat = heat.reshape(heat.shape[0], 1, -1).float()  # (B, 1, rows * cols)
        if name not in masks:
            peak = flat.argmax(-1, keepdim=True).expand(-1, near.shape[1], 1)  # (B, P, 1)
            out[f"{name}_peak"] = near.gather(-1, peak)[..., 0]
        mass = flat.clamp_min(0)
        mass = torch.where(mass.sum(-1, keepdim=True) > 0, mass, torch.ones_like(mass))
        out[f"{name}_mass"] = (mass * near).sum(-1) / mass.sum(-1)  # (B, P)
    if boxes is not None:
        b = boxes.float()[:, None, :]  # (B, 1, 4)
        out["in_box"] = ((b[..., 0] <= x[..., 0]) & (x[..., 0] < b[..., 2])
                         & (b[..., 1] <= y[..., 0]) & (y[..., 0] < b[..., 3]))
    return out


def _explained_maps(explanation: Any) -> dict[str, Tensor]:
    """Every map of an ``Explanation`` by name, (B, rows, cols): the last block's CLS attention, then the rest."""
    maps = {"attention": explanation.attention[-1].all} if explanation.attention else {}
    maps.update({name: grid_map.all for name, grid_map in explanation.maps.items()})
    return {name: m.float().cpu() for name, m in maps.items()}


def _part_shares(batches: list[dict[str, Tensor]], names: list[str] | None) -> dict[str, dict[str, float]]:
    """``part_scores`` of every batch -> per part, its visible count and each score in percent of those."""
    scores = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}  # (N, P) each
    visible = scores.pop("visible")
    count = visible.sum(0)  # (P,)
    names = names or [str(k) for k in range(visible.shape[1])]
    order = ["in_box"] * ("in_box" in scores) + [k for k in scores if k not in ("in_box", "uniform_mass")]
    table: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        row: dict[str, float] = {"visible": float(count[k])}
        for key in order + ["uniform_mass"]:
            values = scores[key][visible[:, k], k].float()
            row[key] = 100.0 * values.mean().item() if len(values) else float("nan")
        table[name] = row
    return table


def _hierarchy_levels(model: FGVCModel, data: Any, hierarchy: Any) -> Hierarchy | None:
    """``evaluate``'s ``hierarchy`` as ``{level: [coarse label per class]}`` over the model's classes."""
    if hierarchy is False:
        return None
    n = model.num_classes
    if hierarchy is None or hierarchy is True:
        levels = class_hierarchy(data)
        if levels is None and hierarchy is True:
            raise ValueError(f"{type(data).__name__} has no class hierarchy: give a mapping or file")
        if hierarchy is None and any(len(labels) != n for labels in (levels or {}).values()):
            return None  # the data's own does not cover the model's classes (check_classes=False): not scored
    else:
        levels = load_hierarchy(hierarchy, _class_names(model, data, n) or [str(c) for c in range(n)])
    wrong = [level for level, labels in (levels or {}).items() if len(labels) != n]
    if wrong:
        count = len(levels[wrong[0]])
        raise ValueError(f"the hierarchy's level {wrong[0]!r} has {count} labels, the model {n} classes")
    return levels


def calibrate(model: FGVCModel, val_data: Dataset, **evaluate_options: Any) -> float:
    """Fit one temperature on ``val_data`` (a validation split, never the test split), set it as
    ``model.temperature`` and return it.

    The temperature minimises the NLL of ``softmax(logits / T)`` on the validation images
    (``fit_temperature``) where ``logits`` are what ``evaluate`` scores (``output.logits``; DCAL's averaged
    log-probabilities; with ``tta=`` the mirrored views' mean, so calibrate with the ``tta`` you evaluate
    with). The model's outputs are unchanged: ``evaluate`` and ``predict`` apply it, ``fgvc.save_model``
    stores it and ``load_model`` reads it back. ``evaluate_options``: ``evaluate``'s (``batch_size``, ``device``, ``tta``, ``check_classes``, ...).
    """
    known = {"batch_size", "device", "num_workers", "progress", "distributed", "tta", "check_classes"}
    unknown = sorted(set(evaluate_options) - known)
    if unknown:
        raise TypeError(f"calibrate: unknown evaluate options {', '.join(map(repr, unknown))}")
    logits, targets = _class_scores(model, val_data, **evaluate_options)
    model.temperature = fit_temperature(logits, targets)
    return model.temperature


@torch.inference_mode()
def _class_scores(
    model: FGVCModel, data: Dataset, *, batch_size: int = 64, device: str | torch.device | None = None,
    num_workers: int = 0, progress: bool = False, distributed: bool | None = None, tta: str | None = None,
    check_classes: bool = True,
) -> tuple[Tensor, Tensor]:
    """(N, C) float logits and (N,) labels of every image of ``data``, as ``evaluate`` gathers them."""
    _check_tta(tta)
    if check_classes:
        check_same_classes(model, data)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    sharded = distributed is not False and is_distributed()
    start, stop = _shard(len(data), batch_size) if sharded else (0, len(data))
    loader = DataLoader(Subset(data, range(start, stop)) if sharded else data, batch_size=batch_size,
                        shuffle=False, num_workers=num_workers)
    batches = tqdm(loader, desc="calibrate", leave=False, disable=not progress)
    try:
        seen = _Collected.run(model, batches, None, start, device, tta, False)
    finally:
        model.train(was_training)
    if sharded:
        seen = seen.gathered()
    if not seen.targets:
        raise ValueError("calibrate() got an empty dataset")
    logits = torch.cat(seen.logits)
    _check_finite_logits(logits)
    return logits, torch.cat(seen.targets)


@dataclass
class _Collected:
    """What ``evaluate`` keeps per batch, in data order (lists of per-batch tensors)."""

    logits: list[Tensor] = field(default_factory=list)  # (B, C) float
    targets: list[Tensor] = field(default_factory=list)  # (B,)
    ious: list[Tensor] = field(default_factory=list)  # (B,) crop box vs true box
    embeddings: list[Tensor] = field(default_factory=list)  # (B, D)
    hits: list[Tensor] = field(default_factory=list)  # (B,) bool: the map's peak inside the true box
    parts: list[dict[str, Tensor]] = field(default_factory=list)  # ``part_scores`` of each batch, (B, P) each
    losses: list[float] = field(default_factory=list)  # mean loss x batch size

    @classmethod
    def run(cls, model: FGVCModel, batches: Any, gt_boxes: Any, start: int, device: torch.device,
            tta: str | None, retrieval: bool, *, gt_parts: Tensor | None = None,
            part_radius: float = 1.0) -> _Collected:
        """Forward every batch (images ``start``.. of the data) and keep what the metrics need."""
        out_all = cls()
        h, w = model.img_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)  # input-frame fractions -> pixels
        seen = start  # index in the data of the batch's first image
        for images, targets in batches:
            images, targets = images.to(device), targets.to(device)
            explanation = model.explain(images) if gt_parts is not None else None  # every map, for the parts
            out = explanation.output if explanation is not None and tta is None else tta_forward(model, images, tta)
            check_labels(targets, out.logits.shape[1])
            out_all.losses.append(model.loss(out, targets).item() * len(targets))
            out_all.logits.append(out.logits.float().cpu())
            out_all.targets.append(targets.cpu())
            if retrieval:
                if out.embedding is None:
                    raise ValueError(f"{type(model).__name__} outputs no embedding: retrieval metrics need one")
                out_all.embeddings.append(out.embedding.float().cpu())
            if gt_boxes is not None:
                gt = torch.as_tensor(gt_boxes[seen : seen + len(targets)], dtype=torch.float32) * scale
                if out.boxes is not None:
                    out_all.ious.append(box_iou_pairs(out.boxes.cpu(), gt))
                if out.selection_map is not None:
                    bb = model.backbone
                    out_all.hits.append(pointing_game(out.selection_map.cpu(), gt, bb.patch_size, bb.patch_stride))
            if explanation is not None:
                bb = model.backbone
                maps = _explained_maps(explanation)
                rows, cols = next(iter(maps.values())).shape[-2:]
                masks = {name for name, info in model.map_info().items() if info.mask}
                gt = gt_parts[seen : seen + len(targets)] * torch.tensor([w, h, 1.0])  # (B, P, 3) pixels
                boxes = None if explanation.output.boxes is None else explanation.output.boxes.cpu()
                grid = PatchGrid(rows, cols, bb.patch_size, bb.patch_stride)
                out_all.parts.append(part_scores(maps, gt, grid, part_radius, boxes, masks))
            seen += len(targets)
        return out_all

    def gathered(self) -> _Collected:
        """Every rank's batches, in rank order (= data order)."""
        parts = all_gather_objects(tuple(getattr(self, f.name) for f in fields(self)))
        return _Collected(*([x for part in parts for x in part[i]] for i in range(len(fields(self)))))

    def result(self, *, retrieval: bool, tta: str | None, class_names: Any,
               temperature: float | None = None) -> EvalResult:
        """The metrics over every collected image (``temperature``: also the calibrated ones, at it)."""
        seen = sum(len(t) for t in self.targets)
        if seen == 0:
            raise ValueError("evaluate() got an empty dataset")
        logits, targets = torch.cat(self.logits), torch.cat(self.targets)
        _check_finite_logits(logits)
        num_classes = logits.shape[1]
        preds = logits.argmax(1)
        top5 = logits.topk(min(5, num_classes), dim=1).indices.eq(targets[:, None]).any(1)
        cm = sk_confusion_matrix(targets.numpy(), preds.numpy(), labels=np.arange(num_classes))
        support = cm.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(support > 0, 100.0 * np.diag(cm) / support, np.nan)
        calibration = _calibration(logits, targets, 1.0, "")
        if temperature is not None:
            calibration.update(_calibration(logits, targets, temperature, "_calibrated"))
            calibration["temperature"] = temperature
        return EvalResult(
            top1=100.0 * preds.eq(targets).float().mean().item(),
            top5=100.0 * top5.float().mean().item(),
            loss=sum(self.losses) / seen,  # summed in batch order, as a single process does
            num_samples=seen,
            per_class_accuracy=per_class,
            confusion_matrix=cm,
            predictions=preds.numpy(),
            targets=targets.numpy(),
            mean_iou=torch.cat(self.ious).mean().item() if self.ious else None,
            pointing_game=100.0 * torch.cat(self.hits).float().mean().item() if self.hits else None,
            retrieval=retrieval_metrics(torch.cat(self.embeddings), targets) if retrieval else None,
            tta=tta,
            class_names=class_names(num_classes),
            **calibration,
        )


def _calibration(logits: Tensor, targets: Tensor, temperature: float, suffix: str) -> dict[str, Any]:
    """``EvalResult``'s calibration fields of ``softmax(logits / temperature)``, named with ``suffix``."""
    probs = (logits.double() / temperature).softmax(1)  # (N, C)
    out: dict[str, Any] = {k + suffix: v for k, v in calibration_metrics(probs, targets).items()}
    out["confidence" + suffix] = probs.max(1).values.numpy()
    return out


def _check_finite_logits(logits: Tensor) -> None:
    """argmax of NaN is class 0: the accuracy would be silently meaningless, so stop and say where."""
    finite = torch.isfinite(logits).all(1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise FloatingPointError(
            f"the model's output is not finite (NaN or inf) for {int((~finite).sum())} of {len(finite)} images, "
            f"the first at index {first} of the data: NaN in the images, or weights that are corrupt or diverged"
        )


def _class_names(model: FGVCModel, data: Any, num_classes: int) -> list[str] | None:
    for names in (getattr(model, "class_names", None), classes_of(data)):
        if names is not None and len(names) == num_classes:
            return [str(n) for n in names]
    return None


def _check_tta(tta: str | None) -> None:
    if tta not in TTA_MODES:
        from ..hints import did_you_mean

        raise ValueError(f"unknown tta {tta!r}{did_you_mean(str(tta), ['hflip'])}; choose None (off) or 'hflip'")


def tta_forward(model: FGVCModel, images: Tensor, tta: str | None = None) -> ModelOutput:
    """``model(images)``, or with ``tta="hflip"`` the output with both views' predictions combined.

    ``logits`` become the log of the mean of the two views' softmax probabilities (so ``argmax``, softmax and
    the cross-entropy loss all read the averaged prediction) and ``embedding`` the mean of the two embeddings;
    boxes, maps and extras stay those of the unflipped image (they live in its frame).
    """
    _check_tta(tta)
    out = model(images)
    if tta is None:
        return out
    mirrored = model(images.flip(-1))
    probs = (out.logits.float().softmax(1) + mirrored.logits.float().softmax(1)) / 2
    embedding = out.embedding
    if embedding is not None and mirrored.embedding is not None:
        embedding = (embedding + mirrored.embedding) / 2
    return replace(out, logits=probs.clamp_min(1e-12).log().to(out.logits.dtype), embedding=embedding)


def _shard(n: int, batch_size: int) -> tuple[int, int]:
    """(start, stop) of this rank's contiguous run of whole batches (possibly empty)."""
    batches, world, rank = -(-n // batch_size), get_world_size(), get_rank()
    b0, b1 = rank * batches // world, (rank + 1) * batches // world
    return min(b0 * batch_size, n), min(b1 * batch_size, n)


def check_labels(targets: Tensor, num_classes: int) -> None:
    """A wrong class count between data and model is named, not left to a CUDA assert."""
    if not len(targets):
        return
    low, high = int(targets.min()), int(targets.max())
    if low < 0:
        raise ValueError(
            f"label {low} found in the data: labels must be 0..{num_classes - 1} (class indices, not negative; "
            "an 'ignore' label such as -1 cannot be scored)"
        )
    if high >= num_classes:
        raise ValueError(
            f"label {high} found in the data but the model has {num_classes} classes "
            f"(labels must be 0..{num_classes - 1}): wrong dataset or num_classes?"
        )


def check_same_classes(
    model: FGVCModel, data: Any, *, data_name: str = "the data", model_name: str = "the model"
) -> None:
    """Raise a ValueError when ``data``'s classes are not ``model``'s (count, or names in label order).

    Label k of the data is scored against output k of the model, so a dataset whose classes come in another
    order (or are other classes) would give a wrong accuracy without any other sign. Data without ``classes``
    and a model without ``class_names`` are checked as far as they go (the count; nothing). ``data_name`` and
    ``model_name`` say which data and model in the message (e.g. the folder and the checkpoint).
    """
    classes = classes_of(data)
    if classes is None:
        return
    classes = [str(c) for c in classes]
    if len(classes) != model.num_classes:
        raise ValueError(
            f"{data_name} has {len(classes)} classes but {model_name} has {model.num_classes}: wrong dataset, "
            "or a class subset of it (data.classes, fgvc.data.subset_classes) the model was trained on"
        )
    names = getattr(model, "class_names", None)
    if not names:
        return
    names = [str(n) for n in names]
    differ = [k for k, (a, b) in enumerate(zip(classes, names, strict=True)) if a != b]
    if differ:
        k = differ[0]
        order = " (the same names in another order)" if sorted(classes) == sorted(names) else ""
        raise ValueError(
            f"the classes of {data_name} differ from those of {model_name}{order}: {len(differ)} of "
            f"{len(classes)} labels name another class, the first is label {k}: {classes[k]!r} in the data, "
            f"{names[k]!r} in the model"
        )
