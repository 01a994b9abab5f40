"""Progress of `run` over a file or a folder of images: one plain line every few seconds.

A long run into a video file or `null://` is otherwise silent until its report; these lines
suit a terminal and a log file alike (no carriage returns). Live sources have no end, so no
progress line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from uda_adapt.common.progress import format_duration
from uda_adapt.runtime.capture import Log, log_to_stderr

EVERY_SECONDS = 10.0


def expected_frames(frame_count: int | None, *, stride: int = 1, loop: int = 0, max_frames: int | None = None) -> int | None:
    """Frames a run will write: the source's count, every `stride`th, `loop` extra plays, capped; None if unknown."""
    total = None
    if frame_count and loop >= 0:
        total = math.ceil(frame_count / stride) * (loop + 1)
    if max_frames is not None:
        total = max_frames if total is None else min(total, max_frames)
    return total


class RunProgress:
    """An `on_frame(index, image)` hook of the pipeline that logs `frames/total, FPS, ETA`."""

    def __init__(self, total: int | None, *, every_seconds: float | None = None, log: Log = log_to_stderr,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self._log, self._clock = total, log, clock
        self.every = EVERY_SECONDS if every_seconds is None else every_seconds
        self._started = self._last = clock()

    def __call__(self, index: int, image: np.ndarray) -> None:
        now = self._clock()
        if now - self._last < self.every:
            return
        self._last = now
        self._log(self.line(index + 1, now - self._started))

    def line(self, done: int, elapsed: float) -> str:
        fps = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            eta = (self.total - done) / fps if fps > 0 else float("inf")
            return (f"progress: {done}/{self.total} frames ({100 * done / self.total:.1f} %)  {fps:.1f} FPS  "
                    f"ETA {format_duration(eta)}")
        return f"progress: {done} frames  {fps:.1f} FPS  {format_duration(elapsed)} elapsed"
