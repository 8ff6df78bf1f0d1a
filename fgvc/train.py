"""One training loop for every method.

``fit`` only calls ``model(images)`` and ``model.loss(output, targets)``: mixed precision, gradient
accumulation and clipping, the warmup + cosine schedule, seeding, progress bars, validation, logs,
checkpoints, resuming and ``torchrun`` data parallelism are done here once for all methods. Checkpoints are
chosen on the validation split only; the test split is never looked at by ``fit`` (evaluate it once, at the
end, with ``fgvc.evaluate``).

Files in ``out_dir`` (written by rank 0 only):

* ``last.safetensors`` / ``best.safetensors``: the model (``fgvc.load_model``), last and best on validation;
* ``train_state.safetensors``: model, optimizer, scheduler, grad scaler, step, sampler position, RNG
  states and history, in one atomically written file (no pickle), for ``fit(..., resume=True)``;
* ``log.jsonl``: one JSON line every ``log_every_steps`` steps and one per epoch (``plot_log`` draws it);
* ``tensorboard/``: the same scalars, when the ``tensorboard`` package is installed.

Determinism: the order of the training images is a function of (seed, epoch) (``DistributedSampler``), and
each image's augmentation randomness a function of (seed, epoch, index), whatever ``num_workers``. The
training RNG (dropout, drop-path, DCAL's pairing) is seeded with ``seed + rank`` and saved with every
checkpoint, so a resumed run continues exactly where the saved one was: on the CPU the weights after resume
equal those of an uninterrupted run bit for bit (tested). On GPUs bitwise equality additionally needs
deterministic kernels (``torch.use_deterministic_algorithms``), which fit does not switch on.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm

from .checkpoint import (
    check_state_matches,
    load_train_state,
    remove_stale_temporaries,
    save_model,
    save_train_state,
)
from .distributed import (
    all_gather_objects,
    all_reduce_sum,
    any_rank,
    barrier,
    get_rank,
    get_world_size,
    init_distributed,
    wrap_ddp,
)
from .evaluate import check_labels, evaluate
from .methods.base import FGVCModel
from .precision import autocast_dtype, set_tf32
from .settings import check_fit_settings

__all__ = ["History", "fit", "plot_log", "seed_everything"]

STATE_FILE = "train_state.safetensors"
LOG_FILE = "log.jsonl"


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

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike) -> History:
        """The epoch records of a ``log.jsonl`` written by ``fit`` (a file, or the ``out_dir`` holding it)."""
        path = Path(path)
        path = path / LOG_FILE if path.is_dir() else path
        epochs = []
        for line in _read_jsonl(path):
            if line.get("kind") == "epoch":
                epochs.append({k: v for k, v in line.items() if k not in ("kind", "step", "time")})
        history = cls(epochs=epochs, checkpoint_dir=path.parent)
        scored = [(e["val_top1"], -i) for i, e in enumerate(epochs) if "val_top1" in e]
        if scored:
            history.best_epoch = -max(scored)[1] + 1  # the first epoch reaching the best top-1, as fit keeps
        return history

    def plot(self, ax: Any = None) -> Any:
        """Loss and top-1 curves (train and validation) as a matplotlib figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        else:
            fig = ax[0].figure
        x = self["epoch"]
        marker = "o" if len(x) <= 30 else None  # a short curve shows its points
        ax[0].plot(x, self["train_loss"], label="train", marker=marker)
        ax[1].plot(x, self["train_top1"], label="train", marker=marker)
        if any(not math.isnan(v) for v in self["val_loss"]):
            ax[0].plot(x, self["val_loss"], label="val", marker=marker)
            ax[1].plot(x, self["val_top1"], label="val", marker=marker)
        ax[0].set(xlabel="epoch", ylabel="loss")
        ax[1].set(xlabel="epoch", ylabel="top-1 (%)")
        for a in ax:
            a.legend()
            a.grid(alpha=0.3)
            a.ticklabel_format(axis="y", useOffset=False)
        fig.tight_layout()
        return fig


def plot_log(path: str | os.PathLike, ax: Any = None) -> Any:
    """Training curves from a ``log.jsonl`` (or the ``out_dir`` holding it), also while a run is going.

    Three panels: loss per logged step with the epoch means (train, val) at their last step, top-1 per
    epoch, and the learning rate per step. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path = path / LOG_FILE if path.is_dir() else path
    lines = _read_jsonl(path)
    steps = [r for r in lines if r.get("kind") == "step"]
    epochs = [r for r in lines if r.get("kind") == "epoch"]
    if ax is None:
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.2))
    else:
        fig = ax[0].figure
    if steps:
        marker = "." if len(steps) <= 30 else None  # a short curve shows its points
        ax[0].plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6, marker=marker,
                   label="train (step)")
        ax[2].plot([r["step"] for r in steps], [r["lr"] for r in steps], marker=marker)
    for key, label in (("train_loss", "train (epoch)"), ("val_loss", "val")):
        pts = [(r["step"], r[key]) for r in epochs if key in r]
        if pts:
            ax[0].plot(*zip(*pts, strict=True), marker="o", label=label)
    for key, label in (("train_top1", "train"), ("val_top1", "val")):
        pts = [(r["epoch"], r[key]) for r in epochs if key in r]
        if pts:
            ax[1].plot(*zip(*pts, strict=True), marker="o", label=label)
    ax[0].set(xlabel="step", ylabel="loss")
    ax[1].set(xlabel="epoch", ylabel="top-1 (%)")
    ax[2].set(xlabel="step", ylabel="learning rate")
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend()
        a.grid(alpha=0.3)
        a.ticklabel_format(axis="y", useOffset=False)  # a loss that barely moves reads 2.3026, not 1e-6+2.30258
    fig.tight_layout()
    return fig


@contextmanager
def reproducible(threads: int) -> Iterator[None]:
    """Within the context: a fixed thread count and deterministic algorithms (restored on exit), so a seeded
    run prints the same numbers on every run of the same machine type and torch version."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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
    resume: bool | str | os.PathLike = False,
    save_every_steps: int | None = None,
    accumulate_steps: int = 1,
    compile: bool = False,
    channels_last: bool = False,
    tf32: bool | None = None,
    log_every_steps: int = 50,
    tensorboard: bool | None = None,
    find_unused_parameters: bool = False,
) -> History:
    """Train ``model`` on ``train_data``, validating on ``val_data`` after every epoch.

    Args:
        epochs, batch_size: ``batch_size`` images per process and forward pass; the optimizer sees
            ``batch_size * accumulate_steps * world_size`` images per step.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum), built by timm (no weight decay on norms and biases).
        lr, min_lr, warmup_steps: linear warmup (default: one epoch, at most 500 steps) then cosine decay to
            ``min_lr``, updated every optimizer step.
        label_smoothing: passed to the model's loss.
        grad_clip: clip the global gradient norm (None: off).
        amp: ``"auto"`` (bf16 on capable GPUs, fp32 on the CPU), ``"bf16"``, ``"fp16"`` (with a grad scaler
            on CUDA) or None.
        out_dir: if given, ``last.safetensors`` and ``train_state.safetensors`` are written every epoch (and
            every ``save_every_steps`` steps), ``best.safetensors`` whenever the validation top-1 improves,
            and ``log.jsonl`` (+ TensorBoard) as training goes.
        resume: True: continue from ``out_dir/train_state.safetensors`` if it exists (else start fresh, so
            a requeued job can always pass it); a path (file or directory): continue from that state, which
            must exist. Model, optimizer, schedule, grad scaler, RNG and the position in the epoch are
            restored; the data, model architecture and class count must match the saved run, and so must
            the optimizer settings (``lr``, ``weight_decay``, ``momentum`` for SGD, ``min_lr``,
            ``warmup_steps``, ``label_smoothing``, ``grad_clip``): a resume with others is refused, naming
            them. ``epochs`` may grow (the schedule is recomputed), not shrink below what was trained.
        save_every_steps: also checkpoint every N optimizer steps inside an epoch (for long epochs on
            preemptible machines); None: at epoch ends only.
        accumulate_steps: gradient accumulation: one optimizer step per this many forward passes.
        compile: ``torch.compile`` the training forward (the first steps compile; evaluation stays eager).
        channels_last: NHWC images and weights (only the patch-embedding convolution of a ViT benefits).
        tf32: on CUDA, allow TF32 matmuls / convolutions (True), forbid them (False), or leave PyTorch's
            setting (None). Restored when ``fit`` returns.
        log_every_steps: a ``log.jsonl`` line every N optimizer steps (plus one per epoch).
        tensorboard: write TensorBoard scalars to ``out_dir/tensorboard``; None: when it is installed.
        find_unused_parameters: passed to DistributedDataParallel (every built-in method uses all its
            parameters in training, so it stays off).

    Every setting is checked before anything runs (``fgvc.settings.check_fit_settings``, which recipes use
    too). A non-finite loss stops training naming the optimizer step; so does an update that leaves a weight
    or optimizer tensor non-finite, checked before every save and at every epoch end: nothing non-finite is
    ever written, so the checkpoints in ``out_dir`` stay good ones.

    Under ``torchrun`` (WORLD_SIZE > 1) the process group is joined here (NCCL on CUDA, gloo on the CPU),
    the model wrapped in DistributedDataParallel, the training set sharded by ``DistributedSampler``,
    validation evaluated exactly across ranks, and only rank 0 writes files and prints.

    Returns:
        ``History`` with loss, top-1, top-5, lr and seconds per epoch (train metrics over all ranks).
    """
    check_fit_settings({k: v for k, v in locals().items() if k not in ("model", "train_data", "val_data")})
    settings = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, min_lr=min_lr, warmup_steps=warmup_steps,
                    label_smoothing=label_smoothing, grad_clip=grad_clip)  # a resumed run must keep them
    device = init_distributed(device)
    rank, world = get_rank(), get_world_size()
    main = rank == 0
    net = model
    _check_class_count(net, train_data, "train_data")
    _check_image_size(net, train_data, "train_data")
    if val_data is not None:
        _check_class_count(net, val_data, "val_data")
        _check_image_size(net, val_data, "val_data")
        _check_same_classes(train_data, val_data)
    class_names = getattr(train_data, "classes", None) or net.class_names
    if class_names is not None:
        net.class_names = list(class_names)
    out_dir = Path(out_dir) if out_dir is not None else None

    # ---- the saved run, checked against this one before anything is trained
    state_path = _resume_path(resume, out_dir)
    saved: dict[str, Any] | None = None
    saved_tensors: dict[str, Tensor] = {}
    if state_path is not None:
        model_state, saved, saved_tensors = load_train_state(state_path)
        _check_resume(net, saved, train_data, state_path, optimizer=optimizer, world=world, batch_size=batch_size,
                      accumulate_steps=accumulate_steps, seed=seed, epochs=epochs, settings=settings)
        check_state_matches(net, model_state, state_path)
        net.load_state_dict(model_state, strict=True)

    seed_everything(seed + rank)
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    sampler = DistributedSampler(train_data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    batches = _EpochBatches(sampler, batch_size, drop_last=len(sampler) > batch_size)
    loader = DataLoader(
        _SeededItems(train_data, seed),
        batch_sampler=batches,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps the global RNG untouched
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    micro_per_epoch = batches.num_batches
    if micro_per_epoch == 0:
        raise ValueError("train_data is empty")
    steps_per_epoch = math.ceil(micro_per_epoch / accumulate_steps)
    total_steps = epochs * steps_per_epoch
    warmup = min(steps_per_epoch, 500) if warmup_steps is None else warmup_steps
    opt = create_optimizer_v2(net, opt=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum)
    sched = CosineLRScheduler(
        opt, t_initial=total_steps, lr_min=min_lr, warmup_t=warmup, warmup_lr_init=min(min_lr, lr), t_in_epochs=False
    )
    dtype = autocast_dtype(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    history = History(checkpoint_dir=out_dir)
    best_top1, step, start_epoch, micro_done = -math.inf, 0, 1, 0
    sums = [0.0, 0.0, 0.0, 0.0]  # this epoch on this rank: loss x images, top-1 hits, top-5 hits, images
    saved_step = None  # the step of the training state on disk: what a failure leaves the user with
    if saved is not None:
        saved_step = saved["step"]
        opt.load_state_dict(saved["optimizer_state_dict"])
        if saved.get("scheduler", {}).get("t_initial") == total_steps:
            sched.load_state_dict(saved["scheduler"])
        elif saved["epoch"] <= epochs:
            warnings.warn(
                f"resuming a {saved['epochs']}-epoch run with epochs={epochs}: the learning-rate schedule is "
                f"recomputed for the new length from step {saved['step']} on", stacklevel=2
            )
        if scaler.is_enabled() and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        step, start_epoch, micro_done = saved["step"], saved["epoch"], saved["batches_done"]
        sched.step_update(num_updates=step)
        history.epochs = saved["history"]
        history.best_epoch = saved["best_epoch"]
        best_top1 = -math.inf if saved["best_top1"] is None else saved["best_top1"]
        if micro_done:
            sums = saved["sums"][rank]
        if saved["world_size"] == world:
            _set_rng_state(saved["rng"][rank], saved_tensors, rank, device)
        else:  # allowed at epoch boundaries only (checked): a fresh, still seeded, stream per rank
            seed_everything(seed + rank + 1_000_003 * step)

    ddp = wrap_ddp(net, device, find_unused_parameters)  # ``net`` itself when not distributed
    fwd = torch.compile(ddp) if compile else ddp
    if out_dir is not None and main:
        remove_stale_temporaries(out_dir)  # of a write killed in an earlier run
    log = _Log(out_dir, enabled=main, resume_step=step if saved is not None else None, tensorboard=tensorboard)
    tf32_before = set_tf32(tf32)

    def advice() -> str:
        clip = "" if grad_clip is not None else " or enable gradient clipping (grad_clip)"
        if out_dir is None:
            return f"lower the learning rate{clip}"
        kept = (f"the last checkpoint (step {saved_step}) is kept in {out_dir}" if saved_step is not None
                else f"no checkpoint was written to {out_dir} yet")
        return f"lower the learning rate{clip}; {kept}"

    def check_finite(epoch: int, lr_used: float) -> None:
        """Stop, before anything is saved or evaluated, when the last update made weights non-finite."""
        bad = _non_finite(net, opt)
        if any_rank(bad is not None, device):
            raise FloatingPointError(
                f"the weights are not finite after optimizer step {step} (epoch {epoch}, lr {lr_used:.3g}): "
                f"{bad or 'a tensor on another rank'} holds NaN or inf although the loss was finite, and nothing "
                f"of this step was saved: {advice()}"
            )

    def checkpoint(epoch_next: int, done: int) -> None:
        """Write the resume state (at epoch ends the caller has written last/best before)."""
        nonlocal saved_step
        if out_dir is None:
            return
        rng = all_gather_objects(_rng_state(device))  # every rank's, so each continues its own stream
        all_sums = all_gather_objects(list(sums))
        if main:
            write_state(rng, all_sums, epoch_next, done)
        saved_step = step
        barrier()  # no rank reads (resume, load best) a file rank 0 is still writing

    def write_state(rng: list[dict[str, Any]], all_sums: list[list[float]], epoch_next: int, done: int) -> None:
        tensors = {}
        for r, entry in enumerate(rng):
            tensors[f"rng/{r}/torch"] = entry.pop("torch")
            for i, t in enumerate(entry.pop("cuda")):
                tensors[f"rng/{r}/cuda/{i}"] = t
        save_train_state(
            out_dir / STATE_FILE,
            model=net,
            optimizer=opt,
            tensors=tensors,
            state=dict(
                step=step, epoch=epoch_next, batches_done=done, epochs=epochs, world_size=world,
                batch_size=batch_size, accumulate_steps=accumulate_steps, seed=seed, optimizer_name=optimizer,
                num_train=len(train_data), class_names=net.class_names, sums=all_sums, history=history.epochs,
                best_epoch=history.best_epoch, best_top1=None if best_top1 == -math.inf else best_top1,
                scheduler=sched.state_dict(), scaler=scaler.state_dict(), rng=rng, settings=settings,
            ),
        )

    try:
        for epoch in range(start_epoch, epochs + 1):
            fwd.train()
            batches.set_epoch(epoch, skip=micro_done)
            if micro_done == 0:
                sums = [0.0, 0.0, 0.0, 0.0]
            epoch_start = window_start = time.perf_counter()
            window_images, step_loss, step_n = 0, 0.0, 0
            bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not (progress and main))
            for i, (images, targets) in enumerate(bar, start=micro_done):
                group = i // accumulate_steps * accumulate_steps
                group_size = min(accumulate_steps, micro_per_epoch - group)
                last_micro = i == group + group_size - 1
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                # accumulation under DDP: all-reduce the gradients once, after the last micro-batch
                sync = ddp.no_sync() if ddp is not net and not last_micro else nullcontext()
                try:
                    with sync:
                        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                            out = fwd(images)
                            check_labels(targets, out.logits.shape[1])
                            loss = net.loss(out, targets, label_smoothing=label_smoothing)
                        loss_value = loss.item()
                        if any_rank(not math.isfinite(loss_value), device):
                            lr_now = opt.param_groups[0]["lr"]
                            what = loss_value if not math.isfinite(loss_value) else "not finite on another rank"
                            raise FloatingPointError(
                                f"loss is {what} at optimizer step {step + 1} (epoch {epoch}, lr {lr_now:.3g}); "
                                f"{advice()}"
                            )
                        scaler.scale(loss / group_size).backward()
                    if last_micro:
                        if grad_clip is not None:
                            scaler.unscale_(opt)
                            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
                        scaler.step(opt)
                        scaler.update()
                        opt.zero_grad(set_to_none=True)
                except torch.cuda.OutOfMemoryError as e:
                    raise torch.cuda.OutOfMemoryError(_oom_message(batch_size, accumulate_steps, dtype, epoch, step)
                                                      + f"\n{e}") from None

                n = len(targets)
                with torch.no_grad():
                    top5 = out.logits.detach().topk(min(5, out.logits.shape[1]), dim=1).indices
                    sums[0] += loss_value * n
                    sums[1] += int((top5[:, 0] == targets).sum())
                    sums[2] += int((top5 == targets[:, None]).any(1).sum())
                    sums[3] += n
                step_loss, step_n, window_images = step_loss + loss_value * n, step_n + n, window_images + n
                if main and progress:
                    bar.set_postfix(loss=f"{sums[0] / sums[3]:.3f}", top1=f"{100 * sums[1] / sums[3]:.1f}")
                if not last_micro:
                    continue
                lr_used = opt.param_groups[0]["lr"]
                step += 1
                sched.step_update(num_updates=step)
                if step % log_every_steps == 0:
                    elapsed = time.perf_counter() - window_start
                    log.write(dict(kind="step", epoch=epoch, step=step, loss=step_loss / step_n, lr=lr_used,
                                   images_per_s=window_images * world / max(elapsed, 1e-9)))
                    window_start, window_images = time.perf_counter(), 0
                step_loss, step_n = 0.0, 0
                if save_every_steps and step % save_every_steps == 0 and i + 1 < micro_per_epoch:
                    check_finite(epoch, lr_used)
                    checkpoint(epoch, i + 1)
            micro_done = 0
            check_finite(epoch, opt.param_groups[0]["lr"])  # before validation, last / best and the state

            total = all_reduce_sum(sums, device)
            record: dict[str, Any] = dict(
                epoch=epoch,
                train_loss=total[0] / total[3],
                train_top1=100.0 * total[1] / total[3],
                train_top5=100.0 * total[2] / total[3],
                lr=opt.param_groups[0]["lr"],
            )
            if val_data is not None:
                result = evaluate(net, val_data, batch_size=batch_size, device=device, num_workers=num_workers)
                record.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5)
                if result.mean_iou is not None:
                    record["val_iou"] = result.mean_iou
                if getattr(result, "pointing_game", None) is not None:
                    record["val_pointing_game"] = result.pointing_game
            record["seconds"] = time.perf_counter() - epoch_start
            history.epochs.append(record)
            improved = val_data is not None and record["val_top1"] > best_top1
            if improved:
                best_top1, history.best_epoch = record["val_top1"], epoch
            if out_dir is not None and main:
                meta = dict(epoch=epoch, step=step, metrics=record)
                if improved:
                    save_model(net, out_dir / "best.safetensors", class_names=net.class_names, extra=meta)
                save_model(net, out_dir / "last.safetensors", class_names=net.class_names, extra=meta)
            log.write(dict(kind="epoch", step=step, **record))  # before the state: a resume rewrites it if lost
            checkpoint(epoch + 1, 0)
            if progress and main:
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
                tqdm.write(" ".join(f"{k}={v}" for k, v in shown.items()))
    finally:
        log.close()
        set_tf32(tf32_before)
    return history


# ----------------------------------------------------------------------------------------- data order
class _EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` from a ``DistributedSampler``, skipping those a resumed run has done.

    The permutation is ``DistributedSampler``'s: a function of (seed, epoch) only, so the batches of a
    resumed epoch are exactly the remaining ones of the interrupted epoch.
    """

    def __init__(self, sampler: DistributedSampler, batch_size: int, drop_last: bool) -> None:
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.epoch, self.skip = 1, 0

    @property
    def num_batches(self) -> int:
        """Batches in a whole epoch on this rank."""
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_batches - self.skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for i, batch in enumerate(BatchSampler(self.sampler, self.batch_size, self.drop_last)):
            if i >= self.skip:
                yield [(self.epoch, j) for j in batch]


class _SeededItems(Dataset):
    """``data[index]`` with python / numpy / torch (CPU) seeded from (seed, epoch, index) meanwhile.

    Random augmentations then depend on the image and the epoch only, not on the worker that loads it or
    on where a resumed run started; the caller's RNG streams are restored afterwards.
    """

    def __init__(self, data: Dataset, seed: int) -> None:
        self.data, self.seed = data, seed

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s0, s1 = np.random.SeedSequence([self.seed % 2**32, epoch, index]).generate_state(2)
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(int(s0))
        np.random.seed(int(s0))
        torch.default_generator.manual_seed(int(s0) << 32 | int(s1))
        try:
            return self.data[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


# ----------------------------------------------------------------------------------------- RNG state
def _rng_state(device: torch.device) -> dict[str, Any]:
    """python / numpy state as JSON-able lists, torch CPU / CUDA states as tensors."""
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else []
    return dict(
        python=[py[0], list(py[1]), py[2]],
        numpy=[name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        torch=torch.get_rng_state(),
        cuda=cuda,
    )


def _set_rng_state(entry: dict[str, Any], tensors: dict[str, Tensor], rank: int, device: torch.device) -> None:
    version, keys, gauss = entry["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = entry["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors[f"rng/{rank}/torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith(f"rng/{rank}/cuda/"))]
    if device.type == "cuda" and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------- checks
def _resume_path(resume: bool | str | os.PathLike, out_dir: Path | None) -> Path | None:
    """The training state to continue from, or None for a fresh start."""
    if resume is False or resume is None:
        return None
    if resume is True:
        if out_dir is None:
            raise ValueError("resume=True continues from out_dir/train_state.safetensors: give out_dir")
        path = out_dir / STATE_FILE
        return path if path.is_file() else None  # nothing saved yet: start fresh
    path = Path(resume)
    path = path / STATE_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no training state to resume from at {path}")
    return path


def _check_resume(model: FGVCModel, saved: dict[str, Any], data: Dataset, path: Path, *, optimizer: str,
                  world: int, batch_size: int, accumulate_steps: int, seed: int, epochs: int,
                  settings: dict[str, Any]) -> None:
    """A resumed run must train the same model on the same data with the same optimizer settings (the saved
    optimizer state and schedule belong to them); mid-epoch also with the same batches."""
    was = saved.get("model_config") or {}
    now = json.loads(json.dumps(model.config))
    for key in ("method", "backbone", "num_classes", "img_size", "patch_stride", "backbone_kwargs", "options"):
        if key in was and was[key] != now.get(key):
            what = {"num_classes": "class-count mismatch", "img_size": "image-size mismatch"}.get(key, "mismatch")
            raise ValueError(f"{what}: {path} was trained with {key}={was[key]!r}, the model has {now.get(key)!r}")
    names = getattr(data, "classes", None)
    if names is not None and saved.get("class_names") is not None and list(names) != saved["class_names"]:
        raise ValueError(f"the classes of train_data differ from those of the run saved in {path}")
    done = saved["epoch"] - 1  # whole epochs trained; one more is under way when batches_done > 0
    if epochs < done or (epochs == done and saved["batches_done"]):
        trained = f"{done} epochs" + (f" and {saved['batches_done']} batches" if saved["batches_done"] else "")
        raise ValueError(
            f"{path} has already trained {trained}, more than epochs={epochs} asks for; resume with "
            f"epochs >= {done + bool(saved['batches_done'])}, or start a new run in another out_dir"
        )
    if saved.get("optimizer_name", optimizer) != optimizer:
        raise ValueError(f"{path} was trained with optimizer={saved['optimizer_name']!r}, not {optimizer!r}")
    was_settings = saved.get("settings") or {}  # absent in states written before fgvc saved them
    uses_momentum = any(word in optimizer.lower() for word in ("sgd", "momentum", "nesterov"))
    changed = [f"{key}={value!r} (saved: {was_settings[key]!r})" for key, value in settings.items()
               if key in was_settings and was_settings[key] != value and (key != "momentum" or uses_momentum)]
    if changed:
        raise ValueError(
            f"{path} was saved by a run with other settings: {', '.join(changed)}; resume with the saved "
            f"settings (the optimizer state and learning-rate schedule belong to them), or start a new run in "
            f"another out_dir"
        )
    if saved["batches_done"]:  # the position inside the epoch only means something for the same batches
        same = dict(world_size=world, batch_size=batch_size, accumulate_steps=accumulate_steps, seed=seed,
                    num_train=len(data))  # type: ignore[arg-type]
        for key, value in same.items():
            if saved[key] != value:
                raise ValueError(
                    f"{path} stopped inside an epoch with {key}={saved[key]}; resuming it needs the same "
                    f"{key} (got {value}), or resume from an epoch-end checkpoint"
                )
    if saved.get("world_size") != world:
        warnings.warn(f"resuming a {saved.get('world_size')}-process run on {world}: RNG streams restart", stacklevel=3)


def _non_finite(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """The name of a weight or optimizer tensor holding NaN or inf, or None (one device sync in all)."""
    names = {p: n for n, p in model.named_parameters()}
    tensors = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]
    for param, entry in optimizer.state.items():
        for key, value in entry.items():
            if isinstance(value, Tensor) and value.is_floating_point():
                tensors.append((f"the optimizer's {key} of {names.get(param, 'a parameter')}", value))
    if not tensors:
        return None
    finite = torch.stack([torch.isfinite(t).all().to(tensors[0][1].device) for _, t in tensors]).cpu()
    return None if bool(finite.all()) else tensors[int((~finite).nonzero()[0])][0]


def _check_class_count(model: FGVCModel, data: Dataset, name: str) -> None:
    """Catch a dataset / head class-count mismatch before the first step."""
    classes = getattr(data, "classes", None)
    if classes is not None and len(classes) != model.num_classes:
        raise ValueError(
            f"{name} has {len(classes)} classes but the model was built with num_classes={model.num_classes}"
        )


def _check_same_classes(train_data: Dataset, val_data: Dataset) -> None:
    """Label k must mean the same class in both datasets (same count is not enough: the order matters)."""
    train, val = getattr(train_data, "classes", None), getattr(val_data, "classes", None)
    if train is None or val is None or list(train) == list(val):
        return
    k = next((i for i, (a, b) in enumerate(zip(val, train, strict=False)) if a != b), len(val))
    shown = (f"label {k} is {val[k]!r} vs {train[k]!r}" if k < min(len(val), len(train))
             else f"{len(val)} vs {len(train)} classes")
    raise ValueError(f"val_data's classes differ from train_data's: {shown} (label k must be the same class in both)")


def _check_image_size(model: FGVCModel, data: Dataset, name: str) -> None:
    """Catch images of another size than the model's ``img_size`` before the first step (reads one item)."""
    if len(data) == 0:  # type: ignore[arg-type]
        return
    image = data[0][0]
    if isinstance(image, Tensor) and image.ndim == 3 and tuple(image.shape[-2:]) != tuple(model.img_size):
        h, w = image.shape[-2:]
        raise ValueError(
            f"image-size mismatch: {name} gives {h}x{w} images but the model was built for img_size="
            f"{tuple(model.img_size)}; change the transform or build the model with img_size=({h}, {w})"
        )


def _oom_message(batch_size: int, accumulate_steps: int, dtype: torch.dtype | None, epoch: int, step: int) -> str:
    smaller = max(batch_size // 2, 1)
    hint = f"fit(..., batch_size={smaller}, accumulate_steps={accumulate_steps * batch_size // smaller})"
    amp = "" if dtype is not None else ", or amp='bf16' (about half the activation memory)"
    return (
        f"CUDA out of memory at epoch {epoch}, step {step} with batch_size={batch_size} per GPU. Use a smaller "
        f"batch with gradient accumulation to keep the effective batch: {hint} (fgvc train --batch-size "
        f"{smaller} --accumulate-steps {accumulate_steps * batch_size // smaller}){amp}."
    )


# ----------------------------------------------------------------------------------------- logs
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}")
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a killed run
            continue
    return out


class _Log:
    """``log.jsonl`` lines and TensorBoard scalars, from rank 0 only.

    A resumed run drops the lines (and TensorBoard events) the interrupted run wrote after its checkpoint,
    so the log reads like that of one uninterrupted run.
    """

    def __init__(self, out_dir: Path | None, *, enabled: bool, resume_step: int | None, tensorboard: bool | None):
        self.file = self.writer = None
        if out_dir is None or not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / LOG_FILE
        kept: list[str] = []
        if resume_step is not None and path.is_file():
            kept = [json.dumps(r) + "\n" for r in _read_jsonl(path) if r.get("step", 0) <= resume_step]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)
        self.file = open(path, "a", buffering=1)  # line-buffered: readable while training runs
        if tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                if tensorboard:
                    raise ImportError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None
                return
            purge = None if resume_step is None else resume_step + 1  # drop events after the checkpoint
            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(dict(record, time=time.time())) + "\n")
        if self.writer is not None:
            kind, x = record["kind"], record["step"]
            for key, value in record.items():
                if key not in ("kind", "step", "epoch") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{kind}/{key}", value, x)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
