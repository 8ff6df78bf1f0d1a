"""Model checkpoints: weights as safetensors, with the JSON needed to rebuild the model in its header.

One file per checkpoint (``.safetensors``); its metadata entry ``"fgvc"`` is a JSON object with the method,
backbone, options, input size, class names, the calibration temperature when there is one
(``fgvc.calibrate``; absent: 1) and anything the caller adds (metrics, epoch). It can be read
without loading the weights (``read_metadata``). Files are written and read through ``fgvc.io``: atomic
writes, a CRC-32 of the tensors and a SHA-256 of the metadata checked on every read, ``.pth`` files read
without running pickled code.

Loading a checkpoint never reaches outside the file: ``load_model`` checks the metadata's types and ranges,
allows only timm model names (no ``hf-hub:`` / ``local-dir:`` sources, no paths) and fgvc's shipped backbone
names, no ``checkpoint_path`` / ``pretrained`` / ``pretrained_cfg`` among the options or timm arguments,
builds the model on the ``meta`` device first to check that its tensors are exactly the file's (so the
metadata cannot ask for a larger model than the file holds), and only then builds it with
``pretrained=False`` and fills it from the file. Every error names the file.

Training state for ``fit(resume=...)`` (``save_train_state``) is one more safetensors file holding the model
weights, the optimizer tensors and the RNG state as tensors, and everything else (scheduler, grad scaler,
step, sampler position, history) as JSON: one file, so model and optimizer can never come from different
steps, and nothing of fgvc's own is ever unpickled. Foreign ``.pth`` files are read with
``torch.load(weights_only=True)`` only (``load_state_dict_file``): a pickle that would run code is refused.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from ..backbones.vit import POS_EMBED_INTERPOLATIONS
from ..io import (
    cpu_tensors,
    load_state_dict_file,
    read_header_json,
    read_safetensors,
    read_tensor_shapes,
    remove_stale_temporaries,
    tensor_checksum,
    write_safetensors,
)
from ..methods.base import FGVCModel, UnknownMethodError, create_model, list_models, model_options
from ..version import __version__

__all__ = [
    "check_state_matches",
    "load_model",
    "load_state_dict_file",
    "load_train_state",
    "load_weights",
    "read_metadata",
    "remove_stale_temporaries",
    "run_config",
    "save_model",
    "save_train_state",
    "tensor_checksum",
]

FORMAT_VERSION = 1
TRAIN_STATE_VERSION = 1
TRAIN_STATE_KEYS = {"step", "epoch", "batches_done", "epochs", "world_size", "batch_size", "accumulate_steps", "seed",
                    "num_train", "sums", "history", "best_epoch", "best_top1", "rng", "optimizer"}
REQUIRED_METADATA = {"method": str, "backbone": str, "num_classes": int, "img_size": list}
#: Arguments that load files or reach the network: never taken from a checkpoint's metadata.
OUTSIDE_ARGUMENTS = frozenset({"checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_strict", "cache_dir"})


def save_model(
    model: FGVCModel,
    path: str | os.PathLike,
    *,
    class_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and rebuild information to ``path`` (atomically). Returns the path.

    ``class_names`` default to the model's own (``model.class_names``), so a checkpoint keeps what the model
    knows; ``extra`` (metrics, epoch, ...) may not replace any of the rebuild information. A model calibrated
    by ``fgvc.calibrate`` (``model.temperature`` other than 1) has its temperature saved as ``"temperature"``.
    """
    path = Path(path)
    if class_names is None:
        class_names = getattr(model, "class_names", None)
    if class_names is not None and len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names given for a model with {model.num_classes} classes")
    meta = dict(model.config, class_names=None if class_names is None else list(class_names),
                fgvc_version=__version__, format=FORMAT_VERSION)
    where = f"{type(model).__name__}.temperature"
    temperature = _checked_temperature(getattr(model, "temperature", 1.0), where)
    if temperature != 1.0:
        meta["temperature"] = temperature
    clash = sorted(set(extra or {}) & (set(meta) | {"temperature"}))
    if clash:
        raise ValueError(f"save_model: extra may not replace the checkpoint's own {', '.join(map(repr, clash))}")
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
    if names is not None and not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: the class names in the fgvc metadata are not all text")
    if "temperature" in meta:
        _checked_temperature(meta["temperature"], f"{path}: the fgvc metadata's 'temperature'")
    return meta


def _checked_temperature(value: Any, where: str) -> float:
    """A calibration temperature (``fgvc.engine.calibration``): a finite number > 0, else an error."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where} must be a finite number > 0, got {value!r}")
    return float(value)


def run_config(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The ``config.yaml`` that ``train_recipe`` wrote beside ``checkpoint`` (None when there is none)."""
    path = Path(checkpoint).with_name("config.yaml")
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text())
    return config if isinstance(config, dict) else None


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

    ``model.temperature`` is the checkpoint's calibration temperature (``fgvc.calibrate``), 1.0 without one.

    ``format``: ``"fgvc"`` (a ``.safetensors`` written by fgvc), ``"glsim-official"`` or ``"transfg-official"``
    (``.pth`` files of the official code, converted: ``fgvc.storage.convert``); None detects it (``.safetensors``:
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
    kwargs = _rebuild_arguments(path, meta)
    _check_size(path, meta["method"], kwargs, read_tensor_shapes(path, "checkpoint"))
    try:
        model = create_model(meta["method"], pretrained=False, **kwargs)
    except Exception as e:  # the method's own checks, or timm's, on values the metadata gave
        raise ValueError(f"{path}: the fgvc metadata does not describe a model fgvc can build: {e}") from None
    load_weights(model, path)
    model.class_names = meta.get("class_names")
    model.temperature = float(meta.get("temperature", 1.0))
    return model.to(device).eval()


def _rebuild_arguments(path: str | os.PathLike, meta: dict[str, Any]) -> dict[str, Any]:
    """``create_model`` arguments (all but the method) from checkpoint metadata, their types and ranges checked."""

    def bad(key: str, what: str) -> ValueError:
        return ValueError(f"{path}: the fgvc metadata has no valid {key!r} ({what}, got {meta.get(key)!r})")

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    method = meta["method"]
    if method not in list_models():
        raise UnknownMethodError(f"{path}: the checkpoint holds a {method!r} model, which fgvc does not know; "
                                 f"available: {', '.join(list_models())}", str(method))
    _check_backbone_name(path, meta["backbone"])
    if not positive_int(meta["num_classes"]):
        raise bad("num_classes", "a positive int")
    size = meta["img_size"]
    if len(size) != 2 or not all(positive_int(v) for v in size):
        raise bad("img_size", "[height, width], positive ints")
    rate = meta.get("drop_path_rate", 0.0)
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise bad("drop_path_rate", "a number in [0, 1)")
    stride = meta.get("patch_stride")
    if stride is not None and not positive_int(stride):
        raise bad("patch_stride", "null or a positive int")
    eps = meta.get("norm_eps")
    if eps is not None and (not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1
                            or not math.isfinite(eps)):
        raise bad("norm_eps", "null or a number in (0, 1)")
    interpolation = meta.get("pos_embed_interpolation")
    if interpolation is not None and interpolation not in POS_EMBED_INTERPOLATIONS:
        raise bad("pos_embed_interpolation", f"null or one of {', '.join(POS_EMBED_INTERPOLATIONS)}")
    timm_kwargs = meta.get("backbone_kwargs") or {}
    if not isinstance(timm_kwargs, dict):
        raise bad("backbone_kwargs", "a JSON object")
    options = meta.get("options") or {}
    if not isinstance(options, dict):
        raise bad("options", "a JSON object")
    common = set(inspect.signature(FGVCModel.__init__).parameters) - {"self"}
    own = set(model_options(method)) - common
    outside = sorted((set(timm_kwargs) | set(options)) & OUTSIDE_ARGUMENTS)
    if outside:
        raise ValueError(f"{path}: the fgvc metadata asks for {', '.join(map(repr, outside))}: a checkpoint is "
                         f"rebuilt from its own file only, never from other files or the network")
    overlay = timm_kwargs.get("pretrained_cfg_overlay")
    if overlay is not None and (not isinstance(overlay, dict) or {"file", "url", "hf_hub_id"} & set(overlay)):
        raise bad("backbone_kwargs", "timm arguments without other weight sources")
    unknown = sorted(set(options) - own)
    if unknown:
        raise ValueError(f"{path}: the fgvc metadata gives {method!r} unknown options {', '.join(map(repr, unknown))}"
                         f" (its options: {', '.join(sorted(own)) or 'none'})")
    kwargs = dict(backbone=meta["backbone"], num_classes=meta["num_classes"], img_size=tuple(size),
                  drop_path_rate=rate, patch_stride=stride, backbone_kwargs=timm_kwargs or None, **options)
    if eps is not None:
        kwargs["norm_eps"] = eps
    if interpolation is not None:
        kwargs["pos_embed_interpolation"] = interpolation
    return kwargs


def _check_backbone_name(path: str | os.PathLike, name: str) -> None:
    """A timm model name (optionally with a pretrained tag) or a shipped backbone; no Hub source, no path."""
    import timm

    from ..backbones.shipped import shipped_backbone

    if shipped_backbone(name) is not None:
        return
    if ":" in name or "/" in name or "\\" in name or not timm.is_model(name):
        raise ValueError(
            f"{path}: the fgvc metadata names the backbone {name!r}, which is not a timm model name (a checkpoint "
            f"is rebuilt from a timm architecture, never from a Hub repository or another file)"
        )


def _check_size(
    path: str | os.PathLike, method: str, kwargs: dict[str, Any], shapes: dict[str, tuple[int, ...]]
) -> None:
    """Build the model on the ``meta`` device (no memory) and require exactly the file's tensors and shapes.

    So the real model, built next, is never larger than what the file holds.
    """
    try:
        with torch.device("meta"):
            model = create_model(method, pretrained=False, **kwargs)
    except Exception as e:  # the method's own checks, or timm's, on values the metadata gave
        raise ValueError(f"{path}: the fgvc metadata does not describe a model fgvc can build: {e}") from None
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(own) - set(shapes)), sorted(set(shapes) - set(own))
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match the model its metadata describes: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}")
    for name, shape in own.items():
        if shapes[name] != shape:
            raise ValueError(f"checkpoint {path}: {name} has shape {shapes[name]}, the model its metadata "
                             f"describes expects {shape}")
