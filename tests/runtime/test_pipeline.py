import threading
import time
import tracemalloc

import numpy as np
import pytest
from conftest import CLIP_FRAMES, CLIP_SIZE, FakeBackend, FakeSource, read_all_frames, street_frame

from uda_adapt.adapt.classes import CITYSCAPES_PALETTE
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.capture import Backoff, CaptureThread
from uda_adapt.runtime.pipeline import run_pipeline
from uda_adapt.runtime.preprocess import Preprocessor
from uda_adapt.runtime.render import Renderer, RenderOptions
from uda_adapt.runtime.sinks import NullSink, VideoFileSink
from uda_adapt.runtime.stream import RunConfig, run_stream
from uda_adapt.runtime.thread_priority import current_thread_nice

QUIET = dict(log=lambda message: None)


def pipeline(source, backend, sink, *, latest=False, **kwargs):
    capture = CaptureThread(source, latest=latest, backoff=Backoff(0.01, 0.02), log=lambda m: None)
    renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(legend=False, fps=False))
    return run_pipeline(capture, backend, Preprocessor(backend.manifest.input, backend.input_size), renderer, sink, **QUIET, **kwargs)


def test_end_to_end_on_a_video_file_keeps_every_frame_and_draws_the_overlay(small_onnx, clip_mp4, tmp_path):
    out = tmp_path / "overlay.mp4"
    still = tmp_path / "still.png"
    report = run_stream(RunConfig(model=small_onnx, input=clip_mp4, output=str(out), save_frame=(3, str(still))), **QUIET)
    assert report.frames == report.captured == CLIP_FRAMES and report.dropped == 0
    rendered, original = read_all_frames(out), read_all_frames(clip_mp4)
    assert len(rendered) == CLIP_FRAMES
    assert rendered[0].shape == (*CLIP_SIZE, 3)
    # The overlay moves every pixel towards a palette colour: frames differ clearly from the input.
    diff = np.abs(rendered[5].astype(int) - original[5].astype(int)).mean()
    assert diff > 10
    assert still.is_file()
    assert report.latency_ms["p50"] > 0 and set(report.stages_ms) == {"capture", "preprocess", "infer", "render", "sink"}
    assert "CPUExecutionProvider" in report.backend


def test_overlay_colour_is_the_palette_blend(tmp_path):
    frames = [street_frame(i) for i in range(4)]
    out = tmp_path / "o.avi"
    backend = FakeBackend(label=13)   # car
    with VideoFileSink(out, fps=10) as sink:
        report = pipeline(FakeSource(frames), backend, sink)
    assert report.frames == 4
    got = read_all_frames(out)[0].astype(float)
    expected = 0.5 * frames[0] + 0.5 * np.array(CITYSCAPES_PALETTE[13][::-1])
    assert np.abs(got - expected).mean() < 6     # MJPG is lossy


class CountingSource(FakeSource):
    """A FakeSource that counts its reads, so a test can wait for the source rather than for the clock."""

    reads = 0

    def read(self):
        self.reads += 1
        return super().read()


class SourceBoundBackend(FakeBackend):
    """Slower than the source by construction: each inference lasts until the source has read `ahead` more frames."""

    def __init__(self, source, ahead):
        super().__init__()
        self.source, self.ahead = source, ahead

    def infer(self, batch):
        until, deadline = self.source.reads + self.ahead, time.monotonic() + 10.0
        while self.source.reads < until and time.monotonic() < deadline:
            time.sleep(0.001)
        return super().infer(batch)


def test_latest_mode_drops_frames_under_a_slow_stage_instead_of_queueing():
    source = CountingSource([street_frame(i % 10) for i in range(400)], live=True, interval=0.0005)
    report = pipeline(source, SourceBoundBackend(source, ahead=5), NullSink(), latest=True, queue_size=1, max_frames=8)
    assert report.frames == 8
    # While the network holds a frame, at least 5 arrive and only the newest is kept.
    assert report.dropped >= 4 * 7
    # No backlog: every captured frame was shown, dropped, or is one of the few in flight
    # (the slot, the inference, the result queue): latency stays one inference long.
    assert report.captured - report.dropped - report.frames <= 3


def test_buffered_mode_processes_every_frame_behind_a_slow_stage():
    frames = [street_frame(i) for i in range(12)]
    report = pipeline(FakeSource(frames, live=False), FakeBackend(delay=0.005), NullSink())
    assert report.frames == 12 and report.dropped == 0


def test_a_source_failing_mid_stream_is_a_user_error_and_the_video_is_kept(tmp_path):
    frames = [street_frame(i) for i in range(5)]
    out = tmp_path / "partial.mp4"
    with pytest.raises(UserError, match="fake:// failed mid-stream"):
        with VideoFileSink(out, fps=10) as sink:
            pipeline(FakeSource([*frames, OSError("device gone")]), FakeBackend(), sink)
    assert len(read_all_frames(out)) == 5


def test_corrupt_frames_do_not_reach_the_network():
    frames = [street_frame(0), None, street_frame(1), np.zeros((3, 3), np.uint8), street_frame(2)]
    backend = FakeBackend()
    report = pipeline(FakeSource(frames), backend, NullSink())
    assert report.frames == 3 and report.corrupt == 2 and backend.calls == 3


def test_a_live_source_that_drops_comes_back():
    items = [*[street_frame(i) for i in range(3)], "lost", *[street_frame(i) for i in range(3)]]
    source = FakeSource(items, live=True)
    source.open()
    report = pipeline(source, FakeBackend(), NullSink(), max_frames=6)
    assert report.frames == 6 and report.reconnects >= 1


def test_a_failing_backend_stops_the_run_with_its_error():
    class Broken(FakeBackend):
        def infer(self, batch):
            raise UserError("model exploded")

    with pytest.raises(UserError, match="model exploded"):
        pipeline(FakeSource([street_frame(i) for i in range(50)]), Broken(), NullSink())


def test_ctrl_c_in_the_sink_stops_cleanly_and_reports_interrupted():
    class InterruptingSink(NullSink):
        def write(self, image):
            if self.frames == 3:
                raise KeyboardInterrupt
            return super().write(image)

    report = pipeline(FakeSource([street_frame(i) for i in range(50)]), FakeBackend(), InterruptingSink())
    assert report.interrupted and report.frames == 3


def test_inference_runs_off_the_callers_thread():
    backend = FakeBackend()
    pipeline(FakeSource([street_frame(i) for i in range(3)]), backend, NullSink())
    assert backend.threads == {"infer"}


class FrameValueBackend(FakeBackend):
    """Slow, and its mask is the mean of the batch it was given: a batch overwritten mid-inference shows."""

    def infer(self, batch):
        self.threads.add(threading.current_thread().name)
        value = float(batch.mean())
        time.sleep(0.01)
        assert float(batch.mean()) == value, "the batch changed while the network ran on it"
        return np.full((batch.shape[0], *batch.shape[2:]), round(value * 100), np.int32)


def _flat_frames(n):
    return [np.full((*CLIP_SIZE, 3), 10 * i, np.uint8) for i in range(n)]


def test_prefetch_prepares_the_next_frame_off_the_inference_thread_and_keeps_every_batch_intact():
    """A file's frames are preprocessed ahead, on their own thread: the network never waits for its input."""
    threads = []

    class RecordingPreprocessor(Preprocessor):
        def __call__(self, frame):
            threads.append(threading.current_thread().name)
            return super().__call__(frame)      # the same output array every call: prefetch must copy it

    frames = _flat_frames(12)
    backend = FrameValueBackend()
    masks = []
    capture = CaptureThread(FakeSource(frames), latest=False, backoff=Backoff(0.01, 0.02), log=lambda m: None)
    renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(legend=False, fps=False))
    report = run_pipeline(capture, backend, RecordingPreprocessor(backend.manifest.input, backend.input_size), renderer,
                          NullSink(), prefetch=True, on_mask=lambda frame, mask: masks.append(int(mask[0, 0])), **QUIET)
    assert report.frames == 12 and set(threads) == {"prepare"} and backend.threads == {"infer"}
    expected = [FrameValueBackend().infer(Preprocessor(backend.manifest.input, backend.input_size)(f))[0, 0, 0]
                for f in frames]
    assert len(set(expected)) == 12 and masks == expected        # each mask from its own frame, in order
    assert report.stages_ms["preprocess"] > 0


def test_without_prefetch_preprocessing_stays_on_the_inference_thread():
    threads = []

    class RecordingPreprocessor(Preprocessor):
        def __call__(self, frame):
            threads.append(threading.current_thread().name)
            return super().__call__(frame)

    backend = FakeBackend()
    capture = CaptureThread(FakeSource(_flat_frames(3)), latest=False, backoff=Backoff(0.01, 0.02), log=lambda m: None)
    renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(legend=False, fps=False))
    run_pipeline(capture, backend, RecordingPreprocessor(backend.manifest.input, backend.input_size), renderer,
                 NullSink(), **QUIET)
    assert set(threads) == {"infer"}


def test_a_failing_source_with_prefetch_stops_the_run_with_its_error():
    frames = [street_frame(i) for i in range(5)]
    with pytest.raises(UserError, match="fake:// failed mid-stream"):
        pipeline(FakeSource([*frames, OSError("device gone")]), FakeBackend(), NullSink(), prefetch=True)


def test_memory_stays_flat_over_thousands_of_frames():
    small = np.full((16, 32, 3), 60, np.uint8)
    frames = [small] * 3000
    backend = FakeBackend(size=(16, 32))
    marks = {}

    def on_frame(index, image):
        if index in (500, 2999):
            marks[index] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        # fresh=True: a new array per frame, as from a decoder; one shared array would hide kept frames.
        capture = CaptureThread(FakeSource(frames, fresh=True), latest=False, log=lambda m: None)
        renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions())
        report = run_pipeline(capture, backend, Preprocessor(backend.manifest.input, (16, 32)), renderer, NullSink(), on_frame=on_frame, **QUIET)
    finally:
        tracemalloc.stop()
    assert report.frames == 3000
    assert marks[2999] - marks[500] < 256 * 1024, f"grew {marks[2999] - marks[500]} bytes over 2500 frames"


def _recorded_run_pipeline_argument(monkeypatch, key):
    """The list that each later run_stream call appends its run_pipeline `key` argument to."""
    import uda_adapt.runtime.stream as stream

    seen, real = [], stream.run_pipeline

    def recording(*args, **kwargs):
        seen.append(kwargs[key])
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "run_pipeline", recording)
    return seen


def test_run_prefetches_only_a_file_that_asks_for_it_and_never_with_watch_or_a_live_source(small_onnx, clip_mp4, monkeypatch):
    seen = _recorded_run_pipeline_argument(monkeypatch, "prefetch")
    base = dict(model=str(small_onnx), input=str(clip_mp4), headless=True, max_frames=2, progress=False)
    run_stream(RunConfig(**base), **QUIET)
    run_stream(RunConfig(**base, prefetch=True), **QUIET)
    run_stream(RunConfig(**base, prefetch=True, watch=True), **QUIET)
    run_stream(RunConfig(**base, prefetch=True, latest=True), **QUIET)
    assert seen == [False, True, False, False]


class NiceRecordingSink(NullSink):
    """Records, for each write, the writing thread and its nice value."""

    def __init__(self, main_thread_only=False):
        super().__init__()
        self.main_thread_only = main_thread_only
        self.writers = []

    def write(self, image):
        self.writers.append((threading.current_thread(), current_thread_nice()))
        return super().write(image)


class NiceRecordingSource(FakeSource):
    def read(self):
        self.reader_nice = current_thread_nice()
        return super().read()


class NiceRecordingBackend(FakeBackend):
    def infer(self, batch):
        self.infer_nice = current_thread_nice()
        return super().infer(batch)


@pytest.mark.skipif(current_thread_nice() is None or current_thread_nice() > 19 - 5, reason="needs per-thread nice values (Linux) with room to lower")
def test_side_nice_lowers_capture_render_and_sink_but_not_inference_or_the_caller():
    base = current_thread_nice()
    source, backend, sink = NiceRecordingSource([street_frame(i) for i in range(6)]), NiceRecordingBackend(), NiceRecordingSink()
    report = pipeline(source, backend, sink, side_nice=5)
    assert report.frames == 6 and len(sink.writers) == 6          # precondition: every frame went through
    assert {nice for _, nice in sink.writers} == {base + 5}
    assert all(thread is not threading.main_thread() for thread, _ in sink.writers)
    assert source.reader_nice == base + 5
    assert backend.infer_nice == base                              # inference keeps the caller's priority
    assert current_thread_nice() == base                           # and so does the caller, after the run


def test_side_nice_keeps_a_window_on_the_main_thread_and_off_by_default():
    for side_nice, main_only in ((5, True), (0, False)):
        sink = NiceRecordingSink(main_thread_only=main_only)
        report = pipeline(FakeSource([street_frame(i) for i in range(4)]), FakeBackend(), sink, side_nice=side_nice)
        assert report.frames == 4
        assert all(thread is threading.main_thread() for thread, _ in sink.writers)


def test_ctrl_c_in_a_lowered_sink_thread_still_reports_interrupted():
    class InterruptingSink(NullSink):
        def write(self, image):
            if self.frames == 3:
                raise KeyboardInterrupt
            return super().write(image)

    report = pipeline(FakeSource([street_frame(i) for i in range(50)]), FakeBackend(), InterruptingSink(), side_nice=3)
    assert report.interrupted and report.frames == 3


def test_side_nice_keeps_frames_in_order_and_errors_reach_the_caller(tmp_path):
    frames = _flat_frames(12)
    backend = FrameValueBackend()
    sink = NiceRecordingSink()
    seen = []
    report = pipeline(FakeSource(frames), backend, sink, side_nice=2, on_mask=lambda frame, mask: seen.append(int(mask[0, 0])))
    assert report.frames == 12 and len(set(seen)) == 12 and seen == sorted(seen)

    class FailingSink(NullSink):
        def write(self, image):
            raise UserError("disk full")

    with pytest.raises(UserError, match="disk full"):
        pipeline(FakeSource(frames), FakeBackend(), FailingSink(), side_nice=2)


def test_run_lowers_side_work_for_files_only(small_onnx, clip_mp4, monkeypatch):
    seen = _recorded_run_pipeline_argument(monkeypatch, "side_nice")
    base = dict(model=str(small_onnx), input=str(clip_mp4), headless=True, max_frames=2, progress=False)
    run_stream(RunConfig(**base), **QUIET)
    run_stream(RunConfig(**base, side_nice=0), **QUIET)
    run_stream(RunConfig(**base, latest=True), **QUIET)
    default = RunConfig(**base).side_nice
    assert seen == [default, 0, 0] and default > 0
