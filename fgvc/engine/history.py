"""What a ``fit`` run leaves to read: its per-epoch ``History``, the ``log.jsonl`` it writes as it goes
(``RunLog``, also TensorBoard scalars) and the figures drawn from them (``History.plot``, ``plot_log``)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LOG_FILE", "History", "RunLog", "plot_log", "read_jsonl"]

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
        for line in read_jsonl(path):
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
    lines = read_jsonl(path)
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line cut short by a killed run is skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}")
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a killed run
            continue
    return out


class RunLog:
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
            kept = [json.dumps(r) + "\n" for r in read_jsonl(path) if r.get("step", 0) <= resume_step]
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
        """One record (``kind``: step or epoch, ``step``, scalars) as a line, stamped with the time."""
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
