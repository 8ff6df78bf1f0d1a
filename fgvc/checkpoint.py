"""Model checkpoints: weights as safetensors, with the JSON needed to rebuild the model in its header.

One file per checkpoint (``.safetensors``); its metadata entry ``"fgvc"`` is a JSON object with the method,
backbone, options, input size, class names and anything the caller adds (metrics, epoch). It can be read
without loading the weights (``read_metadata``). Writes go to a temporary file that is flushed to disk and
renamed into place, so a crash or a full disk never leaves a half-written checkpoint or destroys the
previous one; the temporary files of a write killed half-way are removed when ``fit`` next starts in that
folder (``remove_stale_temporaries``).

Integrity: every file fgvc writes carries a CRC-32 of its tensors (names, dtypes, shapes and raw bytes, in
name order) in the metadata entry ``"fgvc_crc32"``, checked whenever fgvc reads the file, so a bit flipped on
disk or in a copy is an error naming the file rather than a model that predicts NaN. It costs about 0.1 s
per 344 MB (a ViT-B/16's fp32 weights; 3.4-4.7 GB/s on one busy CPU core), 0.3 s for a ViT-B training state
(weights and AdamW moments, 1 GB), beside 0.24 s for safetensors' own write of the 344 MB to the page cache.
Files without a checksum (written by an older fgvc, or by other tools) load without one.

Training state for ``fit(resume=...)`` (``save_train_state``) is one more safetensors file holding the model
weights, the optimizer tensors and the RNG state as tensors, and everything else (scheduler, grad scaler,
step, sampler position, history) as JSON: one file, so model and optimizer can never come from different
steps, and nothing of fgvc's own is ever unpickled. Foreign ``.pth`` files are read with
``torch.load(weights_only=True)`` only (``load_state_dict_file``): a pickle that would run code is refused.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from .hints import similar_files
from .methods.base import FGVCModel, create_model

__all__ = [
    "check_state_matches",
    "load_model",
    "load_state_dict_file",
    "load_train_state",
    "load_weights",
    "read_metadata",
    "remove_stale_temporaries",
    "save_model",
    "save_train_state",
    "tensor_checksum",
]

FORMAT_VERSION = 1
TRAIN_STATE_VERSION = 1
CHECKSUM_KEY = "fgvc_crc32"
TRAIN_STATE_KEYS = {"step", "epoch", "batches_done", "epochs", "world_size", "batch_size", "accumulate_steps", "seed",
                    "num_train", "sums", "history", "best_epoch", "best_top1", "rng", "optimizer"}
REQUIRED_METADATA = {"method": str, "backbone": str, "num_classes": int, "img_size": list}
_TEMPORARY = re.compile(r"\.(?P<name>.+\.safetensors|log\.jsonl)\.tmp-(?P<pid>\d+)")


def tensor_checksum(tensors: dict[str, Tensor]) -> str:
    """CRC-32 (8 hex digits) of the tensors' names, dtypes, shapes and raw bytes, in name order."""
    crc = 0
    for name in sorted(tensors):
        t = tensors[name].detach()
        crc = zlib.crc32(f"{name}:{t.dtype}:{tuple(t.shape)};".encode(), crc)
        crc = zlib.crc32(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.NAME.tmp-PID``) that fgvc writes were killed in, unless PID still runs.

    Only fgvc's own names (``*.safetensors``, ``log.jsonl``) are touched. Returns the removed paths.
    """
    removed = []
    for path in Path(folder).glob(".*.tmp-*"):
        match = _TEMPORARY.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _running(pid):
            continue  # another process is writing it now
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists (another user's) or cannot be told: keep the file
    return True


def load_tensors(path: str | os.PathLike, what: str = "file") -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, its fgvc checksum verified when it has one.

    Unreadable files and checksum mismatches are ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors {what}: {e}") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensor_checksum(tensors) != expected:
        raise ValueError(
            f"{path} is corrupt: its tensor data do not match the checksum written with it (a bit flipped on "
            f"disk, an incomplete copy or an edit); use another copy of the file"
        )
    return tensors, metadata


def atomic_save_file(tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """``safetensors.save_file`` to a temporary file, fsync, then rename over ``path``.

    A crash or a full disk leaves either the old file or the new one, never a truncated one, and no
    temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    metadata = dict(metadata, **{CHECKSUM_KEY: tensor_checksum(tensors)})
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable (POSIX); not possible everywhere
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_model(
    model: FGVCModel,
    path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and rebuild information to ``path`` (atomically). Returns the path."""
    from . import __version__

    path = Path(path)
    if class_names is not None and len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names given for a model with {model.num_classes} classes")
    meta = dict(model.config, class_names=class_names, fgvc_version=__version__, format=FORMAT_VERSION)
    meta.update(extra or {})
    return atomic_save_file(_model_tensors(model), path, {"fgvc": json.dumps(meta)})


def _model_tensors(model: torch.nn.Module) -> dict[str, Tensor]:
    """state_dict as self-contained CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}


def _header_json(path: str | os.PathLike, key: str, what: str) -> dict[str, Any]:
    """The JSON under ``key`` in a safetensors header, without loading tensors; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}{similar_files(path)}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors {what}: {e}") from e
    if key not in header:
        raise ValueError(f"{path} is a safetensors file but not an fgvc {what} (no {key!r} metadata)")
    try:
        value = json.loads(header[key])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the {key!r} metadata of this {what} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the {key!r} metadata of this {what} is not a JSON object")
    return value


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of an fgvc checkpoint, without loading its weights."""
    meta = _header_json(path, "fgvc", "checkpoint")
    for key, kind in REQUIRED_METADATA.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise ValueError(
                f"{path}: the fgvc metadata has no valid {key!r} (a {kind.__name__}, got {meta.get(key)!r}); "
                f"the file was not written by fgvc.save_model or was edited"
            )
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != meta["num_classes"]):
        count = len(names) if isinstance(names, list) else "no list of"
        raise ValueError(f"{path}: {count} class names for {meta['num_classes']} classes in the fgvc metadata")
    return meta


def load_weights(model: FGVCModel, path: str | os.PathLike) -> dict[str, Any]:
    """Load an fgvc checkpoint's weights into an existing model (strict). Returns the metadata.

    A class-count or input-size mismatch is reported as such, before any tensor is copied. A legacy
    ``.pth`` / ``.pt`` / ``.bin`` state dict (of the same model) is read with ``torch.load(weights_only=True)``
    and returns empty metadata.
    """
    if Path(path).suffix != ".safetensors" and Path(path).is_file():
        state = load_state_dict_file(path)
        check_state_matches(model, state, path)
        model.load_state_dict(state, strict=True)
        return {}
    meta = read_metadata(path)
    if meta["num_classes"] != model.num_classes:
        raise ValueError(
            f"class-count mismatch: checkpoint {path} has {meta['num_classes']} classes, the model has "
            f"{model.num_classes}"
        )
    if meta.get("method") != model.method:
        raise ValueError(f"checkpoint {path} holds a {meta.get('method')!r} model, not {model.method!r}")
    state, _ = load_tensors(path, "checkpoint")
    check_state_matches(model, state, path)
    model.load_state_dict(state, strict=True)
    return meta


def check_state_matches(model: torch.nn.Module, state: dict[str, Tensor], path: Any) -> None:
    """Same keys and shapes as the model, or an error naming the first differences."""
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    for name, tensor in model.state_dict().items():
        if state[name].shape != tensor.shape:
            raise ValueError(
                f"checkpoint {path}: {name} has shape {tuple(state[name].shape)}, the model expects "
                f"{tuple(tensor.shape)} (different img_size or backbone?)"
            )


def backbone_state_dict(path: str | os.PathLike) -> tuple[dict[str, Tensor], list[str]]:
    """The timm-style backbone weights in a weights file, and the names of the tensors left aside.

    fgvc's own checkpoints (``best.safetensors``, ``last.safetensors``: ``backbone.vit.*``) and training states
    (``train_state.safetensors``: ``model/backbone.vit.*``) give their backbone; the method's own layers,
    the optimizer state and the RNG state are left aside. Any other file is taken as a timm state dict.
    """
    state = load_state_dict_file(path)
    for prefix in ("model/backbone.vit.", "backbone.vit."):
        if any(k.startswith(prefix) for k in state):
            inner = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            return inner, sorted(k for k in state if not k.startswith(prefix))
    return state, []


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a legacy ``.pth`` / ``.pt`` / ``.bin``, never running pickled code.

    ``.pth`` files are read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
    containers; a file that asks for anything else (a pickle that would import and call a function) is
    refused with ``ValueError``. ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers are unwrapped and a
    ``module.`` prefix (DataParallel / DDP) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}{similar_files(path)}")
    if path.suffix == ".safetensors":
        return load_tensors(path, "file")[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line] or [str(e).splitlines()[0]]
        raise ValueError(
            f"refusing to load {path}: it is a pickle that needs more than tensors to load (it could run code "
            f"on this machine), and fgvc only reads .pth files with torch.load(weights_only=True). If you "
            f"trust its source, convert it once to .safetensors in a separate session. torch says: {lines[0]}"
        ) from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


# ------------------------------------------------------------------------------------ training state
def save_train_state(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, Tensor],
    state: dict[str, Any],
) -> Path:
    """Everything ``fit(resume=...)`` needs, in one atomically written safetensors file.

    Keys: ``model/<name>`` (weights), ``optim/<param index>/<name>`` (optimizer tensors, e.g. AdamW's
    moments), and the caller's ``tensors`` (RNG states); metadata ``fgvc_train_state``: ``state`` (JSON)
    plus the optimizer's non-tensor state and param groups.
    """
    out = {f"model/{k}": v for k, v in _model_tensors(model).items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in opt_state["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                out[f"optim/{index}/{name}"] = value.detach().contiguous().cpu().clone()
            else:
                scalars.setdefault(str(index), {})[name] = value
    out.update({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()})
    meta = dict(
        state,
        format=TRAIN_STATE_VERSION,
        optimizer=dict(param_groups=opt_state["param_groups"], scalars=scalars),
        model_config=getattr(model, "config", None),
    )
    return atomic_save_file(out, path, {"fgvc_train_state": json.dumps(meta)})


def load_train_state(
    path: str | os.PathLike,
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]]:
    """Read a ``save_train_state`` file: (model state dict, JSON state, the other tensors).

    The optimizer's state dict is rebuilt into ``state["optimizer_state_dict"]``.
    """
    meta = _header_json(path, "fgvc_train_state", "training state")
    absent = sorted(TRAIN_STATE_KEYS - set(meta))
    optimizer = meta.get("optimizer")
    if absent or not isinstance(optimizer, dict) or not {"param_groups", "scalars"} <= set(optimizer):
        raise ValueError(
            f"{path}: the training state's metadata is incomplete (missing {absent or ['optimizer']}); the file "
            f"was not written by fgvc.fit or was edited"
        )
    flat, _ = load_tensors(path, "training state")
    model_state = {k[len("model/") :]: v for k, v in flat.items() if k.startswith("model/")}
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            opt_state.setdefault(int(index), {})[name] = value
    for index, entries in meta["optimizer"]["scalars"].items():
        opt_state.setdefault(int(index), {}).update(entries)
    meta["optimizer_state_dict"] = dict(state=opt_state, param_groups=meta["optimizer"]["param_groups"])
    others = {k: v for k, v in flat.items() if not k.startswith(("model/", "optim/"))}
    return model_state, meta, others


def load_model(
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    format: str | None = None,
) -> FGVCModel:
    """Rebuild the model saved at ``path`` (method, backbone, options, size) and load its weights.

    If ``num_classes`` is given it must equal the checkpoint's: a mismatch is an error, not a silent
    re-initialised head. ``model.class_names`` holds the saved class names (or None).

    ``format``: ``"fgvc"`` (a ``.safetensors`` written by fgvc), ``"glsim-official"`` or ``"transfg-official"``
    (``.pth`` files of the official code, converted: ``fgvc.convert``); None detects it (``.safetensors``:
    fgvc's, anything else: an official checkpoint, recognised by its keys).
    """
    if format not in (None, "fgvc") or (format is None and Path(path).suffix != ".safetensors" and Path(path).is_file()):
        from .convert import load_converted

        model = load_converted(path, format)
        if num_classes is not None and num_classes != model.num_classes:
            raise ValueError(f"class-count mismatch: {path} has {model.num_classes} classes, not {num_classes}")
        return model.to(device).eval()
    meta = read_metadata(path)
    if num_classes is not None and num_classes != meta["num_classes"]:
        raise ValueError(
            f"class-count mismatch: checkpoint {path} was trained on {meta['num_classes']} classes, "
            f"but num_classes={num_classes} was asked for"
        )
    model = create_model(
        meta["method"],
        backbone=meta["backbone"],
        num_classes=meta["num_classes"],
        img_size=tuple(meta["img_size"]),
        pretrained=False,
        drop_path_rate=meta.get("drop_path_rate", 0.0),
        patch_stride=meta.get("patch_stride"),
        backbone_kwargs=meta.get("backbone_kwargs") or None,
        **({"norm_eps": meta["norm_eps"]} if meta.get("norm_eps") is not None else {}),
        **meta.get("options", {}),
    )
    load_weights(model, path)
    model.class_names = meta.get("class_names")
    return model.to(device).eval()
