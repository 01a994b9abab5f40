"""Endurance, quick version: a long synthetic live stream into a sink slower than the source.

Asserts logic, never speed: in --latest mode nothing queues up (every captured frame is shown,
counted as dropped, or one of the few in flight), memory stays flat, and every thread has ended
when the run returns, also when it stops mid-stream. The long version is
benchmarks/runtime_endurance.py.
"""

from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
from conftest import FakeBackend, FakeSource

from uda_adapt.runtime.capture import Backoff, CaptureThread
from uda_adapt.runtime.pipeline import run_pipeline
from uda_adapt.runtime.preprocess import Preprocessor
from uda_adapt.runtime.render import Renderer, RenderOptions
from uda_adapt.runtime.sinks import NullSink

FRAME = np.full((16, 32, 3), 80, np.uint8)
IN_FLIGHT = 3      # the latest-frame slot, the frame being inferred, the one-slot result queue


class CountingSource(FakeSource):
    reads = 0

    def read(self):
        self.reads += 1
        return super().read()


class SlowSink(NullSink):
    """Slower than the source by construction: each write lasts until the source has read `ahead` more frames."""

    def __init__(self, source, ahead=3, interrupt_at=None):
        self.source, self.ahead, self.interrupt_at = source, ahead, interrupt_at

    def write(self, image):
        if self.frames == self.interrupt_at:
            raise KeyboardInterrupt
        until, deadline = self.source.reads + self.ahead, time.monotonic() + 10.0
        while self.source.reads < until and time.monotonic() < deadline and self.source.reads < self.source.total:
            time.sleep(0.0005)
        return super().write(image)


def _run(frames=600, max_frames=None, interrupt_at=None, on_frame=None):
    # fresh=True: a new array per frame, as from a decoder; one shared array would hide kept frames.
    source = CountingSource([FRAME] * frames, live=True, interval=0.0002, fresh=True)
    source.total = frames
    backend = FakeBackend(size=(16, 32))
    capture = CaptureThread(source, latest=True, backoff=Backoff(0.01, 0.01), log=lambda m: None)
    renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(legend=False, fps=False))
    sink = SlowSink(source, interrupt_at=interrupt_at)
    report = run_pipeline(capture, backend, Preprocessor(backend.manifest.input, (16, 32)), renderer, sink,
                          queue_size=1, max_frames=max_frames, on_frame=on_frame, log=lambda m: None)
    return report, capture


def _pipeline_threads():
    return [t for t in threading.enumerate() if t.name == "infer" or t.name.startswith("capture ")]


def test_slow_sink_in_latest_mode_drops_counts_and_keeps_memory_flat():
    marks = {}

    def on_frame(index, image):
        if index in (20, 120):
            marks[index] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        report, capture = _run(frames=600, max_frames=121, on_frame=on_frame)
    finally:
        tracemalloc.stop()
    assert report.frames == 121
    assert report.dropped >= 2 * 100              # at least `ahead - 1` frames dropped per write
    assert report.captured - report.dropped - report.frames <= IN_FLIGHT
    assert marks[120] - marks[20] < 256 * 1024, f"grew {marks[120] - marks[20]} bytes over 100 frames"
    assert not _pipeline_threads()


def test_stop_mid_stream_and_ctrl_c_leave_no_thread_behind():
    report, _ = _run(frames=400, max_frames=10)
    assert report.frames == 10 and not _pipeline_threads()
    report, _ = _run(frames=400, interrupt_at=15)
    assert report.interrupted and report.frames == 15 and not _pipeline_threads()
