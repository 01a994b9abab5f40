"""Reopening an RTSP camera: ask the server before GStreamer, and keep the codec that worked.

OpenCV 4.6 leaves a GStreamer pipeline that failed to start half torn down (rtspsrc threads still
running as its locks are freed); every reconnect attempt against a camera that is down would
add one. These tests use fake captures; the real reconnect runs in test_gstreamer.py.
"""

from __future__ import annotations

import socket
import threading

import pytest

import uda_adapt.runtime.sources as sources
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.rtsp_probe import probe_rtsp
from uda_adapt.runtime.uri import CaptureOptions, parse_input


def _server(reply: bytes | None) -> tuple[socket.socket, int, list[bytes]]:
    """A one-connection TCP server on 127.0.0.1 that answers the first request with `reply`."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received: list[bytes] = []

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            received.append(connection.recv(1024))
            if reply is not None:
                connection.sendall(reply)
            else:
                threading.Event().wait(2)         # hold the connection open, silent

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1], received


def test_a_server_that_answers_rtsp_is_up_even_when_it_asks_for_a_password():
    listener, port, received = _server(b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n\r\n")
    with listener:
        assert probe_rtsp(f"rtsp://admin:secret@127.0.0.1:{port}/cam") is None
    assert received[0].startswith(f"OPTIONS rtsp://127.0.0.1:{port}/cam RTSP/1.0\r\n".encode())
    assert b"secret" not in received[0]


def test_a_closed_port_or_another_protocol_is_down():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()                              # nothing listens there now
    assert "cannot connect to 127.0.0.1:" in probe_rtsp(f"rtsp://127.0.0.1:{port}/cam")
    listener, port, _ = _server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with listener:
        assert "is not an RTSP server" in probe_rtsp(f"rtsp://127.0.0.1:{port}/cam")
    listener, port, _ = _server(None)             # accepts, never answers
    with listener:
        assert "did not answer within 0.3 s" in probe_rtsp(f"rtsp://127.0.0.1:{port}/cam", timeout=0.3)


class FakeCapture:
    made: list[str] = []
    works: str = "h265"

    def __init__(self, target, api, params):
        FakeCapture.made.append(target)
        self.ok = f"rtp{FakeCapture.works}depay" in target

    def isOpened(self):  # noqa: N802  (OpenCV's name)
        return self.ok

    def get(self, prop):
        return 25.0

    def release(self):
        pass


@pytest.fixture
def fake_capture(monkeypatch):
    FakeCapture.made, FakeCapture.works = [], "h265"
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    return FakeCapture


def test_a_camera_that_is_down_costs_no_gstreamer_pipeline(fake_capture):
    source = sources.OpenCVSource(parse_input("rtsp://127.0.0.1:9/cam"), CaptureOptions(), gstreamer=True, jetson=False,
                                  probe=lambda url: "cannot connect to 127.0.0.1:9 (Connection refused)")
    with pytest.raises(UserError, match=r"cannot open input rtsp://127.0.0.1:9/cam: cannot connect to 127.0.0.1:9 \(Connection refused\)"):
        source.open()
    assert fake_capture.made == []


def test_a_reconnect_tries_only_the_codec_that_worked(fake_capture):
    up = [True]
    source = sources.OpenCVSource(parse_input("rtsp://127.0.0.1:8554/cam"), CaptureOptions(), gstreamer=True, jetson=False,
                                  probe=lambda url: None if up[0] else "down")
    source.open()
    assert [("rtph264depay" in t, "rtph265depay" in t) for t in fake_capture.made] == [(True, False), (False, True)]
    fake_capture.made.clear()
    source.close()
    source.open()                                  # the camera came back: H.265 only, no H.264 attempt first
    assert len(fake_capture.made) == 1 and "rtph265depay" in fake_capture.made[0]
