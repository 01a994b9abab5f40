"""Pushing to an RTSP server that stops taking the stream ends the run with one line instead of hanging."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import uda_adapt.runtime.rtsp_push as rtsp_push
from uda_adapt.common.errors import UserError

FRAME = np.zeros((8, 8, 3), np.uint8)


class StallingWriter:
    """Takes `accepts` frames, then blocks in write() as OpenCV does once appsrc is full and nothing drains it."""

    accepts = 3
    opened_after = 0.0

    def __init__(self, *args):
        self.written, self.released = 0, False
        self._never = threading.Event()
        threading.Event().wait(StallingWriter.opened_after)

    def isOpened(self):  # noqa: N802  (OpenCV's name)
        return True

    def write(self, image):
        if self.written >= StallingWriter.accepts:
            self._never.wait(30)
        self.written += 1

    def release(self):
        self.released = True


@pytest.fixture
def stalling(monkeypatch):
    StallingWriter.accepts, StallingWriter.opened_after = 3, 0.0
    monkeypatch.setattr(rtsp_push.cv2, "VideoWriter", StallingWriter)
    return StallingWriter


def test_a_server_that_stops_taking_frames_ends_the_run(stalling):
    pusher = rtsp_push.StreamPusher("appsrc ! fakesink", 30.0, (8, 8), "rtsp://server/in", stall_s=0.3)
    with pytest.raises(UserError, match=r"cannot stream to rtsp://server/in: the server took no frame for 0.3 s .*password"):
        for _ in range(1000):
            pusher.push(FRAME)
    assert pusher.dropped > 0


def test_a_short_input_still_fails_at_close_when_nothing_was_taken(stalling):
    pusher = rtsp_push.StreamPusher("appsrc ! fakesink", 30.0, (8, 8), "rtsp://server/in", stall_s=10)
    for _ in range(6):
        pusher.push(FRAME)                 # fewer than a stall: push itself cannot tell
    with pytest.raises(UserError, match="the server took no frame"):
        pusher.close(timeout=0.3)


def test_a_healthy_stream_closes_and_releases(stalling):
    stalling.accepts = 10_000
    pusher = rtsp_push.StreamPusher("appsrc ! fakesink", 30.0, (8, 8), "rtsp://server/in", stall_s=1)
    for _ in range(20):
        pusher.push(FRAME)
    pusher.close()
    assert pusher._writer.released and pusher._writer.written + pusher.dropped == 20


def test_a_writer_that_never_starts_is_given_up(stalling):
    stalling.opened_after = 2.0
    with pytest.raises(UserError, match="did not take the stream within 0.2 s"):
        rtsp_push.StreamPusher("appsrc ! fakesink", 30.0, (8, 8), "rtsp://server/in", stall_s=0.2)
