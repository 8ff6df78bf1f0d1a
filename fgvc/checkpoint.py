"""Model checkpoints: weights as safetensors, with the JSON needed to rebuild the model in its header.

One file per checkpoint (``.safetensors``); its metadata entry ``"fgvc"`` is a JSON object with the method,
backbone, options, input size, class names and anything the caller adds (metrics, epoch). It can be read
without loading the weights (``read_metadata``). Writes go to a temporary file that is renamed into place,
so a crash never leaves a half-written checkpoint or destroys the previous one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .methods.base import FGVCModel, create_model

__all__ = ["load_model", "load_weights", "read_metadata", "save_model"]

FORMAT_VERSION = 1


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
    # safetensors refuses shared storage; contiguous clones keep the file self-contained.
    state = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata={"fgvc": json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of an fgvc checkpoint, without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors checkpoint: {e}") from e
    if "fgvc" not in header:
        raise ValueError(f"{path} is a safetensors file but not an fgvc checkpoint (no 'fgvc' metadata)")
    return json.loads(header["fgvc"])


def load_weights(model: FGVCModel, path: str | os.PathLike) -> dict[str, Any]:
    """Load an fgvc checkpoint's weights into an existing model (strict). Returns the metadata.

    A class-count or input-size mismatch is reported as such, before any tensor is copied.
    """
    meta = read_metadata(path)
    if meta["num_classes"] != model.num_classes:
        raise ValueError(
            f"class-count mismatch: checkpoint {path} has {meta['num_classes']} classes, the model has "
            f"{model.num_classes}"
        )
    if meta.get("method") != model.method:
        raise ValueError(f"checkpoint {path} holds a {meta.get('method')!r} model, not {model.method!r}")
    state = load_file(str(path))
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
    model.load_state_dict(state, strict=True)
    return meta


def load_model(
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> FGVCModel:
    """Rebuild the model saved at ``path`` (method, backbone, options, size) and load its weights.

    If ``num_classes`` is given it must equal the checkpoint's: a mismatch is an error, not a silent
    re-initialised head. ``model.class_names`` holds the saved class names (or None).
    """
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
        **meta.get("options", {}),
    )
    load_weights(model, path)
    model.class_names = meta.get("class_names")
    return model.to(device).eval()
