"""Data-parallel training with PyTorch's own ``torchrun`` and ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m fgvc train ...`` (or any script calling ``fgvc.fit``) starts N processes with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. ``fit`` then calls
``init_distributed()``: one process group (NCCL on GPUs, gloo on the CPU), one GPU per process
(``LOCAL_RANK``). Without those variables everything here is a no-op and training is single-process, as
in a notebook.

Only rank 0 writes logs and checkpoints (``is_main_process``); every rank computes, and evaluation shards
the data without padding so metrics are exact (``fgvc.evaluate``).
"""

from __future__ import annotations

import atexit
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "barrier",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "unwrap_model",
]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that logs and writes files."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def launched_by_torchrun() -> bool:
    """``torchrun`` (and ``srun`` scripts that export the same variables) set WORLD_SIZE and RANK."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: str | torch.device | None = None, timeout_minutes: float = 30) -> torch.device:
    """Join the process group torchrun describes (once) and return this process's device.

    Backend: NCCL when the device is CUDA, gloo otherwise. On CUDA each process takes GPU ``LOCAL_RANK``.
    Outside torchrun (no WORLD_SIZE > 1) nothing is initialised and the usual default device is returned.
    """
    if device is not None:
        device = torch.device(device)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    if not launched_by_torchrun() and not (dist.is_available() and dist.is_initialized()):
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        atexit.register(_leave_process_group)
    return device


def _leave_process_group() -> None:
    """Destroy the process group fgvc joined before the interpreter exits: left to the C++ destructors at
    shutdown, gloo's threads can abort a finished process ("terminate called without an active exception"),
    which torchrun reports as a failed run."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model`` itself.

    Every fgvc method uses all its parameters in a training forward + loss (checked by the tests), so
    ``find_unused_parameters`` stays off (it costs a graph traversal per step); evaluation runs the
    unwrapped model, where DCAL skips PWCA, without DDP.
    """
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=ids, output_device=ids[0] if ids else None, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(model: nn.Module) -> Any:
    """The FGVCModel inside DDP and/or ``torch.compile`` wrappers (for ``.loss``, ``state_dict``, config)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (just ``[obj]`` when single-process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks, in float64 (exact for counts)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (e.g. a non-finite loss anywhere stops every rank)."""
    if not is_distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
