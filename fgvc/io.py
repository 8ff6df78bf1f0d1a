"""Weights files: safetensors with metadata, written atomically with a checksum, and state dicts read safely.

The ground floor of fgvc's files: it knows tensors, headers and paths, never models or methods, so
checkpoints (``fgvc.checkpoint``), backbones, Hub folders, converted official checkpoints and pretraining all
read and write through it without importing each other.

Integrity: every file fgvc writes carries a CRC-32 of its tensors (names, dtypes, shapes and raw bytes, in
name order) in the metadata entry ``"fgvc_crc32"``, checked whenever fgvc reads the file, so a bit flipped on
disk or in a copy is an error naming the file rather than a model that predicts NaN. Files without a checksum
(written by an older fgvc, or by other tools) load without one.

Writes go to a temporary file that is flushed to disk and renamed into place, so a crash or a full disk
never leaves a half-written file or destroys the previous one; the temporary files of a write killed
half-way are removed by ``remove_stale_temporaries``. Foreign ``.pth`` files are read with
``torch.load(weights_only=True)`` only: a pickle that would run code is refused.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from .hints import similar_files

__all__ = [
    "CHECKSUM_KEY",
    "backbone_state_dict",
    "cpu_tensors",
    "load_state_dict_file",
    "load_timm_state",
    "read_header_json",
    "read_safetensors",
    "remove_stale_temporaries",
    "tensor_checksum",
    "torch_load_safely",
    "write_safetensors",
]

CHECKSUM_KEY = "fgvc_crc32"
_TEMPORARY = re.compile(r"\.(?P<name>.+\.safetensors|log\.jsonl)\.tmp-(?P<pid>\d+)")


def tensor_checksum(tensors: dict[str, Tensor]) -> str:
    """CRC-32 (8 hex digits) of the tensors' names, dtypes, shapes and raw bytes, in name order."""
    crc = 0
    for name in sorted(tensors):
        t = tensors[name].detach()
        crc = zlib.crc32(f"{name}:{t.dtype}:{tuple(t.shape)};".encode(), crc)
        crc = zlib.crc32(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def cpu_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict as self-contained CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().contiguous().cpu().clone() for k, v in state.items()}


# ------------------------------------------------------------------------------------ reading
def read_safetensors(path: str | os.PathLike, what: str = "file") -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, its fgvc checksum verified when it has one.

    ``what`` names the file in errors ("checkpoint", "training state"). Unreadable files and checksum
    mismatches are ``ValueError`` naming the file.
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


def read_header_json(path: str | os.PathLike, key: str, what: str) -> dict[str, Any]:
    """The JSON object under ``key`` in a safetensors header, without loading tensors; errors name the file."""
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
        return read_safetensors(path, "file")[0]
    obj = torch_load_safely(path)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def torch_load_safely(path: str | os.PathLike, *, allowed: Sequence[type] = ()) -> Any:
    """``torch.load(weights_only=True)`` of a ``.pth`` file: tensors, plain containers and ``allowed`` classes only.

    A pickle that asks for anything else (it could import and call a function) is refused with ``ValueError``
    naming the file and what torch refused.
    """
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line] or [str(e).splitlines()[0]]
        needs = "".join(f" and {cls.__module__}.{cls.__qualname__}" for cls in allowed)
        raise ValueError(
            f"refusing to load {path}: it is a pickle that needs more than tensors{needs} to load (it could run "
            f"code on this machine), and fgvc only reads .pth files with torch.load(weights_only=True). If you "
            f"trust its source, convert it once to .safetensors in a separate session. torch says: {lines[0]}"
        ) from None


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


def load_timm_state(vit: nn.Module, state: dict[str, Tensor], path: str, name: str) -> dict[str, Any]:
    """Load a timm-style state dict into the timm model ``vit`` through timm's filter for its family, all or nothing.

    The filter (``checkpoint_filter_fn`` of the module that defines the model class) resamples position
    embeddings and patch kernels and converts other layouts, as timm does for its own pretrained weights; the
    classifier of the file is left aside (the backbone has none). Anything else that does not match is a
    ``ValueError`` with what matched, what is missing, what is unexpected and which shapes differ. Returns
    the load report: the file, the number of tensors loaded and the names left aside.
    """
    filter_fn = getattr(sys.modules.get(type(vit).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, vit)
    own = vit.state_dict()
    heads = (getattr(vit, "pretrained_cfg", None) or {}).get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    aside = sorted(k for k in state if k not in own and any(k.startswith(h + ".") for h in heads))
    state = {k: v for k, v in state.items() if k not in aside}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        matched = len(own) - len(missing) - len(shapes)
        parts = [f"matched {matched} of {len(own)} tensors"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes)):
            if items:
                more = f", ... ({len(items) - 4} more)" if len(items) > 4 else ""
                parts.append(f"{label} {len(items)} ({', '.join(items[:4])}{more})")
        raise ValueError(
            f"{path} does not fit {name}: " + "; ".join(parts) + " (a timm state dict of this architecture, or "
            "an fgvc checkpoint / train_state of the same backbone, is expected)"
        )
    vit.load_state_dict(state, strict=True)
    return dict(file=path, loaded=len(own), left_aside=aside)


# ------------------------------------------------------------------------------------ writing
def write_safetensors(tensors: dict[str, Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """``safetensors.save_file`` with fgvc's checksum added to ``metadata``: to a temporary file, fsync, rename.

    A crash or a full disk leaves either the old file or the new one, never a truncated one, and no
    temporary file behind. Returns ``path``.
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
