import threading
import time

import numpy as np
import pytest
from conftest import FakeSource

from uda_adapt.common.errors import UserError
from uda_adapt.runtime.capture import Backoff, CaptureThread, EndOfStream, Frame, LatestFrameSlot

FAST = Backoff(initial=0.01, maximum=0.04)
# Every test here waits on a thread: a hang fails it (pytest-timeout) instead of stalling the run.
pytestmark = pytest.mark.timeout(30)


def wait_until(condition, timeout=10.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def frames(n, h=8, w=16):
    return [np.full((h, w, 3), i, np.uint8) for i in range(n)]


def drain(capture, timeout=5.0):
    """All frames until the end of the stream (EndOfStream) or the error that ended it."""
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = capture.get(timeout=0.05)
        except EndOfStream:
            return got
        if frame is not None:
            got.append(frame)
    raise AssertionError("stream did not end")


def test_file_source_delivers_every_frame_in_order_then_ends():
    source = FakeSource(frames(10))
    with CaptureThread(source, latest=False, queue_size=2, log=lambda m: None) as capture:
        got = drain(capture)
    assert [f.seq for f in got] == list(range(10))
    assert [int(f.image[0, 0, 0]) for f in got] == list(range(10))
    assert source.closed >= 1


def test_input_loop_replays_and_stride_skips():
    source = FakeSource(frames(6))
    with CaptureThread(source, latest=False, loop=1, stride=2, log=lambda m: None) as capture:
        got = drain(capture)
    assert [int(f.image[0, 0, 0]) for f in got] == [0, 2, 4, 0, 2, 4]
    assert [f.seq for f in got] == list(range(6))


def test_source_that_raises_mid_stream_ends_with_a_user_error_naming_it():
    source = FakeSource([*frames(3), RuntimeError("usb disconnected")], name="v4l2:///dev/video9")
    with CaptureThread(source, latest=False, log=lambda m: None) as capture:
        got, deadline = [], time.monotonic() + 10
        with pytest.raises(UserError, match=r"v4l2:///dev/video9 failed mid-stream: RuntimeError: usb disconnected"):
            while time.monotonic() < deadline:
                frame = capture.get(timeout=1.0)
                if frame is not None:
                    got.append(frame)
    assert len(got) == 3


def test_corrupt_frames_are_skipped_and_counted():
    good = frames(4)
    source = FakeSource([good[0], None, np.zeros((0, 0, 3), np.uint8), np.zeros((8, 16), np.uint8), good[1], "x", good[2]])
    source._frames[5] = np.zeros((8, 16, 3), np.float32)
    with CaptureThread(source, latest=False, log=lambda m: None) as capture:
        got = drain(capture)
    assert [int(f.image[0, 0, 0]) for f in got] == [0, 1, 2]
    assert capture.stats.corrupt == 4
    assert [f.seq for f in got] == [0, 1, 2]


def test_a_file_of_only_corrupt_frames_is_an_error():
    source = FakeSource([None] * 5)
    with CaptureThread(source, latest=False, max_corrupt_in_a_row=5, log=lambda m: None) as capture:
        with pytest.raises(UserError, match="corrupt frames in a row"):
            drain(capture)


def test_latest_slot_drops_unread_frames_and_never_repeats_one():
    slot, stop = LatestFrameSlot(), threading.Event()
    for seq in range(5):
        slot.put(Frame(np.zeros((1, 1, 3), np.uint8), seq, 0.0), stop)
    newest = slot.get(timeout=0.1)
    assert newest.seq == 4 and slot.dropped == 4
    assert slot.get(timeout=0.05) is None          # nothing new: no stale frame handed out again
    slot.close(stop)
    with pytest.raises(EndOfStream):
        slot.get(timeout=0.05)


def test_latest_mode_drops_frames_behind_a_slow_consumer():
    source = FakeSource(frames(200), live=True, interval=0.001)
    seen = []
    with CaptureThread(source, latest=True, backoff=FAST, log=lambda m: None) as capture:
        deadline = time.monotonic() + 10
        while len(seen) < 5:
            assert time.monotonic() < deadline, "no 5 frames within 10 s"
            frame = capture.get(timeout=1.0)
            if frame is not None:
                seen.append(frame)
                # The slow stage: busy until the source has delivered 3 more frames.
                wait_until(lambda: capture.stats.captured >= frame.seq + 4, what="3 more frames")
    seqs = [f.seq for f in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert capture.dropped > 0
    assert max(b - a for a, b in zip(seqs, seqs[1:])) > 1    # newest frame, not the next queued one


def test_live_source_that_drops_reconnects_with_backoff():
    # 3 frames, then the stream is lost; the first reopen fails, the second succeeds.
    items = [*frames(3), "lost", *frames(3)]
    source = FakeSource(items, live=True, fail_opens=1)
    source.open()
    messages = []
    with CaptureThread(source, latest=False, backoff=FAST, log=messages.append) as capture:
        got = []
        while len(got) < 6:
            frame = capture.get(timeout=2.0)
            assert frame is not None, "no frame after reconnecting"
            got.append(frame)
    assert capture.stats.reconnects == 1
    assert source.opens == 3
    assert any("reconnecting in 0.01 s" in m for m in messages) and any("reconnecting in 0.02 s" in m for m in messages)
    assert [f.seq for f in got] == list(range(6))


def test_backoff_doubles_up_to_the_cap():
    delays = Backoff(initial=0.5, maximum=8.0).delays()
    assert [next(delays) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_stop_interrupts_a_reconnecting_source_promptly():
    source = FakeSource(["lost"], live=True, fail_opens=100)
    messages = []
    # A back-off far longer than stop's join timeout: the thread is only gone if stop cut the wait short.
    capture = CaptureThread(source, latest=True, backoff=Backoff(initial=600.0, maximum=600.0), log=messages.append)
    with capture:
        wait_until(lambda: any("reconnecting in 600 s" in m for m in messages), what="the reconnect message")
    assert not capture._thread.is_alive()


def test_bad_stride_is_a_user_error():
    with pytest.raises(UserError, match="vid-stride"):
        CaptureThread(FakeSource(frames(1)), latest=False, stride=0)
