"""The frame pipeline: capture -> preprocess + infer -> render + sink, one thread per stage.

    [capture thread] --slot or queue--> [infer thread: preprocess, infer] --queue(2)--> [caller: render, sink]

    over files, render and sink run on a thread of their own at a lower priority (`side_nice`),
    the caller only waiting; a window keeps them on the caller's thread.

    with prefetch (an option for files; off by default, see RunConfig.prefetch):
    [capture] --queue--> [prepare thread: preprocess] --queue(1)--> [infer thread: infer] --queue(2)--> [caller]

Prefetch takes preprocessing off the inference thread, so the network never waits for the
next input. Where inference already uses every core (ONNX Runtime on a 2-core CPU) the extra
thread and its buffer copy cost more than they save, so it is off by default (measured:
runtime/stream.py, RunConfig.prefetch); a machine with cores to spare may turn it on. Live sources (`--latest`) keep
it inline: a frame prepared ahead would be one inference older than the newest one by the time
the network took it.

Queues are bounded, so the slowest stage sets the pace and memory stays flat. ONNX Runtime,
TensorRT and OpenCV release the GIL while they work, so the stages really overlap: the next
frame is captured and the last one rendered while the network runs. The caller's thread
renders and writes (windows must live on the main thread), and gets Ctrl-C: the run then
stops cleanly, the sink is closed by its owner, and the report says `interrupted`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import numpy as np

from uda_adapt.runtime.backends.base import Backend
from uda_adapt.runtime.capture import CaptureThread, EndOfStream, Frame, FrameQueue, Log, log_to_stderr
from uda_adapt.runtime.render import Renderer
from uda_adapt.runtime.frame_pacer import FramePacer
from uda_adapt.runtime.sinks import Sink
from uda_adapt.runtime.thread_priority import lower_current_thread

STAGES = ("capture", "preprocess", "infer", "render", "sink")
LATENCY_WINDOW = 10_000     # latency percentiles cover the most recent frames; memory stays fixed


@dataclasses.dataclass
class PipelineReport:
    frames: int                       # written to the sink
    seconds: float                    # wall time of the run
    fps: float                        # steady-state throughput at the sink
    latency_ms: dict[str, float]      # capture -> sink: p50, p90, p99, mean, max
    stages_ms: dict[str, float]       # mean per frame of each stage
    captured: int = 0
    dropped: int = 0                  # overwritten in --latest mode before inference took them
    corrupt: int = 0                  # skipped frames the source could not decode
    reconnects: int = 0
    source: str = ""
    backend: str = ""
    sink: str = ""
    interrupted: bool = False
    label_free: dict | None = None    # --watch / --collect: the running label-free measure (runtime/watch.py)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class LatencyWindow:
    """The last `size` latencies in a ring buffer (constant memory over any run length)."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self._values = np.zeros(size, np.float64)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._values[self.count % len(self._values)] = seconds
        self.count += 1

    def summary_ms(self) -> dict[str, float]:
        values = self._values[: min(self.count, len(self._values))] * 1000.0
        if values.size == 0:
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(values.mean()), "max": float(values.max())}


class _StageClock:
    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.counts = dict.fromkeys(STAGES, 0)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds
        self.counts[stage] += 1

    def mean_ms(self) -> dict[str, float]:
        return {s: 1000.0 * self.seconds[s] / self.counts[s] if self.counts[s] else 0.0 for s in STAGES}


class _FpsMeter:
    """Smoothed frames per second at the sink, for the on-screen counter."""

    def __init__(self) -> None:
        self._last: float | None = None
        self.fps: float | None = None

    def tick(self, now: float) -> None:
        if self._last is not None and now > self._last:
            rate = 1.0 / (now - self._last)
            self.fps = rate if self.fps is None else 0.9 * self.fps + 0.1 * rate
        self._last = now


FrameHook = Callable[[int, np.ndarray], None]
MaskHook = Callable[[Frame, np.ndarray], None]     # (captured frame, its class-id mask), e.g. runtime.mask_writer


def run_pipeline(
    capture: CaptureThread,
    backend: Backend,
    preprocess: Callable[[np.ndarray], np.ndarray],
    renderer: Renderer,
    sink: Sink,
    *,
    max_frames: int | None = None,
    queue_size: int = 2,
    on_frame: FrameHook | None = None,
    show_fps: bool = True,
    log: Log = log_to_stderr,
    join_timeout: float = 5.0,
    pacer: FramePacer | None = None,
    on_mask: MaskHook | None = None,
    prefetch: bool = False,
    side_nice: int = 0,
) -> PipelineReport:
    """Run until the source ends, the sink stops, `max_frames` are written or Ctrl-C.

    `prefetch`: preprocess on a thread of its own, ahead of inference (see the module doc);
    `preprocess` must then not expect `backend.infer` on the same thread right after it.

    With a `pacer` (live sources into a video file or RTSP) each frame is written as many
    times as its capture time says, so the output keeps real time when frames are dropped.

    `side_nice` > 0: capture, rendering and writing run that much below the caller's priority, so
    that they take the cores only where inference leaves them idle (runtime/thread_priority.py);
    the capture thread is lowered through `capture.nice`, rendering and writing move to a thread
    of their own (not for a window).

    `capture` is started and stopped here; `sink` is only written (its owner closes it).
    A failure in any stage stops the others and is re-raised here after they have stopped.
    """
    stop = threading.Event()
    results = FrameQueue(queue_size)
    clock = _StageClock()
    errors: list[BaseException] = []

    prepared = FrameQueue(1) if prefetch else None

    def prepare_stage() -> None:
        # Three buffers: one being filled, one waiting in `prepared`, one in inference. The
        # preprocessor reuses its output array, so each batch is copied into the next buffer.
        ring: list[np.ndarray] = []
        try:
            while not stop.is_set():
                try:
                    frame = capture.get(timeout=0.1)
                except EndOfStream:
                    return
                if frame is None:
                    continue
                t0 = time.perf_counter()
                batch = preprocess(frame.image)
                if not ring:
                    ring = [np.empty_like(batch) for _ in range(3)]
                slot = ring.pop(0)          # the least recently filled: inference is done with it
                np.copyto(slot, batch)
                ring.append(slot)
                clock.add("preprocess", time.perf_counter() - t0)
                if not prepared.put((frame, slot), stop):
                    return
        except Exception as exc:  # handed to the caller's thread, which re-raises it
            errors.append(exc)
        finally:
            prepared.close(stop)

    def next_input() -> tuple[Frame, np.ndarray] | None:
        """(frame, batch), or None when nothing is ready yet; EndOfStream at the end."""
        if prepared is not None:
            return prepared.get(timeout=0.1)
        frame = capture.get(timeout=0.1)
        if frame is None:
            return None            # nothing new yet (a live source between frames or reconnecting)
        t0 = time.perf_counter()
        batch = preprocess(frame.image)
        clock.add("preprocess", time.perf_counter() - t0)
        return frame, batch

    def infer_stage() -> None:
        try:
            while not stop.is_set():
                try:
                    item = next_input()
                except EndOfStream:
                    return
                if item is None:
                    continue
                frame, batch = item
                t1 = time.perf_counter()
                mask = backend.infer(batch)[0]
                clock.add("infer", time.perf_counter() - t1)
                if not results.put((frame, mask), stop):
                    return
        except Exception as exc:  # handed to the caller's thread, which re-raises it
            errors.append(exc)
        finally:
            results.close(stop)

    latency, fps_meter = LatencyWindow(), _FpsMeter()
    progress = {"frames": 0, "first_done": 0.0, "last_done": 0.0, "interrupted": False}

    def deliver() -> None:
        """Render and write each result in order until the end, the sink stops, `max_frames` or `stop`."""
        while not stop.is_set():
            try:
                item = results.get(timeout=0.1)
            except EndOfStream:
                return
            if item is None:
                if not infer_thread.is_alive() and results.empty():
                    return      # the producer is gone without its end marker: never wait on it
                continue
            frame, mask = item
            t0 = time.perf_counter()
            image = renderer.render(frame.image, mask, fps_meter.fps if show_fps else None)
            t1 = time.perf_counter()
            keep_going = True
            for _ in range(pacer.repeats(frame.timestamp) if pacer is not None else 1):
                keep_going = sink.write(image) and keep_going
            done = time.perf_counter()
            clock.add("render", t1 - t0)
            clock.add("sink", done - t1)
            latency.add(done - frame.timestamp)
            fps_meter.tick(done)
            progress["first_done"] = progress["first_done"] or done
            progress["last_done"] = done
            if on_frame is not None:
                on_frame(progress["frames"], image)
            if on_mask is not None:
                on_mask(frame, mask)
            progress["frames"] += 1
            if not keep_going or (max_frames is not None and progress["frames"] >= max_frames):
                return

    def deliver_stage() -> None:
        lower_current_thread(side_nice)
        try:
            deliver()
        except KeyboardInterrupt:   # raised by a hook or sink on this thread: the caller's Ctrl-C path
            progress["interrupted"] = True
        except Exception as exc:  # handed to the caller's thread, which re-raises it
            errors.append(exc)
        finally:
            stop.set()

    # Rendering and writing leave the caller's thread for one of lower priority, unless the sink
    # is a window (GUI calls belong to the main thread) or nothing would be lowered.
    deliver_thread = None
    if side_nice > 0 and not getattr(sink, "main_thread_only", False):
        deliver_thread = threading.Thread(target=deliver_stage, name="render+sink", daemon=True)
    interrupted = False
    capture.nice = max(capture.nice, side_nice)
    started = time.perf_counter()
    infer_thread = threading.Thread(target=infer_stage, name="infer", daemon=True)
    prepare_thread = threading.Thread(target=prepare_stage, name="prepare", daemon=True) if prefetch else None
    with capture:
        if prepare_thread is not None:
            prepare_thread.start()
        infer_thread.start()
        try:
            if deliver_thread is None:
                deliver()
            else:
                deliver_thread.start()
                while deliver_thread.is_alive():
                    deliver_thread.join(0.1)     # short waits: Ctrl-C reaches this thread between them
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted; finishing the output")
        finally:
            stop.set()
            for thread in (deliver_thread, infer_thread, prepare_thread):
                if thread is None or thread.ident is None:
                    continue
                thread.join(join_timeout)
                if thread.is_alive():
                    log(f"{thread.name} did not stop within {join_timeout:.0f} s; leaving it")
    if errors:
        raise errors[0]

    frames, first_done, last_done = progress["frames"], progress["first_done"], progress["last_done"]
    interrupted = interrupted or progress["interrupted"]
    stages = clock.mean_ms()
    stages["capture"] = capture.stats.read_ms
    steady = (frames - 1) / (last_done - first_done) if frames > 1 and last_done > first_done else 0.0
    return PipelineReport(
        frames=frames,
        seconds=time.perf_counter() - started,
        fps=steady,
        latency_ms=latency.summary_ms(),
        stages_ms=stages,
        captured=capture.stats.captured,
        dropped=capture.dropped,
        corrupt=capture.stats.corrupt,
        reconnects=capture.stats.reconnects,
        source=capture.source.name,
        backend=backend.describe(),
        sink=sink.name,
        interrupted=interrupted,
    )
