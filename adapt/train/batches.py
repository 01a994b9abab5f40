"""An endless, resumable stream of training batches.

Training counts iterations, not epochs, and must resume exactly where it stopped: the
order of each epoch is a pure function of (seed, epoch), the random augmentation of each
sample a pure function of (seed, epoch, position in the epoch), and the stream's position is a
two-number state saved in every checkpoint. So a resumed stream yields the same batches as an
uninterrupted one, with or without DataLoader workers, whatever else drew from torch's RNG.

`batch_size` is the global batch of one optimizer step. With `accumulate` = k it is taken as k
micro-batches of batch_size / k, in order; under data-parallel training each rank loads its own
contiguous part of each micro-batch (`Distributed.local_slice`). So the ranks' micro-step m
together hold images [m * b, (m + 1) * b) of the global batch (b = batch_size / k), exactly
the batches and augmentations of the single-process run, and the stream state (counted in
global batches) is the same on every rank and for every k. (torch's DistributedSampler would
shard epochs, not batches, and cannot resume mid-epoch.)
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from uda_adapt.common.errors import UserError
from uda_adapt.adapt.train.distributed import SINGLE_PROCESS, Distributed


@dataclass
class StreamState:
    epoch: int = 0
    batches_done: int = 0   # global batches already taken from `epoch`


@dataclass
class LoadingClock:
    """Seconds spent waiting for batches, summed over the streams that share it (the loop logs the share)."""

    seconds: float = 0.0


# An epoch's sample order: (generator, dataset size) -> indices, or (index, class) picks whose
# crop should show the class (rare-class sampling); the default is a permutation.
EpochOrder = Callable[[torch.Generator, int], list[int] | list[tuple[int, int]]]

CROP_REDRAWS = 10       # DAFormer's `for j in range(10)` in UDADataset.get_rare_class_sample


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM/SIGUSR1 to the training process (adapt/train/preemption.py):
    a scheduler signals every process of the job, and a worker that died of it would end the
    step with "DataLoader worker killed" before the training process can save. Workers end with it."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def random_permutation(generator: torch.Generator, size: int) -> list[int]:
    return torch.randperm(size, generator=generator).tolist()


class SeededSamples(Dataset):
    """`dataset[index]` under torch's RNG seeded from (seed, epoch, position), the caller's RNG untouched.

    Keys are (epoch, position, index) triples, or (epoch, position, index, class) where the
    sample should show `class`: then the sample is redrawn (a new random crop), up to
    CROP_REDRAWS times, until its label has more than `min_class_pixels` pixels of the class,
    and the last draw is kept if none has (DAFormer's rare-class crop). The transforms of
    `dataset` draw from torch's global RNG, which is forked for each draw.
    """

    def __init__(self, dataset: Dataset, seed: int, min_class_pixels: float = 0) -> None:
        self.dataset, self.seed, self.min_class_pixels = dataset, seed, min_class_pixels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, ...]):
        epoch, position, index, *wanted = key
        base = (self.seed * 1_000_003 + epoch) * 1_000_033 + position
        sample = self._draw(index, base)
        if not wanted or self.min_class_pixels <= 0:
            return sample
        for redraw in range(1, CROP_REDRAWS + 1):
            if int((sample[1] == wanted[0]).sum()) > self.min_class_pixels:
                break
            sample = self._draw(index, base * 1_000_037 + redraw)
        return sample

    def _draw(self, index: int, seed: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % (2**63))
            return self.dataset[index]


class BatchStream:
    """Yields this rank's (images, labels) micro-batches forever; `state` says where the stream is.

    batch_size: images per optimizer step over every rank; micro_batch_size: per forward over
    every rank (what random choices drawn per batch are drawn for); local_batch_size: per
    forward on this rank.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, state: StreamState | None = None,
                 order: EpochOrder = random_permutation, shard: Distributed = SINGLE_PROCESS, pin_memory: bool = False,
                 accumulate: int = 1, clock: LoadingClock | None = None, min_class_pixels: float = 0) -> None:
        if len(dataset) == 0:
            raise UserError("a training split is empty; check the dataset root and split names in the config")
        self.dataset = dataset
        self.samples = SeededSamples(dataset, seed, min_class_pixels)
        self.order = order
        # Small datasets still give full batches: never more per batch than there are images.
        self.batch_size = max(1, min(batch_size, len(dataset)))
        self.shard = shard
        self.accumulate = accumulate
        self.local_batch_size = shard.local_batch_size(self.batch_size, accumulate)
        self.micro_batch_size = self.batch_size // accumulate
        self.clock = clock or LoadingClock()
        self._micro_steps_done = 0      # of the current global batch
        self.pin_memory = pin_memory
        self.seed = seed
        self.num_workers = num_workers
        self.state = state or StreamState()
        self._iterator: Iterator | None = None

    def _epoch_batches(self, epoch: int) -> list[list[tuple[int, int, int]]]:
        """This rank's micro-batches of `epoch`, `accumulate` per global batch."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = self.order(generator, len(self.dataset))
        keys = [(epoch, position, *(pick if isinstance(pick, tuple) else (pick,))) for position, pick in enumerate(order)]
        usable = len(keys) - len(keys) % self.batch_size  # drop the ragged last batch
        micro = self.micro_batch_size
        mine = self.shard.local_slice(micro)
        return [keys[i : i + micro][mine] for i in range(0, usable, micro)]

    def _start_epoch(self) -> None:
        self._micro_steps_done = 0
        batches = self._epoch_batches(self.state.epoch)[self.state.batches_done * self.accumulate :]
        if not batches:
            # Saved exactly at an epoch's end: begin the next one, as an uninterrupted run would.
            # (Creating a loader draws from torch's RNG, so an empty one would shift every later draw.)
            self.state = StreamState(self.state.epoch + 1, 0)
            batches = self._epoch_batches(self.state.epoch)
        loader = DataLoader(self.samples, batch_sampler=batches, num_workers=self.num_workers, pin_memory=self.pin_memory,
                            worker_init_fn=_ignore_stop_signals if self.num_workers else None)
        self._iterator = iter(loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next micro-batch; `state` advances by one global batch after its last micro-batch."""
        started = time.perf_counter()
        if self._iterator is None:
            self._start_epoch()
        while True:
            try:
                batch = next(self._iterator)
                break
            except StopIteration:
                self.state = StreamState(self.state.epoch + 1, 0)
                self._start_epoch()
        self._micro_steps_done += 1
        if self._micro_steps_done == self.accumulate:
            self.state.batches_done += 1
            self._micro_steps_done = 0
        self.clock.seconds += time.perf_counter() - started
        return batch
