"""An endless, resumable stream of training batches.

Training counts iterations, not epochs, and must resume exactly where it stopped: the
order of each epoch is a pure function of (seed, epoch), and the stream's position is a
two-number state saved in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from common.errors import UserError


@dataclass
class StreamState:
    epoch: int = 0
    batches_done: int = 0   # batches already taken from `epoch`


class BatchStream:
    """Yields (images, labels) batches forever; `state` says where the stream is."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, state: StreamState | None = None) -> None:
        if len(dataset) == 0:
            raise UserError("a training split is empty; check the dataset root and split names in the config")
        self.dataset = dataset
        # Small datasets still give full batches: never more per batch than there are images.
        self.batch_size = max(1, min(batch_size, len(dataset)))
        self.seed = seed
        self.num_workers = num_workers
        self.state = state or StreamState()
        self._iterator: Iterator | None = None

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        usable = len(order) - len(order) % self.batch_size  # drop the ragged last batch
        return [order[i : i + self.batch_size] for i in range(0, usable, self.batch_size)]

    def _start_epoch(self) -> None:
        batches = self._epoch_batches(self.state.epoch)[self.state.batches_done :]
        if not batches:
            # Saved exactly at an epoch's end: begin the next one, as an uninterrupted run would.
            # (Creating a loader draws from torch's RNG, so an empty one would shift every later draw.)
            self.state = StreamState(self.state.epoch + 1, 0)
            batches = self._epoch_batches(self.state.epoch)
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers)
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
