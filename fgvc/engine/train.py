"""One training loop for every method.

``fit`` only calls ``model(images)`` and ``model.loss(output, targets)``: mixed precision, gradient
accumulation and clipping, the warmup + cosine schedule, seeding, progress bars, validation, logs,
checkpoints, resuming and ``torchrun`` data parallelism are done here once for all methods. Checkpoints are
chosen on the validation split only; the test split is never looked at by ``fit`` (evaluate it once, at the
end, with ``fgvc.evaluate``).

Three optional parts of a model, read the same way for every model (an objective with per-sample targets
beside the label, such as ``fgvc pretrain``'s boxes, needs them):

* ``loss_inputs``: names of per-sample targets its loss takes as keywords. Training items are then
  ``(image, label, {name: value})``, and ``fit`` passes the batched values of those names to
  ``model.loss(output, targets, name=...)``; data whose first item lacks one is refused before training.
* ``loss_terms``: a dict (name -> scalar tensor) its loss leaves on the model; the terms of each logged step
  are written to ``log.jsonl`` beside ``loss``.
* ``validation_metrics(val_data)``: a dict of numbers added to each epoch's record after ``evaluate``'s.

Files in ``out_dir`` (written by rank 0 only):

* ``last.safetensors`` / ``best.safetensors``: the model (``fgvc.load_model``), last and best on validation;
* ``train_state.safetensors``: model, optimizer, scheduler, grad scaler, step, sampler position, RNG
  states and history, in one atomically written file (no pickle), for ``fit(..., resume=True)``;
* ``log.jsonl``: one JSON line every ``log_every_steps`` steps and one per epoch (``plot_log`` draws it);
* ``tensorboard/``: the same scalars, when the ``tensorboard`` package is installed;
* ``fgvc.lock`` while the run writes (``fgvc.engine.run_folder``): an ``out_dir`` belongs to one run, so a second
  process, or a new run where another run's files are (unless ``overwrite=True``), is refused.

Determinism: the order of the training images is a function of (seed, epoch) (``DistributedSampler``), and
each image's augmentation randomness a function of (seed, epoch, index), whatever ``num_workers``. The
training RNG (dropout, drop-path, a method's own sampling) is seeded with ``seed + rank`` and saved with every
checkpoint, so a resumed run continues exactly where the saved one was: on the CPU the weights after resume
equal those of an uninterrupted run bit for bit (tested). On GPUs bitwise equality additionally needs
deterministic kernels (``torch.use_deterministic_algorithms``), which fit does not switch on.

The loop runs in named phases over one ``_Run`` (model, optimizer, schedule, grad scaler, data order,
counters): ``_start`` builds it, ``_restore`` continues a saved run, then every epoch ``_train_epoch``
(``_train_step`` per micro-batch, ``_after_update`` per optimizer step) and ``_end_epoch`` (validation, log,
last / best model, ``_checkpoint``). The options are ``fgvc.settings.TrainConfig``; the data order is in
``fgvc.engine.samplers``, what is saved to resume in ``fgvc.engine.run_state``, the history and log in ``fgvc.engine.history``.
"""

from __future__ import annotations

import math
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
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.contract import classes_of
from ..methods.base import FGVCModel
from ..settings import TrainConfig
from ..storage.checkpoint import remove_stale_temporaries, save_model, save_train_state
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
from .history import History, RunLog, plot_log
from .precision import autocast_dtype, set_tf32
from .run_folder import claim_run_folder
from .run_state import (
    STATE_FILE,
    EpochSums,
    data_fingerprint,
    read_resume,
    resume_settings,
    rng_state,
    rng_tensors,
    set_rng_state,
)
from .samplers import EpochBatches, train_loader

__all__ = ["History", "TrainConfig", "fit", "plot_log", "reproducible", "seed_everything"]


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


@contextmanager
def _grad_checkpointing(model: FGVCModel, enable: bool) -> Iterator[None]:
    """Within the context, with ``enable``: the model's activation checkpointing on (``set_grad_checkpointing``,
    the model's own hook: the loop knows no method); its own setting is restored on exit."""
    if not enable:
        yield
        return
    was = model.grad_checkpointing
    model.set_grad_checkpointing(True)
    try:
        yield
    finally:
        model.set_grad_checkpointing(was)


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
    config: TrainConfig | None = None,
    **options: Any,
) -> History:
    """Train ``model`` on ``train_data``, validating on ``val_data`` after every epoch.

    The options are ``TrainConfig``'s (``epochs``, ``batch_size``, ``lr``, ``out_dir``, ``resume``, ...: their
    meanings and defaults are documented there), given as keywords (``fit(model, data, epochs=50, lr=1e-3)``)
    or as ``config=TrainConfig(...)``, which keywords then override. An unknown keyword is a ``TypeError``.

    Every option is checked before anything runs (``TrainConfig``, whose checks the recipes use too). A
    non-finite loss stops training naming the optimizer step; so does an update that leaves a weight or
    optimizer tensor non-finite, checked before every save and at every epoch end: nothing non-finite is ever
    written, so the checkpoints in ``out_dir`` stay good ones.

    Under ``torchrun`` (WORLD_SIZE > 1) the process group is joined here (NCCL on CUDA, gloo on the CPU),
    the model wrapped in DistributedDataParallel, the training set sharded by ``DistributedSampler``,
    validation evaluated exactly across ranks, and only rank 0 writes files and prints.

    Returns:
        ``History`` with loss, top-1, top-5, lr and seconds per epoch (train metrics over all ranks).
    """
    cfg = TrainConfig.from_options(config, options)
    device = init_distributed(cfg.device)
    _adopt_data(model, train_data, val_data)
    with claim_run_folder(cfg.out_dir, resume=cfg.resume, overwrite=cfg.overwrite, main=get_rank() == 0) as folder:
        saved = read_resume(model, train_data, cfg, get_world_size())  # checked before anything is trained
        run = _start(model, train_data, val_data, cfg, device, saved=None if saved is None else saved[0])
        if saved is not None:
            _restore(run, *saved)
        _check_tensorboard(cfg)
        folder.clear()  # overwrite=True: the earlier run's files go now, after every check, before any write
        tf32_before = _launch(run)
        try:
            with _grad_checkpointing(model, cfg.grad_checkpointing):
                for epoch in range(run.start_epoch, cfg.epochs + 1):
                    _train_epoch(run, epoch)
                    _end_epoch(run, epoch)
        finally:
            run.log.close()
            set_tf32(tf32_before)
    return run.history


@dataclass
class _Run:
    """What the phases of one ``fit`` call share: what trains, on what data, and how far it has come."""

    cfg: TrainConfig
    net: FGVCModel  # the model itself: its loss, its weights to check and save
    train_data: Dataset
    val_data: Dataset | None
    device: torch.device
    loader: DataLoader
    batches: EpochBatches
    opt: torch.optim.Optimizer
    sched: CosineLRScheduler
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None  # of autocast (None: fp32)
    history: History
    out_dir: Path | None
    rank: int
    world: int
    ddp: torch.nn.Module | None = None  # net under DistributedDataParallel (net itself when not distributed)
    fwd: torch.nn.Module | None = None  # ddp, compiled when asked: the training forward
    log: RunLog | None = None
    sums: EpochSums = field(default_factory=EpochSums)  # this epoch on this rank
    step: int = 0  # optimizer steps done
    start_epoch: int = 1
    micro_done: int = 0  # batches of start_epoch a resumed run has already trained
    best_top1: float = -math.inf
    saved_step: int | None = None  # the step of the training state on disk: what a failure leaves the user with
    epoch_start: float = 0.0  # perf_counter at the start of the epoch under way
    data_fingerprint: str | None = None  # of train_data's files and labels (``data_fingerprint``), saved to resume

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def micro_per_epoch(self) -> int:
        return self.batches.num_batches

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * math.ceil(self.micro_per_epoch / self.cfg.accumulate_steps)


@dataclass
class _Window:
    """Since the last log line: images and the wall-clock start; of the optimizer step under way: loss x images."""

    start: float
    images: int = 0
    loss: float = 0.0
    n: int = 0
    terms: dict[str, float] = field(default_factory=dict)  # the model's ``loss_terms`` x images

    def add(self, loss: float, n: int, terms: dict[str, Tensor] | None = None) -> None:
        self.loss, self.n, self.images = self.loss + loss * n, self.n + n, self.images + n
        for name, value in (terms or {}).items():
            self.terms[name] = self.terms.get(name, 0.0) + float(value) * n


# ----------------------------------------------------------------------------------------- phases
def _start(model: FGVCModel, train_data: Dataset, val_data: Dataset | None, cfg: TrainConfig,
           device: torch.device, saved: dict[str, Any] | None = None) -> _Run:
    """Seed, place the model, and build the data order, optimizer, schedule and grad scaler of a run
    (``saved``: the training state it resumes, whose optimizer groups it keeps)."""
    rank = get_rank()
    seed_everything(cfg.seed + rank)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    loader, batches = train_loader(train_data, batch_size=cfg.batch_size, seed=cfg.seed,
                                   num_workers=cfg.num_workers, device=device)
    if batches.num_batches == 0:
        raise ValueError("train_data is empty")
    steps_per_epoch = math.ceil(batches.num_batches / cfg.accumulate_steps)
    warmup = min(steps_per_epoch, 500) if cfg.warmup_steps is None else cfg.warmup_steps
    opt = _optimizer(model, cfg)
    saved_sizes = None if saved is None else [len(g["params"]) for g in saved["optimizer_state_dict"]["param_groups"]]
    if saved_sizes is not None and saved_sizes != [len(g["params"]) for g in opt.param_groups]:
        before = _optimizer(model, cfg, no_weight_decay=False)
        if saved_sizes == [len(g["params"]) for g in before.param_groups]:
            opt = before  # saved before model.no_weight_decay() was honoured: the run keeps its decay groups
    sched = CosineLRScheduler(opt, t_initial=cfg.epochs * steps_per_epoch, lr_min=cfg.min_lr, warmup_t=warmup,
                              warmup_lr_init=min(cfg.min_lr, cfg.lr), t_in_epochs=False)
    dtype = autocast_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
    return _Run(cfg=cfg, net=model, train_data=train_data, val_data=val_data, device=device, loader=loader,
                batches=batches, opt=opt, sched=sched, scaler=scaler, dtype=dtype,
                history=History(checkpoint_dir=out_dir), out_dir=out_dir, rank=rank, world=get_world_size(),
                data_fingerprint=data_fingerprint(train_data) if out_dir is not None and rank == 0 else None)


def _optimizer(model: FGVCModel, cfg: TrainConfig, *, no_weight_decay: bool = True) -> torch.optim.Optimizer:
    """timm's optimizer for ``cfg``: with weight decay, 1-D parameters and ``model.no_weight_decay()`` undecayed
    (``no_weight_decay=False``: 1-D parameters only, the grouping of training states saved before the model's
    set was read), and the backbone's learning-rate scale."""
    params: Any = model
    if not no_weight_decay and cfg.weight_decay:
        params = param_groups_weight_decay(model, cfg.weight_decay)
    opt = create_optimizer_v2(params, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              momentum=cfg.momentum)
    if cfg.backbone_lr_scale != 1.0:
        opt = _scale_backbone_lr(opt, model, cfg.backbone_lr_scale)
    return opt


def _base_lr(opt: torch.optim.Optimizer) -> float:
    """The schedule's current rate (``lr``; groups with an ``lr_scale`` run at a multiple of it)."""
    group = opt.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)


def _scale_backbone_lr(opt: torch.optim.Optimizer, model: FGVCModel, scale: float) -> torch.optim.Optimizer:
    """The same optimizer with each parameter group split in two: the pretrained parameters
    (``model.pretrained_parameters()``; ``lr_scale`` ``scale``) and the layers that start from scratch (1.0).

    Every group keeps the schedule's base rate as its ``lr``: timm's scheduler reads it as the group's base and
    multiplies ``lr_scale`` into every rate it sets (from its first update on, at construction). A group
    created at ``lr * scale`` would be scaled twice: ``scale ** 2``."""
    backbone = {id(p) for p in model.pretrained_parameters()}
    groups, opt.param_groups = opt.param_groups, []  # no state yet: the groups can be rebuilt
    for group in groups:
        options = {k: v for k, v in group.items() if k != "params"}
        for in_backbone, lr_scale in ((True, scale), (False, 1.0)):
            params = [p for p in group["params"] if (id(p) in backbone) == in_backbone]
            if params:
                opt.add_param_group(dict(options, params=params, lr=group["lr"], lr_scale=lr_scale))
    return opt


def _restore(run: _Run, saved: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Continue a saved run: optimizer, schedule, grad scaler, counters, history, epoch sums and RNG streams."""
    run.opt.load_state_dict(saved["optimizer_state_dict"])
    if saved.get("scheduler", {}).get("t_initial") == run.total_steps:
        run.sched.load_state_dict(saved["scheduler"])
    elif saved["epoch"] <= run.cfg.epochs:
        warnings.warn(
            f"resuming a {saved['epochs']}-epoch run with epochs={run.cfg.epochs}: the learning-rate schedule is "
            f"recomputed for the new length from step {saved['step']} on", stacklevel=3  # fit's caller
        )
    if run.scaler.is_enabled() and saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    run.step = run.saved_step = saved["step"]
    run.start_epoch, run.micro_done = saved["epoch"], saved["batches_done"]
    run.sched.step_update(num_updates=run.step)
    run.history.epochs = saved["history"]
    run.history.best_epoch = saved["best_epoch"]
    run.best_top1 = -math.inf if saved["best_top1"] is None else saved["best_top1"]
    if run.micro_done:
        run.sums = EpochSums(*saved["sums"][run.rank])
    if saved["world_size"] == run.world:
        set_rng_state(saved["rng"][run.rank], tensors, run.rank, run.device)
    else:  # allowed at epoch boundaries only (checked): a fresh, still seeded, stream per rank
        seed_everything(run.cfg.seed + run.rank + 1_000_003 * run.step)


def _launch(run: _Run) -> tuple[bool, bool] | None:
    """Wrap the model for data parallelism (and compile it), open the log and set TF32; returns the TF32
    setting to restore."""
    run.ddp = wrap_ddp(run.net, run.device, run.cfg.find_unused_parameters)
    run.fwd = torch.compile(run.ddp) if run.cfg.compile else run.ddp
    if run.out_dir is not None and run.main:
        remove_stale_temporaries(run.out_dir)  # of a write killed in an earlier run
    run.log = RunLog(run.out_dir, enabled=run.main, resume_step=run.saved_step, tensorboard=run.cfg.tensorboard)
    return set_tf32(run.cfg.tf32)


def _train_epoch(run: _Run, epoch: int) -> None:
    """One pass over the epoch's batches (those left, in a resumed epoch), an optimizer step every
    ``accumulate_steps`` of them; the weights are checked finite at the end."""
    cfg = run.cfg
    run.fwd.train()
    run.batches.set_epoch(epoch, skip=run.micro_done)
    if run.micro_done == 0:
        run.sums = EpochSums()
    run.epoch_start = time.perf_counter()
    window = _Window(start=run.epoch_start)
    bar = tqdm(run.loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not (cfg.progress and run.main))
    wanted = _loss_inputs(run.net)
    for i, batch in enumerate(bar, start=run.micro_done):
        group = i // cfg.accumulate_steps * cfg.accumulate_steps
        group_size = min(cfg.accumulate_steps, run.micro_per_epoch - group)  # an epoch's last group may be short
        last_micro = i == group + group_size - 1
        images = batch[0].to(run.device, non_blocking=True)
        targets = batch[1].to(run.device, non_blocking=True)
        inputs = {name: batch[2][name].to(run.device, non_blocking=True) for name in wanted}
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits, loss = _train_step(run, epoch, images, targets, group_size, last_micro, inputs)
        run.sums.add(loss, logits, targets)
        window.add(loss, len(targets), getattr(run.net, "loss_terms", None))
        if run.main and cfg.progress:
            s = run.sums
            bar.set_postfix(loss=f"{s.loss / s.images:.3f}", top1=f"{100 * s.top1 / s.images:.1f}")
        if last_micro:
            _after_update(run, epoch, window, done=i + 1)
    run.micro_done = 0
    _check_finite(run, epoch, _base_lr(run.opt))  # before validation, last / best and the state


def _train_step(run: _Run, epoch: int, images: Tensor, targets: Tensor, group_size: int,
                last_micro: bool, inputs: dict[str, Tensor] | None = None) -> tuple[Tensor, float]:
    """Forward and backward of one micro-batch, and the optimizer step after the last of its group; returns
    the logits (B, C) and the loss (``inputs``: the per-sample targets the model's ``loss_inputs`` names)."""
    # accumulation under DDP: all-reduce the gradients once, after the last micro-batch
    sync = run.ddp.no_sync() if run.ddp is not run.net and not last_micro else nullcontext()
    try:
        with sync:
            with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
                out = run.fwd(images)
                check_labels(targets, out.logits.shape[1])
                loss = run.net.loss(out, targets, label_smoothing=run.cfg.label_smoothing, **(inputs or {}))
            loss_value = loss.item()
            _check_loss(run, loss_value, epoch)
            run.scaler.scale(loss / group_size).backward()
        if last_micro:
            _optimizer_step(run)
    except torch.cuda.OutOfMemoryError as e:
        raise torch.cuda.OutOfMemoryError(_oom_message(run.cfg, run.dtype, epoch, run.step) + f"\n{e}") from None
    return out.logits, loss_value


def _optimizer_step(run: _Run) -> None:
    """Clip the gradients (unscaled), step the optimizer through the grad scaler, clear the gradients."""
    if run.cfg.grad_clip is not None:
        run.scaler.unscale_(run.opt)
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    run.opt.zero_grad(set_to_none=True)


def _after_update(run: _Run, epoch: int, window: _Window, done: int) -> None:
    """Count the optimizer step and move the schedule; a log line every ``log_every_steps`` steps, a checkpoint
    every ``save_every_steps`` inside the epoch (``done``: its batches trained so far)."""
    cfg = run.cfg
    lr_used = _base_lr(run.opt)
    run.step += 1
    run.sched.step_update(num_updates=run.step)
    if run.step % cfg.log_every_steps == 0:
        elapsed = time.perf_counter() - window.start
        terms = {name: value / window.n for name, value in window.terms.items()}
        run.log.write(dict(kind="step", epoch=epoch, step=run.step, loss=window.loss / window.n, **terms,
                           lr=lr_used, images_per_s=window.images * run.world / max(elapsed, 1e-9)))
        window.start, window.images = time.perf_counter(), 0
    window.loss, window.n, window.terms = 0.0, 0, {}
    if cfg.save_every_steps and run.step % cfg.save_every_steps == 0 and done < run.micro_per_epoch:
        _check_finite(run, epoch, lr_used)
        _checkpoint(run, epoch, done)


def _end_epoch(run: _Run, epoch: int) -> None:
    """Validate and record the epoch; save the last (and best) model, log it, and write the state to resume."""
    record = _epoch_record(run, epoch)
    run.history.epochs.append(record)
    improved = run.val_data is not None and record["val_top1"] > run.best_top1
    if improved:
        run.best_top1, run.history.best_epoch = record["val_top1"], epoch
    if run.out_dir is not None and run.main:
        meta = dict(epoch=epoch, step=run.step, metrics=record)
        if improved:
            save_model(run.net, run.out_dir / "best.safetensors", class_names=run.net.class_names, extra=meta)
        save_model(run.net, run.out_dir / "last.safetensors", class_names=run.net.class_names, extra=meta)
    run.log.write(dict(kind="epoch", step=run.step, **record))  # before the state: a resume rewrites it if lost
    _checkpoint(run, epoch + 1, 0)
    if run.cfg.progress and run.main:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
        tqdm.write(" ".join(f"{k}={v}" for k, v in shown.items()))


def _epoch_record(run: _Run, epoch: int) -> dict[str, Any]:
    """The epoch's training metrics over all ranks, its last learning rate, the validation metrics, seconds."""
    total = EpochSums(*all_reduce_sum(run.sums.as_list(), run.device))
    record: dict[str, Any] = dict(epoch=epoch, **total.metrics(), lr=_base_lr(run.opt))
    if run.val_data is not None:
        result = evaluate(run.net, run.val_data, batch_size=run.cfg.batch_size, device=run.device,
                          num_workers=run.cfg.num_workers)
        record.update(val_loss=result.loss, val_top1=result.top1, val_top5=result.top5)
        if result.mean_iou is not None:
            record["val_iou"] = result.mean_iou
        if getattr(result, "pointing_game", None) is not None:
            record["val_pointing_game"] = result.pointing_game
        own = getattr(run.net, "validation_metrics", None)
        if callable(own):
            record.update(own(run.val_data))
    record["seconds"] = time.perf_counter() - run.epoch_start
    return record


def _checkpoint(run: _Run, epoch_next: int, done: int) -> None:
    """Write the state to resume from, to continue at batch ``done`` of ``epoch_next`` (at epoch ends the
    last / best models are written before)."""
    if run.out_dir is None:
        return
    rng = all_gather_objects(rng_state(run.device))  # every rank's, so each continues its own stream
    all_sums = all_gather_objects(run.sums.as_list())
    if run.main:
        tensors = rng_tensors(rng)  # leaves the JSON-able part in rng
        save_train_state(run.out_dir / STATE_FILE, model=run.net, optimizer=run.opt, tensors=tensors,
                         state=_state_record(run, epoch_next, done, rng, all_sums))
    run.saved_step = run.step
    barrier()  # no rank reads (resume, load best) a file rank 0 is still writing


def _state_record(run: _Run, epoch_next: int, done: int, rng: list[dict[str, Any]],
                  all_sums: list[list[float]]) -> dict[str, Any]:
    """The JSON part of the training state (``fgvc.engine.run_state`` reads and checks it on resume)."""
    cfg = run.cfg
    return dict(
        step=run.step, epoch=epoch_next, batches_done=done, epochs=cfg.epochs, world_size=run.world,
        batch_size=cfg.batch_size, accumulate_steps=cfg.accumulate_steps, seed=cfg.seed, optimizer_name=cfg.optimizer,
        num_train=len(run.train_data), class_names=run.net.class_names, sums=all_sums,  # type: ignore[arg-type]
        data_fingerprint=run.data_fingerprint,
        history=run.history.epochs, best_epoch=run.history.best_epoch,
        best_top1=None if run.best_top1 == -math.inf else run.best_top1,
        scheduler=run.sched.state_dict(), scaler=run.scaler.state_dict(), rng=rng, settings=resume_settings(cfg),
    )


# ----------------------------------------------------------------------------------------- failures
def _check_loss(run: _Run, loss: float, epoch: int) -> None:
    """Stop at a non-finite loss on any rank, before its backward."""
    if any_rank(not math.isfinite(loss), run.device):
        lr_now = _base_lr(run.opt)
        what = loss if not math.isfinite(loss) else "not finite on another rank"
        raise FloatingPointError(
            f"loss is {what} at optimizer step {run.step + 1} (epoch {epoch}, lr {lr_now:.3g}); {_advice(run)}"
        )


def _check_finite(run: _Run, epoch: int, lr_used: float) -> None:
    """Stop, before anything is saved or evaluated, when the last update made weights non-finite."""
    bad = _non_finite(run.net, run.opt)
    if any_rank(bad is not None, run.device):
        raise FloatingPointError(
            f"the weights are not finite after optimizer step {run.step} (epoch {epoch}, lr {lr_used:.3g}): "
            f"{bad or 'a tensor on another rank'} holds NaN or inf although the loss was finite, and nothing "
            f"of this step was saved: {_advice(run)}"
        )


def _advice(run: _Run) -> str:
    """What to do after a non-finite loss or update, and what the user still has."""
    clip = "" if run.cfg.grad_clip is not None else " or enable gradient clipping (grad_clip)"
    if run.out_dir is None:
        return f"lower the learning rate{clip}"
    kept = (f"the last checkpoint (step {run.saved_step}) is kept in {run.out_dir}" if run.saved_step is not None
            else f"no checkpoint was written to {run.out_dir} yet")
    return f"lower the learning rate{clip}; {kept}"


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


def _oom_message(cfg: TrainConfig, dtype: torch.dtype | None, epoch: int, step: int) -> str:
    """Out of GPU memory: the smaller batch with accumulation that keeps the effective batch size."""
    batch_size, accumulate_steps = cfg.batch_size, cfg.accumulate_steps
    smaller = max(batch_size // 2, 1)
    more = accumulate_steps * batch_size // smaller
    hint = f"fit(..., batch_size={smaller}, accumulate_steps={more})"
    amp = "" if dtype is not None else ", or amp='bf16' (about half the activation memory)"
    return (
        f"CUDA out of memory at epoch {epoch}, step {step} with batch_size={batch_size} per GPU. Use a smaller "
        f"batch with gradient accumulation to keep the effective batch: {hint} (fgvc train --set "
        f"train.batch_size={smaller} train.accumulate_steps={more}){amp}."
    )


def _check_tensorboard(cfg: TrainConfig) -> None:
    """``tensorboard=True`` needs the package: said before an ``overwrite`` removes anything."""
    if cfg.tensorboard and cfg.out_dir is not None:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise ImportError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None


# ----------------------------------------------------------------------------------------- data checks
def _adopt_data(model: FGVCModel, train_data: Dataset, val_data: Dataset | None) -> None:
    """Check the data against the model before the first step, and give the model the class names."""
    _check_loss_inputs(model, train_data)
    _check_class_count(model, train_data, "train_data")
    _check_image_size(model, train_data, "train_data")
    if val_data is not None:
        _check_class_count(model, val_data, "val_data")
        _check_image_size(model, val_data, "val_data")
        _check_same_classes(train_data, val_data)
    class_names = classes_of(train_data) or model.class_names
    if class_names is not None:
        model.class_names = list(class_names)


def _loss_inputs(model: FGVCModel) -> tuple[str, ...]:
    """The per-sample targets the model's loss takes besides the labels (``loss_inputs``; none by default)."""
    return tuple(getattr(model, "loss_inputs", ()))


def _check_loss_inputs(model: FGVCModel, data: Dataset) -> None:
    """A loss that takes per-sample targets needs items ``(image, label, {name: value})`` carrying them."""
    wanted = _loss_inputs(model)
    if not wanted or len(data) == 0:  # type: ignore[arg-type]
        return
    item = data[0]
    carried = item[2] if isinstance(item, (tuple, list)) and len(item) > 2 and isinstance(item[2], dict) else {}
    missing = [name for name in wanted if name not in carried]
    if missing:
        raise ValueError(
            f"{type(model).__name__}'s loss takes {', '.join(missing)} per sample, which train_data's items do not "
            f"carry: give items (image, label, {{{', '.join(repr(n) + ': ...' for n in wanted)}}})"
        )


def _check_class_count(model: FGVCModel, data: Dataset, name: str) -> None:
    """Catch a dataset / head class-count mismatch before the first step."""
    classes = classes_of(data)
    if classes is not None and len(classes) != model.num_classes:
        raise ValueError(
            f"{name} has {len(classes)} classes but the model was built with num_classes={model.num_classes}"
        )


def _check_same_classes(train_data: Dataset, val_data: Dataset) -> None:
    """Label k must mean the same class in both datasets (same count is not enough: the order matters)."""
    train, val = classes_of(train_data), classes_of(val_data)
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
