"""Weights files: safetensors with metadata, written atomically with a checksum, and state dicts read safely.

The ground floor of fgvc's files: it knows tensors, headers and paths, never models or methods, so
checkpoints (``fgvc.storage.checkpoint``), backbones, Hub folders, converted official checkpoints and pretraining all
read and write through it without importing each other.

Integrity: every file fgvc writes carries a CRC-32 of its tensors (names, dtypes, shapes and raw bytes, in
name order) in the metadata entry ``"fgvc_crc32"``, and a SHA-256 of all its other metadata entries (the
model's JSON, the training state's JSON, the CRC itself: ``metadata_checksum``) in ``"fgvc_metadata_sha256"``.
Both are checked whenever fgvc reads the file, so a bit flipped on disk or in a copy, or an edit of the tensors
or of the JSON, is an error naming the file rather than a model that silently differs. A file with neither
entry (written by another tool, or by hand) loads without a check, its metadata validated as usual; a file
with the tensor CRC but no metadata checksum (written by fgvc 0.1.0 before the metadata checksum, or one whose
checksum entry was removed) is refused, and ``add_metadata_checksum`` adds one to a file you trust.

Writes go to a temporary file that is flushed to disk and renamed into place, so a crash or a full disk
never leaves a half-written file or destroys the previous one; the temporary files of a write killed
half-way are removed by ``remove_stale_temporaries``. Foreign ``.pth`` files are read with
``torch.load(weights_only=True)`` only: a pickle that would run code is refused; a file that is no pickle or
torch archive at all (an image, text, a renamed safetensors file) is named for what it looks like
(``describe_file``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import pickletools
import re
import sys
import zipfile
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
    "METADATA_CHECKSUM_KEY",
    "add_metadata_checksum",
    "backbone_state_dict",
    "check_metadata_checksum",
    "cpu_tensors",
    "describe_file",
    "load_state_dict_file",
    "load_timm_state",
    "metadata_checksum",
    "read_header_json",
    "read_safetensors",
    "read_tensor_shapes",
    "remove_stale_temporaries",
    "tensor_checksum",
    "torch_load_safely",
    "write_safetensors",
]

CHECKSUM_KEY = "fgvc_crc32"
METADATA_CHECKSUM_KEY = "fgvc_metadata_sha256"
_TEMPORARY = re.compile(r"\.(?P<name>.+\.safetensors|log\.jsonl)\.tmp-(?P<pid>\d+)")


def tensor_checksum(tensors: dict[str, Tensor]) -> str:
    """CRC-32 (8 hex digits) of the tensors' names, dtypes, shapes and raw bytes, in name order."""
    crc = 0
    for name in sorted(tensors):
        t = tensors[name].detach()
        crc = zlib.crc32(f"{name}:{t.dtype}:{tuple(t.shape)};".encode(), crc)
        crc = zlib.crc32(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def metadata_checksum(metadata: dict[str, str]) -> str:
    """SHA-256 (hex) of every metadata entry but ``METADATA_CHECKSUM_KEY``, as JSON with sorted keys.

    The entries are safetensors metadata (text to text), so this canonical form does not depend on the
    order in which the header lists them.
    """
    entries = {k: v for k, v in metadata.items() if k != METADATA_CHECKSUM_KEY}
    text = json.dumps(entries, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def check_metadata_checksum(path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Refuse metadata that differs from what fgvc wrote (``ValueError`` naming the file).

    A file with no fgvc checksum at all (neither entry) passes: it was written by another tool or by hand,
    and its content is validated by whoever reads it. A file with the tensor CRC but no metadata checksum
    is refused: an fgvc file whose checksum entry is gone, or one written by fgvc 0.1.0 before metadata
    checksums (``add_metadata_checksum`` adds one to a file you trust).
    """
    expected = metadata.get(METADATA_CHECKSUM_KEY)
    if expected is None:
        if CHECKSUM_KEY in metadata:
            raise ValueError(
                f"{path}: metadata checksum missing: the file was modified or is corrupt, or it was written by "
                f"fgvc 0.1.0 before metadata checksums; if you trust it, "
                f"fgvc.io.add_metadata_checksum({os.fspath(path)!r}) adds one"
            )
        return
    if metadata_checksum(metadata) != expected:
        raise ValueError(
            f"{path}: metadata checksum mismatch: the file was modified or is corrupt (its header does not match "
            f"the checksum written with it); use another copy of the file"
        )


def describe_file(path: str | os.PathLike) -> str:
    """What a file looks like from its first bytes: "a safetensors file", "a pickle", "a JPEG image", "text", ...

    Never unpickles anything: a pickle is recognised by parsing its opcodes (``pickletools``).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    size = path.stat().st_size
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a damaged zip archive"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "a torch checkpoint (zip archive)"
        if names and all(n.endswith(".npy") for n in names):
            return "a NumPy .npz archive"
        return "a zip archive"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "a safetensors file"
    for magic, kind in ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG\r\n\x1a\n", "a PNG image"),
                        (b"GIF8", "a GIF image"), (b"\x93NUMPY", "a NumPy .npy array"),
                        (b"\x89HDF\r\n\x1a\n", "an HDF5 file"), (b"%PDF", "a PDF document"),
                        (b"\x1f\x8b", "a gzip archive")):
        if head.startswith(magic):
            return kind
    if _is_pickle(path):
        return "a pickle"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not merely a character cut at the end of the sample
            return "binary data of an unknown kind"
    return "text"


def _is_pickle(path: Path) -> bool:
    """Whether the file starts with a complete pickle (parsed, never loaded)."""
    try:
        with open(path, "rb") as f:
            return any(op.name == "STOP" for op, _, _ in pickletools.genops(f))
    except Exception:  # pickletools raises ValueError and others for bytes that are no pickle
        return False


def _not_safetensors(path: Path, what: str, error: Exception) -> ValueError:
    kind = describe_file(path)
    looks = f" (looks like {kind})" if kind != "a safetensors file" else ""
    return ValueError(f"{path} is not a readable safetensors {what}{looks}: {error}")


def cpu_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict as self-contained CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().contiguous().cpu().clone() for k, v in state.items()}


# ------------------------------------------------------------------------------------ reading
def read_safetensors(path: str | os.PathLike, what: str = "file") -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, its fgvc checksum verified when it has one.

    ``what`` names the file in errors ("checkpoint", "training state"). Unreadable files and checksum
    mismatches (of the tensors or of the metadata) are ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise _not_safetensors(path, what, e) from None
    check_metadata_checksum(path, metadata)
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
        raise _not_safetensors(path, what, e) from None
    check_metadata_checksum(path, header)
    if key not in header:
        raise ValueError(f"{path} is a safetensors file but not an fgvc {what} (no {key!r} metadata)")
    try:
        value = json.loads(header[key])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: the {key!r} metadata of this {what} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the {key!r} metadata of this {what} is not a JSON object")
    return value


def read_tensor_shapes(path: str | os.PathLike, what: str = "file") -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a safetensors file, from its header (no tensor data is read)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise _not_safetensors(path, what, e) from None


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
    naming the file and what torch refused; a file that is neither a pickle nor a torch zip archive is a
    ``ValueError`` saying what it looks like.
    """
    kind = describe_file(path)
    if kind not in ("a pickle", "a torch checkpoint (zip archive)"):
        hint = "; name it .safetensors" if kind == "a safetensors file" else ""
        raise ValueError(
            f"{path} is not a checkpoint fgvc can read (looks like {kind}): fgvc reads .safetensors files and "
            f"torch.save .pth / .pt / .bin files{hint}"
        )
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
    except (RuntimeError, EOFError, OSError) as e:  # a truncated or damaged archive
        raise ValueError(f"{path} is a damaged {kind[2:]}: torch cannot read it ({e})") from None


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


def load_timm_state(
    vit: nn.Module, state: dict[str, Tensor], path: str, name: str, *, filter_fn: Any = None
) -> dict[str, Any]:
    """Load a timm-style state dict into the timm model ``vit`` through timm's filter for its family, all or nothing.

    The filter (``checkpoint_filter_fn`` of the module that defines the model class) resamples position
    embeddings and patch kernels and converts other layouts, as timm does for its own pretrained weights; the
    classifier of the file is left aside (the backbone has none). Anything else that does not match is a
    ``ValueError`` with what matched, what is missing, what is unexpected and which shapes differ. Returns
    the load report: the file, the number of tensors loaded and the names left aside. ``filter_fn``: a filter
    ``(state, vit) -> state`` to use instead of the family's (``ViTBackbone``'s ``pos_embed_interpolation``).
    """
    if filter_fn is None:
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
    metadata[METADATA_CHECKSUM_KEY] = metadata_checksum(metadata)
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


def add_metadata_checksum(path: str | os.PathLike) -> Path:
    """Re-write a safetensors file you trust with fgvc's checksums (atomically); its tensors stay bit-identical.

    For files written by fgvc 0.1.0 before metadata checksums, which fgvc otherwise refuses. The tensor CRC,
    when the file has one, is verified first; a file whose metadata checksum is there and wrong is refused.
    Returns ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}{similar_files(path)}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise _not_safetensors(path, "file", e) from None
    if METADATA_CHECKSUM_KEY in metadata:
        check_metadata_checksum(path, metadata)
        return path
    if CHECKSUM_KEY in metadata and tensor_checksum(tensors) != metadata[CHECKSUM_KEY]:
        raise ValueError(f"{path} is corrupt: its tensor data do not match the checksum written with it")
    return write_safetensors(tensors, path, {k: v for k, v in metadata.items() if k != CHECKSUM_KEY})


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
        if pid != os.getpid() and process_running(pid):
            continue  # another process is writing it now
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one that cannot be told counts as running: never stale)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists (another user's) or cannot be told
    return True
