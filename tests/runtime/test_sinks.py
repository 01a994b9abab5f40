import os

import numpy as np
import pytest
from conftest import read_all_frames

from uda_adapt.common.errors import UserError
from uda_adapt.runtime import sinks
from uda_adapt.runtime.sinks import ImageSequenceSink, VideoFileSink, check_output, open_sink
from uda_adapt.runtime.uri import parse_output


def image(value, h=32, w=64):
    return np.full((h, w, 3), value, np.uint8)


def test_video_is_written_under_a_temporary_name_and_renamed_on_close(tmp_path):
    path = tmp_path / "out.mp4"
    with VideoFileSink(path, fps=10) as sink:
        for i in range(5):
            sink.write(image(40 * i))
        assert not path.exists()
        assert len(list(tmp_path.glob(".out.*.tmp.mp4"))) == 1
    assert len(read_all_frames(path)) == 5
    assert not list(tmp_path.glob(".out.*"))


def test_an_interrupted_write_still_finalises_the_video(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoFileSink(path, fps=10) as sink:
            for i in range(3):
                sink.write(image(50 * i))
            raise KeyboardInterrupt
    assert len(read_all_frames(path)) == 3


def test_frames_of_another_size_are_fitted_to_the_first(tmp_path):
    path = tmp_path / "out.mp4"
    with VideoFileSink(path, fps=10) as sink:
        sink.write(image(10))
        sink.write(image(200, 48, 80))
    frames = read_all_frames(path)
    assert [f.shape for f in frames] == [(32, 64, 3), (32, 64, 3)]


def test_no_frames_leaves_no_file(tmp_path):
    with VideoFileSink(tmp_path / "out.mp4", fps=10):
        pass
    assert not list(tmp_path.iterdir())


def test_image_sequence(tmp_path):
    pattern = str(tmp_path / "seq" / "out_%05d.png")
    with ImageSequenceSink(pattern) as sink:
        for i in range(3):
            sink.write(image(i))
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == ["out_00000.png", "out_00001.png", "out_00002.png"]


def test_unwritable_output_directory_is_a_user_error(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:      # root may write anywhere: play an unprivileged user
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UserError, match="not writable"):
        check_output(parse_output(str(locked / "out.mp4")))


def test_output_under_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create output directory"):
        check_output(parse_output(str(blocker / "out.mp4")))


def test_display_on_a_headless_machine_suggests_headless_or_a_file(monkeypatch):
    monkeypatch.setattr(sinks, "display_problem", lambda: "no display is attached (DISPLAY is not set)")
    with pytest.raises(UserError, match="--headless, or give an output file"):
        open_sink(parse_output("display://0"), 30)


def test_headless_opencv_is_detected(monkeypatch):
    monkeypatch.setattr(sinks.cvbuild, "has_gui", lambda: False)
    monkeypatch.setenv("DISPLAY", ":0")
    assert "no GUI" in sinks.display_problem()


def test_rtsp_output_needs_gstreamer(monkeypatch):
    monkeypatch.setattr(sinks.cvbuild, "has_gstreamer", lambda: False)
    with pytest.raises(UserError, match="GStreamer"):
        open_sink(parse_output("rtsp://127.0.0.1:8554/seg"), 30)


def test_a_gstreamer_less_opencv_is_named_with_the_fix(monkeypatch):
    from uda_adapt.runtime import cvbuild
    from uda_adapt.runtime.sources import OpenCVSource
    from uda_adapt.runtime.uri import CaptureOptions, parse_input

    monkeypatch.setattr(cvbuild, "_build_information", lambda: "  Video I/O:\n    GStreamer:                   NO\n")
    assert not cvbuild.has_gstreamer()
    for problem in (lambda: check_output(parse_output("rtsp://127.0.0.1:8554/seg")),
                    lambda: OpenCVSource(parse_input("csi://0"), CaptureOptions()).capture_args()):
        with pytest.raises(UserError, match=r"needs OpenCV built with GStreamer.*pip uninstall -y opencv-python.*system-site-packages"):
            problem()
    monkeypatch.setattr(cvbuild, "_build_information", lambda: "    GStreamer:                   YES (1.20.3)\n")
    assert cvbuild.has_gstreamer()


class FakeWindows:
    """cv2's window calls as a GUI backend answers them: `visible_open` is WND_PROP_VISIBLE of an open window."""

    def __init__(self, visible_open):
        self.visible_open, self.closed, self.shown = visible_open, False, 0

    def imshow(self, name, image):
        self.shown += 1

    def waitKey(self, delay):  # noqa: N802  (OpenCV's name)
        return -1

    def getWindowProperty(self, name, prop):  # noqa: N802
        if self.closed:
            if self.visible_open == -1:          # GTK: the window is gone, every property is -1
                return -1.0
            return 0.0 if prop == sinks.cv2.WND_PROP_VISIBLE else 1.0   # Qt: closing hides it
        return self.visible_open if prop == sinks.cv2.WND_PROP_VISIBLE else 0.0

    def destroyWindow(self, name):  # noqa: N802
        pass


@pytest.mark.parametrize("backend, visible_open", [("gtk", -1.0), ("qt", 1.0)])
def test_the_window_keeps_running_until_it_is_closed(backend, visible_open, monkeypatch):
    # GTK builds (JetPack's, Ubuntu's) answer WND_PROP_VISIBLE with -1 for an open window.
    windows = FakeWindows(visible_open)
    for name in ("imshow", "waitKey", "getWindowProperty", "destroyWindow"):
        monkeypatch.setattr(sinks.cv2, name, getattr(windows, name))
    monkeypatch.setattr(sinks, "display_problem", lambda: None)
    with sinks.DisplaySink() as sink:
        assert all(sink.write(image(i)) for i in range(10)), f"a {backend} window stopped while open"
        windows.closed = True                     # closed between two frames
        assert sink.write(image(0)) is False
    assert windows.shown == 10                    # not shown again: imshow would reopen a closed window


def test_video_codec_defaults_to_h264_only_where_gstreamer_is(tmp_path):
    assert VideoFileSink(tmp_path / "a.mp4", 10, gstreamer=True, hardware=False).codec == "h264"
    assert VideoFileSink(tmp_path / "a.mp4", 10, gstreamer=False).codec == "mp4v"
    with pytest.raises(UserError, match="--codec h264 needs OpenCV built with GStreamer"):
        VideoFileSink(tmp_path / "a.mp4", 10, codec="h264", gstreamer=False)


def test_rtsp_output_with_a_password_is_accepted_and_not_shown(monkeypatch):
    monkeypatch.setattr(sinks.cvbuild, "has_gstreamer", lambda: True)
    sink = open_sink(parse_output('rtsp://admin:s3cr et!"@mediamtx.local:8554/seg'), 30)
    assert sink.name == "rtsp://mediamtx.local:8554/seg"
    assert 'user-id="admin" user-pw="s3cr et!\\""' in sink._pipeline
    with pytest.raises(UserError, match="cannot be streamed over RTSP"):
        open_sink(parse_output("rtsp://mediamtx.local:8554/seg"), 30, codec="mp4v")


def test_serving_rtsp_without_pygobject_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gi(name, *args, **kwargs):
        if name == "gi" or name.startswith("gi."):
            raise ImportError("No module named 'gi'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gi)
    with pytest.raises(UserError, match=r"needs PyGObject and gst-rtsp-server: sudo apt-get install python3-gi gir1.2-gst-rtsp-server-1.0"):
        open_sink(parse_output("rtsp://@:8554/out"), 30)
