"""Stopping cleanly when the scheduler asks: SIGTERM (scancel, a SLURM time limit, torchrun ending
a job) and SIGUSR1 (SLURM's early warning, `#SBATCH --signal=B:USR1@120` or `srun --signal`).

Inside the training loop a signal only records itself: the loop finishes the iteration, every
rank learns of it with that iteration's loss all-reduce (so all stop after the same iteration),
rank 0 writes `last.pt`, and the run ends with `Preempted`, which says to rerun the same command.
Anywhere else (evaluation, pseudo labels, AdaBN) it stops at once: the checkpoints on disk are
whole, and the rerun resumes from the last one.

Signals belong to the process, so the request is one object per process (`STOP`), reset by
`handle_signals` for each training session.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from uda_adapt.common.errors import UserError

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(UserError):
    """Training stopped on a signal; the message says what was saved and to rerun the same command."""


class StopRequest:
    """The signal received, if any; while `deferred`, the loop stops at its next iteration boundary."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.deferred = False

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __call__(self, signum: int, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        if not self.deferred:
            raise Preempted(f"stopped by {self.signal_name} (the scheduler, or torchrun because another training process failed)")

    @contextlib.contextmanager
    def at_iteration_boundaries(self) -> Iterator[StopRequest]:
        """Within the block a signal waits for the loop to act on it."""
        previous, self.deferred = self.deferred, True
        try:
            yield self
        finally:
            self.deferred = previous


STOP = StopRequest()


@contextlib.contextmanager
def handle_signals() -> Iterator[StopRequest]:
    """SIGTERM and SIGUSR1 go to `STOP` inside the block (the previous handlers come back after)."""
    STOP.signal_name, STOP.deferred = None, False
    if threading.current_thread() is not threading.main_thread():   # Python lets only the main thread set handlers
        yield STOP
        return
    previous = {sig: signal.signal(sig, STOP) for sig in SIGNALS}
    try:
        yield STOP
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        STOP.signal_name = None
