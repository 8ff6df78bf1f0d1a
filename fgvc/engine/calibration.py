"""Calibration: how far a model's confidence is from its accuracy, and one temperature that brings them
closer.

    metrics = calibration_metrics(probs, targets)        # {"ece": ..., "nll": ..., "brier": ...}
    t = fit_temperature(val_logits, val_targets)         # softmax(logits / t) is calibrated on validation

The metrics (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017):

* **ECE**, expected calibration error: the top-1 confidences are put in ``bins`` equal-width bins of (0, 1]
  (bin b holds confidences in ``(b / bins, (b + 1) / bins]``); ECE is the mean over bins of
  ``|accuracy - mean confidence|`` weighted by the share of images in the bin. A fraction (0 to 1), not
  percent.
* **NLL**: the mean of ``-log p(true class)`` (``sklearn.metrics.log_loss``).
* **Brier score**, multi-class: the mean over images of ``sum_k (p_k - [k == true class])^2``, from 0
  (certain and right) to 2 (certain and wrong); the sum over classes of ``sklearn.metrics.brier_score_loss``
  of each class against the rest.

Temperature scaling divides the logits by one positive number fitted on the validation split: argmax, and so
top-1 and the confusion matrix, never change. ``fgvc.calibrate`` (``fgvc.engine.evaluate.calibrate``) fits it
for a model; ``fgvc.evaluate`` reports these metrics before and after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ECE_BINS",
    "MAX_TEMPERATURE",
    "Reliability",
    "calibration_metrics",
    "check_temperature",
    "fit_temperature",
    "reliability",
    "temperature_of",
]

#: Bins of the expected calibration error and of the reliability diagram (the usual 15, equal width).
ECE_BINS = 15
#: ``fit_temperature`` searches temperatures in [1 / MAX_TEMPERATURE, MAX_TEMPERATURE].
MAX_TEMPERATURE = 100.0


@dataclass
class Reliability:
    """Top-1 confidence against accuracy in equal-width bins (a reliability diagram's numbers).

    ``edges``: (bins + 1,) from 0 to 1; ``count``: (bins,) images per bin; ``confidence`` and ``accuracy``:
    (bins,) the bin's mean top-1 confidence and its share of correct predictions (fractions; NaN where the bin
    is empty).
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: ``sum_b count_b / N * |accuracy_b - confidence_b|``, non-empty bins."""
        seen = self.count > 0
        gap = np.abs(self.accuracy[seen] - self.confidence[seen])
        return float((self.count[seen] * gap).sum() / self.count.sum())


def reliability(
    confidence: np.ndarray | Tensor, correct: np.ndarray | Tensor, bins: int = ECE_BINS
) -> Reliability:
    """Bin ``confidence`` ((N,) top-1 probabilities in [0, 1]) with ``correct`` ((N,) bool) into ``bins``
    equal-width bins; bin b holds ``(b / bins, (b + 1) / bins]`` (a confidence of 0 goes in the first)."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(conf) != len(hit) or not len(conf):
        raise ValueError(
            f"reliability needs as many confidences as correctness flags, at least one: got "
            f"{len(conf)} and {len(hit)}"
        )
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)  # (N,) right-closed bins
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=bins) / count
        accuracy = np.bincount(index, weights=hit, minlength=bins) / count
    return Reliability(np.linspace(0.0, 1.0, bins + 1), count, mean_conf, accuracy)


def calibration_metrics(
    probs: np.ndarray | Tensor, targets: np.ndarray | Tensor, bins: int = ECE_BINS
) -> dict[str, float]:
    """``{"ece", "nll", "brier"}`` of class probabilities ``probs`` (N, C) for labels ``targets`` (N,).

    ECE over ``bins`` equal-width bins of the top-1 confidence; NLL the mean ``-log p(true)`` (a probability
    of 0 counts as the smallest positive float64, so one certain mistake is large, not infinite); Brier the
    multi-class score, ``mean_i sum_k (p_ik - onehot_ik)^2``. Definitions: this module's docstring.
    """
    p = torch.as_tensor(probs).double()  # (N, C)
    t = torch.as_tensor(targets).long().reshape(-1)  # (N,)
    if p.ndim != 2 or len(p) != len(t) or not len(t):
        raise ValueError(
            f"calibration_metrics needs probs (N, C) and targets (N,), N >= 1: got "
            f"{tuple(p.shape)} and {tuple(t.shape)}"
        )
    if int(t.min()) < 0 or int(t.max()) >= p.shape[1]:
        raise ValueError(
            f"targets must be class indices 0..{p.shape[1] - 1}, got {int(t.min())}..{int(t.max())}"
        )
    confidence, predicted = p.max(1)  # (N,), (N,)
    true_p = p.gather(1, t[:, None])[:, 0]  # (N,)
    onehot = torch.nn.functional.one_hot(t, p.shape[1]).double()  # (N, C)
    return dict(
        ece=reliability(confidence.numpy(), predicted.eq(t).numpy(), bins).ece,
        nll=float(-true_p.clamp_min(np.finfo(np.float64).tiny).log().mean()),
        brier=float((p - onehot).pow(2).sum(1).mean()),
    )


def fit_temperature(logits: Tensor, targets: Tensor, *, max_iter: int = 200) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` for ``targets``.

    logits: (N, C) class scores (for a method that outputs log-probabilities, such as DCAL's averaged
    branches, those); targets: (N,). One parameter, log T, from 0 (T = 1) by L-BFGS with a strong-Wolfe line
    search in float64 on the CPU, so the same inputs always give the same T; T stays in [1 / MAX_TEMPERATURE,
    MAX_TEMPERATURE] (validation data that is all right with margin would otherwise drive T to 0).
    """
    # Copies: tensors gathered under inference_mode cannot enter autograd.
    z = torch.as_tensor(logits).detach().cpu().double().clone()  # (N, C)
    t = torch.as_tensor(targets).detach().cpu().long().reshape(-1).clone()  # (N,)
    if z.ndim != 2 or len(z) != len(t) or not len(t):
        raise ValueError(
            f"fit_temperature needs logits (N, C) and targets (N,), N >= 1: got {tuple(z.shape)} "
            f"and {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(z).all()):
        raise FloatingPointError("fit_temperature: the logits are not all finite (NaN or inf)")
    if int(t.min()) < 0 or int(t.max()) >= z.shape[1]:
        raise ValueError(
            f"targets must be class indices 0..{z.shape[1] - 1}, got {int(t.min())}..{int(t.max())}"
        )
    bound = math.log(MAX_TEMPERATURE)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.clamp(-bound, bound).exp(), t)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().clamp(-bound, bound).exp())


def check_temperature(value: object, where: str = "temperature") -> float:
    """``value`` as a float if it is a finite positive number, else a ValueError naming ``where``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{where} must be a finite number > 0, got {value!r}")
    return float(value)


def temperature_of(model: object) -> float:
    """The model's calibration temperature (``model.temperature``, set by ``fgvc.calibrate`` or read from its
    checkpoint); 1.0 for a model that has none."""
    return check_temperature(getattr(model, "temperature", 1.0), f"{type(model).__name__}.temperature")
