"""An endless, resumable stream of training batches.

Training counts iterations, not epochs, and must resume exactly where it stopped: the
order of each epoch is a pure function of (seed, epoch), the random augmentation of each
sample a pure function of (seed, epoch, position in the epoch), and the stream's position is a
two-number state saved in every checkpoint. So a resumed stream yields the same batches as an
uninterrupted one, with or without DataLoader workers, whatever else drew from torch's RNG.

Under data-parallel training `batch_size` is the global batch and each rank loads its own
contiguous part of it (`Distributed.local_slice`): together the ranks see exactly the batches,
and augmentations, of the single-process run, and the stream state is the same on every rank.
(torch's DistributedSampler would shard epochs, not batches, and cannot resume mid-epoch.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from common.errors import UserError
from adapt.train.distributed import SINGLE_PROCESS, Distributed


@dataclass
class StreamState:
    epoch: int = 0
    batches_done: int = 0   # batches already taken from `epoch`


# An epoch's sample order: (generator, dataset size) -> indices; the default is a permutation.
EpochOrder = Callable[[torch.Generator, int], list[int]]


def random_permutation(generator: torch.Generator, size: int) -> list[int]:
    return torch.randperm(size, generator=generator).tolist()


class SeededSamples(Dataset):
    """`dataset[index]` under torch's RNG seeded from (seed, epoch, position), the caller's RNG untouched.

    Keys are (epoch, position, index) triples; the transforms of `dataset` draw from torch's
    global RNG, which is forked for each sample.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]):
        epoch, position, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 1_000_033 + position)
            return self.dataset[index]


class BatchStream:
    """Yields (images, labels) batches forever; `state` says where the stream is."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, state: StreamState | None = None,
                 order: EpochOrder = random_permutation, shard: Distributed = SINGLE_PROCESS, pin_memory: bool = False) -> None:
        if len(dataset) == 0:
            raise UserError("a training split is empty; check the dataset root and split names in the config")
        self.dataset = dataset
        self.samples = SeededSamples(dataset, seed)
        self.order = order
        # Small datasets still give full batches: never more per batch than there are images.
        self.batch_size = max(1, min(batch_size, len(dataset)))
        self.shard = shard
        self.local_batch_size = shard.local_batch_size(self.batch_size)
        self.pin_memory = pin_memory
        self.seed = seed
        self.num_workers = num_workers
        self.state = state or StreamState()
        self._iterator: Iterator | None = None

    def _epoch_batches(self, epoch: int) -> list[list[tuple[int, int, int]]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = self.order(generator, len(self.dataset))
        keys = [(epoch, position, index) for position, index in enumerate(order)]
        usable = len(keys) - len(keys) % self.batch_size  # drop the ragged last batch
        mine = self.shard.local_slice(self.batch_size)
        return [keys[i : i + self.batch_size][mine] for i in range(0, usable, self.batch_size)]

    def _start_epoch(self) -> None:
        batches = self._epoch_batches(self.state.epoch)[self.state.batches_done :]
        if not batches:
            # Saved exactly at an epoch's end: begin the next one, as an uninterrupted run would.
            # (Creating a loader draws from torch's RNG, so an empty one would shift every later draw.)
            self.state = StreamState(self.state.epoch + 1, 0)
            batches = self._epoch_batches(self.state.epoch)
        loader = DataLoader(self.samples, batch_sampler=batches, num_workers=self.num_workers, pin_memory=self.pin_memory)
        self._iterator = iter(loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self._start_epoch()
        while True:
            try:
                batch = next(self._iterator)
                self.state.batches_done += 1
                return batch
            except StopIteration:
                self.state = StreamState(self.state.epoch + 1, 0)
                self._start_epoch()
