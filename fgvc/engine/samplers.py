"""The order of the training data: which images each step sees, and the randomness of their augmentations.

The order of the training images is a function of (seed, epoch) (``DistributedSampler``), and each image's
augmentation randomness a function of (seed, epoch, index), whatever ``num_workers``: so a resumed run sees
exactly the batches, and the augmented images, that the interrupted one would have seen next.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from .distributed import get_rank, get_world_size

__all__ = ["EpochBatches", "SeededItems", "train_loader"]


def train_loader(
    data: Dataset, *, batch_size: int, seed: int, num_workers: int, device: torch.device
) -> tuple[DataLoader, EpochBatches]:
    """A loader of this rank's shard of ``data`` in seeded batches, and its batch sampler (``set_epoch``).

    The last, smaller batch of an epoch is dropped when a rank has more than one batch.
    """
    sampler = DistributedSampler(data, num_replicas=get_world_size(), rank=get_rank(), shuffle=True, seed=seed)
    batches = EpochBatches(sampler, batch_size, drop_last=len(sampler) > batch_size)
    loader = DataLoader(
        SeededItems(data, seed),
        batch_sampler=batches,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps the global RNG untouched
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    return loader, batches


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` from a ``DistributedSampler``, skipping those a resumed run has done.

    The permutation is ``DistributedSampler``'s: a function of (seed, epoch) only, so the batches of a
    resumed epoch are exactly the remaining ones of the interrupted epoch.
    """

    def __init__(self, sampler: DistributedSampler, batch_size: int, drop_last: bool) -> None:
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.epoch, self.skip = 1, 0

    @property
    def num_batches(self) -> int:
        """Batches in a whole epoch on this rank."""
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Batches of ``epoch`` from now on, leaving out its first ``skip`` (done before a resume)."""
        self.epoch, self.skip = epoch, skip
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_batches - self.skip

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for i, batch in enumerate(BatchSampler(self.sampler, self.batch_size, self.drop_last)):
            if i >= self.skip:
                yield [(self.epoch, j) for j in batch]


class SeededItems(Dataset):
    """``data[index]`` with python / numpy / torch (CPU) seeded from (seed, epoch, index) meanwhile.

    Random augmentations then depend on the image and the epoch only, not on the worker that loads it or
    on where a resumed run started; the caller's RNG streams are restored afterwards.
    """

    def __init__(self, data: Dataset, seed: int) -> None:
        self.data, self.seed = data, seed

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        s0, s1 = np.random.SeedSequence([self.seed % 2**32, epoch, index]).generate_state(2)
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(int(s0))
        np.random.seed(int(s0))
        torch.default_generator.manual_seed(int(s0) << 32 | int(s1))
        try:
            return self.data[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])
