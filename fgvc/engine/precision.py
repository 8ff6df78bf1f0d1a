"""Numeric precision of a run: the autocast dtype an ``amp`` setting means, and CUDA's TF32 switches.

``fit`` and ``fgvc benchmark`` read ``amp`` the same way through ``autocast_dtype``, so a setting trains and
is timed in the same precision.
"""

from __future__ import annotations

import torch

__all__ = ["autocast_dtype", "set_tf32"]


def autocast_dtype(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (None: fp32). 'auto': bf16 on CUDA GPUs that support it,
    none on the CPU (slower there than fp32)."""
    if amp in (None, False, "none", "fp32"):
        return None
    if amp in ("auto", True):
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16"):
        return torch.float16
    raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or None, got {amp!r}")


def set_tf32(value: bool | tuple[bool, bool] | None) -> tuple[bool, bool] | None:
    """Set TF32 for CUDA matmuls and cuDNN (one flag, or the (matmul, cudnn) pair ``set_tf32`` returned);
    returns the previous pair, or None when ``value`` is None (left alone)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        matmul, cudnn = value
    else:
        matmul = cudnn = bool(value)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    return before
