"""The capture thread and the two ways it hands frames to the pipeline.

`--latest` (live sources): a `LatestFrameSlot` holds only the newest frame; an untaken frame
that is overwritten is counted as dropped, and a frame is handed out at most once, so the
consumer never sees a stale frame twice. `--buffered` (files): a bounded `FrameQueue`; the
capture thread blocks when it is full, so every frame is processed in order and memory stays
flat. Live sources that stop delivering reconnect with capped exponential back-off; files end
cleanly (or loop with `--input-loop`).
"""

from __future__ import annotations

import dataclasses
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np

from uda_adapt.common.errors import UserError
from uda_adapt.runtime.thread_priority import lower_current_thread

Log = Callable[[str], None]


def log_to_stderr(message: str) -> None:
    print(f"uda-adapt: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One captured BGR uint8 (H, W, 3) image.

    `seq` counts the valid frames the source produced (gaps downstream are drops);
    `timestamp` is `time.perf_counter()` at capture, the start of the latency clock.
    """

    image: np.ndarray
    seq: int
    timestamp: float
    name: str = ""      # the source's name for it (a file's stem, `<video stem>_<index>`), else ""


class VideoSource(Protocol):
    """A raw frame reader; `CaptureThread` adds threading, delivery, looping and reconnects."""

    name: str             # the URI as the user wrote it, for messages
    live: bool            # camera or stream: real time, may drop, reconnects when lost
    fps: float | None     # the source's own frame rate, when it knows one

    def open(self) -> None:
        """Open or reopen; raise UserError saying why when it cannot."""

    def read(self) -> tuple[bool, np.ndarray | None]:
        """(False, None) at the end of a file or when a live source is lost.

        (True, image) otherwise; the image may be corrupt (None, empty, wrong shape).
        """

    def skip(self) -> bool:
        """Advance one frame without decoding it fully; False at the end."""

    def close(self) -> None: ...


class EndOfStream(Exception):
    """The source has no more frames (raised by `get` after the last frame)."""


class LatestFrameSlot:
    """A one-frame box: `put` replaces, `get` takes. Replacing an untaken frame is a drop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._error: BaseException | None = None
        self.dropped = 0

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1      # the consumer was busy: this frame is never shown
            self._frame = frame
            self._cond.notify()
        return True

    def get(self, timeout: float) -> Frame | None:
        """The newest frame not yet handed out, or None if none arrives within `timeout`."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout):
                return None
            if self._frame is None:
                raise self._error or EndOfStream()
            frame, self._frame = self._frame, None
            return frame

    def close(self, stop: threading.Event, error: BaseException | None = None) -> None:
        with self._cond:
            self._closed, self._error = True, error
            self._cond.notify_all()


_END = object()


class FrameQueue:
    """A bounded FIFO: `put` blocks while full (the consumer sets the pace), nothing is dropped."""

    dropped = 0

    def __init__(self, maxsize: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._ended = False

    def put(self, item: object, stop: threading.Event) -> bool:
        """False if `stop` was set while waiting for room."""
        while not stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> Frame | None:
        if self._ended:
            raise self._error or EndOfStream()
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._ended = True
            raise self._error or EndOfStream()
        return item

    def empty(self) -> bool:
        return self._queue.empty()

    def close(self, stop: threading.Event, error: BaseException | None = None) -> None:
        self._error = error
        self.put(_END, stop)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Reconnect delays: initial, initial*factor, ... capped at `maximum` (seconds).

    `give_up_after`: seconds a live source may stay lost before the run ends with an error
    naming it; None keeps trying for as long as the run lasts.
    """

    initial: float = 0.5
    maximum: float = 8.0
    factor: float = 2.0
    give_up_after: float | None = None

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)


@dataclasses.dataclass
class CaptureStats:
    captured: int = 0          # valid frames read from the source
    corrupt: int = 0           # skipped: None, empty or not (H, W, 3) uint8
    reconnects: int = 0
    read_seconds: float = 0.0  # time spent in source.read()

    @property
    def read_ms(self) -> float:
        return 1000.0 * self.read_seconds / max(self.captured + self.corrupt, 1)


class _Stopped(Exception):
    pass


class CaptureThread:
    """Reads `source` on a daemon thread; the consumer calls `get(timeout)`.

    The source must already be open (so opening errors reach the caller directly); the thread
    closes it when it ends. `get` raises `EndOfStream` after the last frame, or the UserError
    that ended the source (naming it) if it failed mid-stream.
    """

    def __init__(
        self,
        source: VideoSource,
        *,
        latest: bool,
        queue_size: int = 4,
        loop: int = 0,
        stride: int = 1,
        rate: float | None = None,
        backoff: Backoff = Backoff(),
        max_corrupt_in_a_row: int = 100,
        log: Log = log_to_stderr,
        nice: int = 0,
    ) -> None:
        """`nice`: how much lower than the caller's the reading thread's priority is (runtime/thread_priority.py)."""
        if stride < 1:
            raise UserError(f"--vid-stride must be 1 or more, got {stride}")
        self.source = source
        self.channel: LatestFrameSlot | FrameQueue = LatestFrameSlot() if latest else FrameQueue(queue_size)
        self.stats = CaptureStats()
        self._loop, self._stride, self._rate = loop, stride, rate
        self._backoff, self._max_corrupt, self._log = backoff, max_corrupt_in_a_row, log
        self.nice = nice
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture {source.name}", daemon=True)

    @property
    def dropped(self) -> int:
        return self.channel.dropped

    def get(self, timeout: float) -> Frame | None:
        return self.channel.get(timeout)

    def __enter__(self) -> CaptureThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                # A read blocked inside the driver or FFmpeg; the daemon thread dies with the process.
                self._log(f"capture of {self.source.name} did not stop within {timeout:.0f} s; leaving it")

    # --- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        error: BaseException | None = None
        lower_current_thread(self.nice)
        try:
            self._deliver_frames()
        except _Stopped:
            pass
        except UserError as exc:
            error = exc
        except Exception as exc:  # any failure of a source ends the run, naming the source
            error = UserError(f"input {self.source.name} failed mid-stream: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
        finally:
            try:
                self.source.close()
            finally:
                self.channel.close(self._stop, error)

    def _deliver_frames(self) -> None:
        plays, seq, corrupt_in_a_row, seq_at_play_start = 1, 0, 0, 0
        started = time.perf_counter()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            ok, image = self.source.read()
            self.stats.read_seconds += time.perf_counter() - t0
            if not ok:
                if self.source.live:
                    self._reconnect()
                    continue
                if (self._loop >= 0 and plays > self._loop) or seq == seq_at_play_start:
                    return     # the end, or a file with no frames that would loop forever
                plays, seq_at_play_start = plays + 1, seq
                self.source.close()
                self.source.open()
                continue
            if not _is_valid_frame(image):
                self.stats.corrupt += 1
                corrupt_in_a_row += 1
                if corrupt_in_a_row >= self._max_corrupt:
                    if self.source.live:
                        self._reconnect()
                        corrupt_in_a_row = 0
                        continue
                    raise UserError(f"input {self.source.name} gave {corrupt_in_a_row} corrupt frames in a row; the file is damaged, re-encode it")
                continue
            corrupt_in_a_row = 0
            if self._rate and not self.source.live:
                # Play a file at --input-rate, as a camera would deliver it.
                due = started + seq / self._rate
                self._stop.wait(max(0.0, due - time.perf_counter()))
            self.stats.captured += 1
            name = getattr(self.source, "frame_name", lambda: None)() or ""
            if not self.channel.put(Frame(image, seq, time.perf_counter(), name), self._stop):
                raise _Stopped
            seq += 1
            for _ in range(self._stride - 1):
                if not self.source.skip():
                    break

    def _reconnect(self) -> None:
        """Close and reopen a lost live source until it comes back, the run stops, or `give_up_after` passes."""
        self.source.close()
        lost_at, limit = time.monotonic(), self._backoff.give_up_after
        for delay in self._backoff.delays():
            if limit is not None and time.monotonic() + delay - lost_at > limit:
                raise UserError(f"input {self.source.name} was lost and did not come back within {limit:g} s; "
                                "check the camera and the network, then run again")
            self._log(f"input {self.source.name} lost; reconnecting in {delay:g} s")
            if self._stop.wait(delay):
                raise _Stopped
            try:
                self.source.open()
            except UserError as exc:
                self._log(f"reconnect failed: {exc}")
                continue
            self.stats.reconnects += 1
            self._log(f"input {self.source.name} reconnected")
            return


def _is_valid_frame(image: object) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.shape[0] > 0
        and image.shape[1] > 0
    )
