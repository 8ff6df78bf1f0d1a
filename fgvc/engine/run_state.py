"""What a training run saves to continue later, and the checks that a resume continues the same run.

``train_state.safetensors`` (written by ``fit``) holds the model, the optimizer, and a JSON record: the step,
the position in the epoch, the epoch's metric sums (``EpochSums``), the schedule, the grad scaler, the
history, every rank's RNG state (``rng_state``) and the settings the optimizer state belongs to. A resume
(``read_resume``) refuses a state saved by another model option, other training data (``data_fingerprint``:
its files and labels) or another optimizer setting, naming the difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.contract import classes_of, targets_of
from ..methods.base import FGVCModel
from ..settings import TrainConfig
from ..storage.checkpoint import check_state_matches, load_train_state

__all__ = [
    "RESUME_SETTINGS",
    "STATE_FILE",
    "EpochSums",
    "check_resume",
    "data_fingerprint",
    "read_resume",
    "resume_path",
    "resume_settings",
    "rng_state",
    "rng_tensors",
    "set_rng_state",
]

STATE_FILE = "train_state.safetensors"

#: The options the saved optimizer state and learning-rate schedule belong to: a resume must keep them.
RESUME_SETTINGS = (
    "lr", "weight_decay", "momentum", "min_lr", "warmup_steps", "label_smoothing", "grad_clip", "backbone_lr_scale",
)


@dataclass
class EpochSums:
    """The running training metrics of an epoch on one rank (saved as a list, in this order)."""

    loss: float = 0.0  # loss x images
    top1: float = 0.0  # images whose top class is right
    top5: float = 0.0  # images with the right class among the top five
    images: float = 0.0

    def add(self, loss: float, logits: Tensor, targets: Tensor) -> None:
        """Add one batch: its mean ``loss`` and ``logits`` (B, C) for ``targets`` (B,)."""
        n = len(targets)
        with torch.no_grad():
            top5 = logits.detach().topk(min(5, logits.shape[1]), dim=1).indices  # (B, min(5, C))
            self.loss += loss * n
            self.top1 += int((top5[:, 0] == targets).sum())
            self.top5 += int((top5 == targets[:, None]).any(1).sum())
            self.images += n

    def as_list(self) -> list[float]:
        return list(astuple(self))

    def metrics(self) -> dict[str, float]:
        """Mean loss and top-1 / top-5 accuracy (%) over the images summed."""
        return dict(
            train_loss=self.loss / self.images,
            train_top1=100.0 * self.top1 / self.images,
            train_top5=100.0 * self.top5 / self.images,
        )


# ----------------------------------------------------------------------------------------- RNG state
def rng_state(device: torch.device) -> dict[str, Any]:
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


def rng_tensors(states: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Take the tensors out of every rank's ``rng_state`` (leaving the JSON-able rest), named by rank."""
    tensors = {}
    for r, entry in enumerate(states):
        tensors[f"rng/{r}/torch"] = entry.pop("torch")
        for i, t in enumerate(entry.pop("cuda")):
            tensors[f"rng/{r}/cuda/{i}"] = t
    return tensors


def set_rng_state(entry: dict[str, Any], tensors: dict[str, Tensor], rank: int, device: torch.device) -> None:
    """Restore this rank's python / numpy / torch (and CUDA, on as many devices) RNG streams."""
    version, keys, gauss = entry["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = entry["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors[f"rng/{rank}/torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith(f"rng/{rank}/cuda/"))]
    if device.type == "cuda" and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------- resume
def resume_path(resume: bool | str | os.PathLike, out_dir: Path | None) -> Path | None:
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


def read_resume(
    model: FGVCModel, data: Dataset, config: TrainConfig, world: int
) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    """The saved run ``config.resume`` names, checked against this one, with its weights loaded into ``model``:
    its JSON record and its other tensors (RNG states); None for a fresh start."""
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    path = resume_path(config.resume, out_dir)
    if path is None:
        return None
    model_state, saved, tensors = load_train_state(path)
    check_resume(model, saved, data, path, config, world)
    check_state_matches(model, model_state, path)
    model.load_state_dict(model_state, strict=True)
    return saved, tensors


def check_resume(
    model: FGVCModel, saved: dict[str, Any], data: Dataset, path: Path, config: TrainConfig, world: int
) -> None:
    """A resumed run must train the same model on the same data with the same optimizer settings (the saved
    optimizer state and schedule belong to them); mid-epoch also with the same batches."""
    _check_same_model(model, saved, data, path)
    _check_same_data(saved, data, path)
    _check_epochs(saved, config.epochs, path)
    _check_same_optimizer(saved, config, path)
    if saved["batches_done"]:  # the position inside the epoch only means something for the same batches
        same = dict(world_size=world, batch_size=config.batch_size, accumulate_steps=config.accumulate_steps,
                    seed=config.seed, num_train=len(data))  # type: ignore[arg-type]
        for key, value in same.items():
            if saved[key] != value:
                raise ValueError(
                    f"{path} stopped inside an epoch with {key}={saved[key]}; resuming it needs the same "
                    f"{key} (got {value}), or resume from an epoch-end checkpoint"
                )
    if saved.get("world_size") != world:  # stacklevel: fit's caller (fit -> read_resume -> check_resume)
        warnings.warn(f"resuming a {saved.get('world_size')}-process run on {world}: RNG streams restart", stacklevel=4)


def resume_settings(config: TrainConfig) -> dict[str, Any]:
    """The ``RESUME_SETTINGS`` of ``config``, as saved with the training state."""
    return {key: getattr(config, key) for key in RESUME_SETTINGS}


#: The model options compared on resume first (the rest of ``model.config`` after them, by name).
_MODEL_KEYS = ("method", "backbone", "num_classes", "img_size", "patch_stride", "backbone_kwargs", "options")
#: Options recorded only when set: absent means None.
_OPTIONAL_MODEL_KEYS = ("norm_eps",)


def _check_same_model(model: FGVCModel, saved: dict[str, Any], data: Dataset, path: Path) -> None:
    """Every option of ``model.config`` (``drop_path_rate``, ``norm_eps``, the method's own ...) as saved."""
    was = saved.get("model_config") or {}
    now = json.loads(json.dumps(model.config))
    others = sorted((set(was) | set(now)) - set(_MODEL_KEYS))
    for key in (*_MODEL_KEYS, *others):
        if key not in was and not (was and key in _OPTIONAL_MODEL_KEYS):
            continue  # not recorded by the fgvc that saved the state
        if was.get(key) != now.get(key):
            what = {"num_classes": "class-count mismatch", "img_size": "image-size mismatch"}.get(key, "mismatch")
            raise ValueError(
                f"{what}: {path} was trained with {key}={was.get(key)!r}, the model has {now.get(key)!r}; "
                f"resume with the saved model settings, or start a new run in another out_dir"
            )
    names = classes_of(data)
    if names is not None and saved.get("class_names") is not None and list(names) != saved["class_names"]:
        raise ValueError(f"the classes of train_data differ from those of the run saved in {path}")


def _check_same_data(saved: dict[str, Any], data: Dataset, path: Path) -> None:
    """The same training samples (files and labels) as the saved run, not just as many of the same classes."""
    was = saved.get("data_fingerprint")  # absent in states written before fgvc saved it
    now = data_fingerprint(data) if was is not None else None
    if was is None or now is None or was == now:
        return
    n_was, n_now = saved.get("num_train"), len(data)  # type: ignore[arg-type]
    what = (f"{n_now} samples, the saved run {n_was}" if n_was != n_now
            else f"the same {n_now} samples in number but other files or labels (fingerprint {now[:12]}, saved "
                 f"{was[:12]})")
    raise ValueError(
        f"train_data differs from the data of the run saved in {path}: {what}; resume with the saved run's "
        f"training data, or start a new run in another out_dir"
    )


def data_fingerprint(data: Dataset) -> str | None:
    """sha256 of a dataset's sorted (path relative to its root, label) pairs (``samples``, as fgvc's image
    datasets and their subsets have); without files, of its ``targets`` in order; None without either.

    Cheap (no image is read) and independent of where the dataset lies and of its sample order."""
    samples = getattr(data, "samples", None)
    if samples is not None:
        root = _data_root(data)
        pairs = sorted((_relative(str(p), root), int(t)) for p, t in samples)
        payload = json.dumps(["samples", pairs])
    else:
        targets = targets_of(data)
        if targets is None:
            return None
        payload = json.dumps(["targets", [int(t) for t in targets]])
    return hashlib.sha256(payload.encode()).hexdigest()


def _data_root(data: Any) -> str | None:
    """The ``root`` folder of a dataset or of the dataset a view (``SubsetDataset``) was taken from."""
    for _ in range(16):
        root = getattr(data, "root", None)
        if root is not None:
            return str(root)
        data = getattr(data, "dataset", None)
        if data is None:
            return None
    return None


def _relative(path: str, root: str | None) -> str:
    if root is not None:
        rel = os.path.relpath(path, root)
        if not rel.startswith(os.pardir):
            return Path(rel).as_posix()
    return Path(path).as_posix()


def _check_epochs(saved: dict[str, Any], epochs: int, path: Path) -> None:
    done = saved["epoch"] - 1  # whole epochs trained; one more is under way when batches_done > 0
    if epochs < done or (epochs == done and saved["batches_done"]):
        trained = f"{done} epochs" + (f" and {saved['batches_done']} batches" if saved["batches_done"] else "")
        raise ValueError(
            f"{path} has already trained {trained}, more than epochs={epochs} asks for; resume with "
            f"epochs >= {done + bool(saved['batches_done'])}, or start a new run in another out_dir"
        )


def _check_same_optimizer(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    optimizer = config.optimizer
    if saved.get("optimizer_name", optimizer) != optimizer:
        raise ValueError(f"{path} was trained with optimizer={saved['optimizer_name']!r}, not {optimizer!r}")
    was_settings = saved.get("settings") or {}  # absent in states written before fgvc saved them
    uses_momentum = any(word in optimizer.lower() for word in ("sgd", "momentum", "nesterov"))
    changed = [f"{key}={value!r} (saved: {was_settings[key]!r})" for key, value in resume_settings(config).items()
               if key in was_settings and was_settings[key] != value and (key != "momentum" or uses_momentum)]
    if changed:
        raise ValueError(
            f"{path} was saved by a run with other settings: {', '.join(changed)}; resume with the saved "
            f"settings (the optimizer state and learning-rate schedule belong to them), or start a new run in "
            f"another out_dir"
        )
