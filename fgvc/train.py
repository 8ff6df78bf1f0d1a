"""One training loop for every method.

``fit`` only calls ``model(images)`` and ``model.loss(output, targets)``: mixed precision, gradient clipping,
the warmup + cosine schedule, seeding, progress bars, validation and checkpoints are done here once for all
methods. Checkpoints are chosen on the validation split only; the test split is never looked at by ``fit``
(evaluate it once, at the end, with ``fgvc.evaluate``).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import save_model
from .evaluate import _check_labels, evaluate
from .methods.base import FGVCModel

__all__ = ["History", "fit", "seed_everything"]


@dataclass
class History:
    """Per-epoch records of a ``fit`` run: ``history.epochs[i]`` is a dict, ``history["val_top1"]`` a list."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    checkpoint_dir: Path | None = None

    def __getitem__(self, key: str) -> list[float]:
        return [e.get(key, math.nan) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def best(self) -> dict[str, float] | None:
        """The record of the epoch with the best validation top-1 (None without validation data)."""
        return None if self.best_epoch is None else self.epochs[self.best_epoch - 1]

    def plot(self, ax: Any = None) -> Any:
        """Loss and top-1 curves (train and validation) as a matplotlib figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        else:
            fig = ax[0].figure
        x = self["epoch"]
        ax[0].plot(x, self["train_loss"], label="train")
        ax[1].plot(x, self["train_top1"], label="train")
        if any(not math.isnan(v) for v in self["val_loss"]):
            ax[0].plot(x, self["val_loss"], label="val")
            ax[1].plot(x, self["val_top1"], label="val")
        ax[0].set(xlabel="epoch", ylabel="loss")
        ax[1].set(xlabel="epoch", ylabel="top-1 (%)")
        for a in ax:
            a.legend()
            a.grid(alpha=0.3)
        fig.tight_layout()
        return fig


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _autocast_dtype(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """'auto': bf16 on CUDA GPUs that support it, none on the CPU (slower there than fp32)."""
    if amp in (None, False, "none", "fp32"):
        return None
    if amp in ("auto", True):
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16"):
        return torch.float16
    raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or None, got {amp!r}")


def fit(
    model: FGVCModel,
    train_data: Dataset,
    val_data: Dataset | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    optimizer: str = "adamw",
    lr: float = 5e-4,
    weight_decay: float = 0.05,
    momentum: float = 0.9,
    warmup_steps: int | None = None,
    min_lr: float = 1e-6,
    label_smoothing: float = 0.0,
    grad_clip: float | None = 1.0,
    amp: str | bool | None = "auto",
    device: str | torch.device | None = None,
    seed: int = 0,
    num_workers: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` on ``train_data``, validating on ``val_data`` after every epoch.

    Args:
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum), built by timm (no weight decay on norms and biases).
        lr, min_lr, warmup_steps: linear warmup (default: one epoch, at most 500 steps) then cosine decay to
            ``min_lr``, updated every step.
        label_smoothing: passed to the model's loss.
        grad_clip: clip the global gradient norm (None: off).
        amp: ``"auto"`` (bf16 on capable GPUs, fp32 on the CPU), ``"bf16"``, ``"fp16"`` (with a grad scaler)
            or None.
        out_dir: if given, ``last.safetensors`` is written every epoch and ``best.safetensors`` whenever the
            validation top-1 improves.
    Returns:
        ``History`` with loss, top-1, top-5, lr and seconds per epoch.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _check_class_count(model, train_data, "train_data")
    if val_data is not None:
        _check_class_count(model, val_data, "val_data")
    class_names = getattr(train_data, "classes", None) or model.class_names
    if class_names is not None:
        model.class_names = list(class_names)

    generator = seed_everything(seed)
    model.to(device)
    loader = DataLoader(
        train_data,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_data) > batch_size,
        num_workers=num_workers,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    if len(loader) == 0:
        raise ValueError("train_data is empty")
    total_steps = epochs * len(loader)
    warmup = min(len(loader), 500) if warmup_steps is None else warmup_steps
    opt = create_optimizer_v2(model, opt=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum)
    sched = CosineLRScheduler(
        opt, t_initial=total_steps, lr_min=min_lr, warmup_t=warmup, warmup_lr_init=min(min_lr, lr), t_in_epochs=False
    )
    dtype = _autocast_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    out_dir = Path(out_dir) if out_dir is not None else None
    history = History(checkpoint_dir=out_dir)
    best_top1, step = -math.inf, 0

    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        loss_sum, correct1, correct5, seen = 0.0, 0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress)
        for images, targets in bar:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = model(images)
                _check_labels(targets, out.logits.shape[1])
                loss = model.loss(out, targets, label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                lr_now = opt.param_groups[0]["lr"]
                raise FloatingPointError(
                    f"loss is {loss.item()} at epoch {epoch}, step {step} (lr {lr_now:.3g}); "
                    "lower the learning rate or enable gradient clipping"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            sched.step_update(num_updates=step)

            n = len(targets)
            loss_sum += loss.item() * n
            top5 = out.logits.detach().topk(min(5, out.logits.shape[1]), dim=1).indices
            correct1 += int((top5[:, 0] == targets).sum())
            correct5 += int((top5 == targets[:, None]).any(1).sum())
            seen += n
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", top1=f"{100 * correct1 / seen:.1f}")

        record = dict(
            epoch=epoch,
            train_loss=loss_sum / seen,
            train_top1=100.0 * correct1 / seen,
            train_top5=100.0 * correct5 / seen,
            lr=opt.param_groups[0]["lr"],
        )
        if val_data is not None:
            result = evaluate(model, val_data, batch_size=batch_size, device=device, num_workers=num_workers)
            record.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5)
            if result.mean_iou is not None:
                record["val_iou"] = result.mean_iou
        record["seconds"] = time.perf_counter() - start
        history.epochs.append(record)

        improved = val_data is not None and record["val_top1"] > best_top1
        if improved:
            best_top1, history.best_epoch = record["val_top1"], epoch
        if out_dir is not None:
            meta = dict(epoch=epoch, metrics=record)
            save_model(model, out_dir / "last.safetensors", class_names=model.class_names, extra=meta)
            if improved:
                save_model(model, out_dir / "best.safetensors", class_names=model.class_names, extra=meta)
        if progress:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
            tqdm.write(" ".join(f"{k}={v}" for k, v in shown.items()))
    return history


def _check_class_count(model: FGVCModel, data: Dataset, name: str) -> None:
    """Catch a dataset / head class-count mismatch before the first step."""
    classes = getattr(data, "classes", None)
    if classes is not None and len(classes) != model.num_classes:
        raise ValueError(
            f"{name} has {len(classes)} classes but the model was built with num_classes={model.num_classes}"
        )
