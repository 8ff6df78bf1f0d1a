"""Model checkpoints: weights as safetensors, with the JSON needed to rebuild the model in its header.

One file per checkpoint (``.safetensors``); its metadata entry ``"fgvc"`` is a JSON object with the method,
backbone, options, input size, class names and anything the caller adds (metrics, epoch). It can be read
without loading the weights (``read_metadata``). Files are written and read through ``fgvc.io``: atomic
writes, a CRC-32 of the tensors checked on every read, ``.pth`` files read without running pickled code.

Training state for ``fit(resume=...)`` (``save_train_state``) is one more safetensors file holding the model
weights, the optimizer tensors and the RNG state as tensors, and everything else (scheduler, grad scaler,
step, sampler position, history) as JSON: one file, so model and optimizer can never come from different
steps, and nothing of fgvc's own is ever unpickled. Foreign ``.pth`` files are read with
``torch.load(weights_only=True)`` only (``load_state_dict_file``): a pickle that would run code is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .io import (
    cpu_tensors,
    load_state_dict_file,
    read_header_json,
    read_safetensors,
    remove_stale_temporaries,
    tensor_checksum,
    write_safetensors,
)
from .methods.base import FGVCModel, create_model
from .version import __version__

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
TRAIN_STATE_KEYS = {"step", "epoch", "batches_done", "epochs", "world_size", "batch_size", "accumulate_steps", "seed",
                    "num_train", "sums", "history", "best_epoch", "best_top1", "rng", "optimizer"}
REQUIRED_METADATA = {"method": str, "backbone": str, "num_classes": int, "img_size": list}


def save_model(
    model: FGVCModel,
    path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and rebuild information to ``path`` (atomically). Returns the path."""
    path = Path(path)
    if class_names is not None and len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names given for a model with {model.num_classes} classes")
    meta = dict(model.config, class_names=class_names, fgvc_version=__version__, format=FORMAT_VERSION)
    meta.update(extra or {})
    return write_safetensors(cpu_tensors(model.state_dict()), path, {"fgvc": json.dumps(meta)})


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of an fgvc checkpoint, without loading its weights."""
    meta = read_header_json(path, "fgvc", "checkpoint")
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
    state, _ = read_safetensors(path, "checkpoint")
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
    out = {f"model/{k}": v for k, v in cpu_tensors(model.state_dict()).items()}
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
    return write_safetensors(out, path, {"fgvc_train_state": json.dumps(meta)})


def load_train_state(
    path: str | os.PathLike,
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]]:
    """Read a ``save_train_state`` file: (model state dict, JSON state, the other tensors).

    The optimizer's state dict is rebuilt into ``state["optimizer_state_dict"]``.
    """
    meta = read_header_json(path, "fgvc_train_state", "training state")
    absent = sorted(TRAIN_STATE_KEYS - set(meta))
    optimizer = meta.get("optimizer")
    if absent or not isinstance(optimizer, dict) or not {"param_groups", "scalars"} <= set(optimizer):
        raise ValueError(
            f"{path}: the training state's metadata is incomplete (missing {absent or ['optimizer']}); the file "
            f"was not written by fgvc.fit or was edited"
        )
    flat, _ = read_safetensors(path, "training state")
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
