"""Checkpoints written by the methods' official code, as fgvc models with the same outputs.

Each method module that has such a format declares it as ``OFFICIAL_FORMAT`` (``fgvc.methods.declare.
OfficialFormat``: its name, the keys that identify it, its converter), and this module reads every declared
one through the registry: the shipped ones are ``glsim-official`` (``fgvc/methods/glsim.py``: the official
GLSim trainer's files, GLSim and plain ViT runs) and ``transfg-official`` (``fgvc/methods/transfg.py``:
TransFG's ``train.py``), each described beside its converter.

Files are read with ``torch.load(weights_only=True)``, allowing only ``argparse.Namespace`` besides tensors
and plain containers (``safe_globals``): a pickle that asks for anything else is refused, never run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..hints import similar_files
from ..io import torch_load_safely
from ..methods.base import FGVCModel, declared
from ..methods.declare import OfficialFormat, strip_prefixes

__all__ = [
    "FORMATS",
    "convert_official",
    "detect_format",
    "formats",
    "load_converted",
    "official_formats",
    "read_official_checkpoint",
]


def official_formats() -> dict[str, OfficialFormat]:
    """Every ``OFFICIAL_FORMAT`` the registered methods' modules declare, by name, in registration order."""
    return {f.name: f for f in declared("OFFICIAL_FORMAT")}


def formats() -> tuple[str, ...]:
    """What ``fgvc.load_model(path, format=...)`` and ``fgvc convert`` accept: ``fgvc`` and the official ones."""
    return ("fgvc", *official_formats())


#: ``formats()`` of the shipped methods (a plugin's format, registered later, is in ``formats()``).
FORMATS = formats()


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` allowing ``argparse.Namespace`` (the official config) and nothing else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}{similar_files(path)}")
    obj = torch_load_safely(path, allowed=[argparse.Namespace])
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def detect_format(obj: dict[str, Any]) -> str:
    """The official format whose keys a loaded checkpoint's ``model`` state dict has, else an error."""
    known = official_formats()
    model = obj.get("model")
    if isinstance(model, dict):
        keys = strip_prefixes(dict(model), "module.", "model.")
        for name, fmt in known.items():
            if any(k.startswith(fmt.keys) for k in keys):
                return name
    read = ["its own .safetensors", *(f.description for f in known.values())]
    listed = ", ".join(read[:-1]) + " and " + read[-1] if len(read) > 1 else read[0]
    raise ValueError(f"not a checkpoint of a known format: fgvc reads {listed}; pass format= to say which")


def convert_official(obj: dict[str, Any], format: str, **options: Any) -> FGVCModel:
    """A loaded official checkpoint as an fgvc model, by the converter its format declares (``options``: that
    converter's, e.g. TransFG's ``img_size`` and ``patch_stride``)."""
    known = official_formats()
    if format not in known:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(formats())}")
    return known[format].convert(obj, **options)


def load_converted(path: str | os.PathLike, format: str | None = None) -> FGVCModel:
    """Read an official checkpoint file (format detected, or given) as an fgvc model in eval mode."""
    if format is not None and format not in official_formats():
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(formats())}")
    obj = read_official_checkpoint(path)
    try:
        format = format or detect_format(obj)
        model = convert_official(obj, format)
    except KeyError as e:  # a tensor the official model always has
        raise ValueError(f"{path}: not a complete {format or 'official'} checkpoint: it has no {e}") from None
    except (ValueError, TypeError, AttributeError, IndexError, RuntimeError) as e:  # shapes / values it cannot have
        text = str(e)
        raise ValueError(text if str(path) in text else f"{path}: {text}") from None
    return model.eval()
