"""Peak memory of one call, above what the process already holds (``fgvc benchmark``'s memory columns).

CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus ``memory_allocated`` before. CPU (Linux):
a process's peak RSS (``getrusage``) only grows, so the RSS high-water mark is reset through
``/proc/self/clear_refs`` right before the call, after freed heap memory has been returned to the system
(``malloc_trim``), and the RSS just before is subtracted: the figure is that call's own growth, whatever ran
before it in the process (docs/results.md compares it with a fresh process per model). Where /proc is missing
the CPU figure is NaN.
"""

from __future__ import annotations

import ctypes
import gc
import math
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["MIB", "peak_memory_mib"]

MIB = 2**20


def peak_memory_mib(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak memory of ``fn()`` on ``device`` in MiB above what was allocated just before it (NaN if unknown)."""
    gc.collect()  # tensors held by reference cycles of an earlier call
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MIB
    _trim_heap()
    if not _reset_peak_rss() or (before := _proc_status()) is None:
        return math.nan
    fn()
    after = _proc_status()
    return math.nan if after is None else (after[1] - before[0]) / MIB


def _proc_status() -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of this process in bytes from /proc (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        return int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where it cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Return freed heap memory to the system (glibc), so the next call's RSS growth is its own."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
