"""Live output keeps real time when frames are dropped; RTSP input finds H.265 on its own."""

import numpy as np
from conftest import FakeBackend, FakeSource, street_frame

from uda_adapt.runtime.capture import Backoff, CaptureThread
from uda_adapt.runtime.pipeline import run_pipeline
from uda_adapt.runtime.preprocess import Preprocessor
from uda_adapt.runtime.render import Renderer, RenderOptions
from uda_adapt.runtime.frame_pacer import FramePacer
from uda_adapt.runtime.uri import CaptureOptions, parse_input


def test_pacer_fills_gaps_and_skips_taken_slots():
    pacer = FramePacer(10.0)
    assert [pacer.repeats(t) for t in (100.0, 100.1, 100.5, 100.52, 100.6)] == [1, 1, 4, 0, 1]


class CountingSink:
    name = "counting://"

    def __init__(self):
        self.writes = 0

    def write(self, image):
        self.writes += 1
        return True


def _run(pacer):
    source = FakeSource([street_frame(i % 10) for i in range(2000)], live=True, interval=0.01)   # ~100 fps camera
    backend = FakeBackend(delay=0.04)                                                          # ~25 fps network
    capture = CaptureThread(source, latest=True, backoff=Backoff(0.01, 0.02), log=lambda m: None)
    renderer = Renderer(backend.manifest.classes, backend.manifest.palette, RenderOptions(legend=False, fps=False))
    sink = CountingSink()
    report = run_pipeline(capture, backend, Preprocessor(backend.manifest.input, backend.input_size), renderer, sink,
                          max_frames=10, queue_size=1, log=lambda m: None, pacer=pacer)
    return report, sink


def test_dropped_frames_leave_the_recording_in_real_time():
    report, sink = _run(None)
    assert report.frames == 10 and sink.writes == 10 and report.dropped > 0   # one write each: plays ~4x too fast
    report, sink = _run(FramePacer(100.0))
    # Processed frames were captured >= 40 ms apart, so at 100 fps each covers about 4 slots.
    assert report.frames == 10 and sink.writes >= 3 * report.frames


def test_rtsp_source_opens_an_h265_stream_without_being_told(monkeypatch):
    import uda_adapt.runtime.sources as sources

    tried = []

    class FakeCapture:
        def __init__(self, target, api, params):
            tried.append(target)
            self.ok = "h265" in str(target)

        def isOpened(self):  # noqa: N802  (OpenCV's name)
            return self.ok

        def release(self):
            pass

        def get(self, prop):
            return 25.0

    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    source = sources.OpenCVSource(parse_input("rtsp://cam.local/stream"), CaptureOptions(), gstreamer=True, jetson=True,
                                   probe=lambda url: None)
    source.open()
    assert len(tried) == 2 and "rtph264depay" in tried[0] and "rtph265depay ! h265parse ! nvv4l2decoder" in tried[1]
    assert source.fps == 25.0
    np.testing.assert_equal(source.live, True)


def test_a_gstreamer_open_that_hangs_is_given_up_and_its_late_success_used(monkeypatch):
    # OpenCV 4.6 can wait for ever for an RTSP pipeline to start; the source gives up after a
    # deadline (the capture thread then reconnects with back-off). No second pipeline starts while
    # the first is still opening, and when it opens late, the next open uses it.
    import threading

    import pytest

    import uda_adapt.runtime.sources as sources
    from uda_adapt.common.errors import UserError

    release = threading.Event()
    made, released = [], []

    class HangingCapture:
        def __init__(self, target, api, params):
            made.append(self)
            release.wait(10)

        def isOpened(self):  # noqa: N802
            return True

        def get(self, prop):
            return 25.0

        def release(self):
            released.append(self)

    monkeypatch.setattr(sources.cv2, "VideoCapture", HangingCapture)
    monkeypatch.setattr(sources, "GSTREAMER_OPEN_TIMEOUT_S", 0.2)
    source = sources.OpenCVSource(parse_input("rtsp://cam.local/stream"), CaptureOptions(codec="h264"), gstreamer=True, jetson=False,
                                  probe=lambda url: None)
    with pytest.raises(UserError, match="no stream within 0.2 s"):
        source.open()
    assert len(made) == 1
    with pytest.raises(UserError, match="previous attempt is still waiting"):
        source.open()
    assert len(made) == 1                     # no second pipeline while the first still starts
    release.set()
    for _ in range(100):
        if not source._opening or source._opening[0].done():
            break
        threading.Event().wait(0.02)
    source.open()
    assert len(made) == 1 and released == [] and source.fps == 25.0     # the late capture, not a new one
    source.close()
    assert released == made
