"""display:// with a real window: the system OpenCV's GUI on a virtual X server (Xvfb).

The run must keep showing frames (not stop after the first, defect 1 of issue 20) and must stop,
exit 0 and report when the window is closed as a window manager closes it: a WM_DELETE_WINDOW
message. Uses $DISPLAY when set (e.g. under `xvfb-run`), else starts Xvfb itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import cv2
import pytest
from conftest import CLIP_FRAMES, street_frame
from gst_env import REQUIRED, Process, require_gstreamer, uda_env

pytestmark = [pytest.mark.gstreamer, pytest.mark.timeout(180)]
require_gstreamer(module_level=True)

WINDOW = "uda-adapt"


@pytest.fixture(scope="module")
def x_display():
    try:
        from Xlib import display  # noqa: F401  (python3-xlib)
    except ImportError:
        (pytest.fail if REQUIRED else pytest.skip)("needs python3-xlib to find and close the window")
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        (pytest.fail if REQUIRED else pytest.skip)("needs Xvfb (the xvfb package) or a DISPLAY")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                              pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        number = pipe.readline().strip()      # Xvfb writes its display number once it accepts clients
    try:
        assert number, "Xvfb did not start"
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("window_clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 72))
    for i in range(CLIP_FRAMES):
        writer.write(street_frame(i))
    writer.release()
    return str(path)


def _find_window(x, name):
    stack = [x.screen().root]
    while stack:
        window = stack.pop()
        try:
            if window.get_wm_name() == name and window.get_attributes().map_state:
                return window
            stack.extend(window.query_tree().children)
        except Exception:       # a window that went away while we looked: not ours
            continue
    return None


def _close_like_a_window_manager(display_name: str, name: str, timeout: float = 60.0) -> None:
    from Xlib import X, display, protocol

    x = display.Display(display_name)
    try:
        deadline, window = time.monotonic() + timeout, None
        while window is None and time.monotonic() < deadline:
            window = _find_window(x, name)
            time.sleep(0.1)
        assert window is not None, f"no window named {name!r} appeared"
        protocols, delete = x.intern_atom("WM_PROTOCOLS"), x.intern_atom("WM_DELETE_WINDOW")
        message = protocol.event.ClientMessage(window=window, client_type=protocols, data=(32, [delete, X.CurrentTime, 0, 0, 0]))
        window.send_event(message, event_mask=X.NoEventMask)
        x.flush()
    finally:
        x.close()


def _window_shown(display_name: str, name: str) -> bool:
    from Xlib import display

    x = display.Display(display_name)
    try:
        return _find_window(x, name) is not None
    finally:
        x.close()


def test_the_window_shows_frames_until_it_is_closed(x_display, tiny_onnx, clip, tmp_path):
    report = tmp_path / "report.json"
    env = uda_env(DISPLAY=x_display, XDG_RUNTIME_DIR=str(tmp_path))
    with Process("run", tiny_onnx, clip, "display://0", "--input-loop", "-1", "--input-rate", "20", "--json", report, env=env) as run:
        run.wait_for("running", timeout=60)
        deadline = time.monotonic() + 60
        while not _window_shown(x_display, WINDOW):
            assert run.running(), f"the run ended before its window showed:\n{run.stderr[-2000:]}"
            assert time.monotonic() < deadline, "no window appeared"
            time.sleep(0.1)
        time.sleep(3.0)           # 3 s at 20 FPS: a window that stops after one frame has ended by now
        assert run.running(), f"display:// stopped by itself:\n{run.stderr[-2000:]}"
        # One close message, as a window manager sends one per click: the run must end on it.
        _close_like_a_window_manager(x_display, WINDOW)
        assert run.wait(30) == 0, run.stderr[-2000:]
    frames = json.loads(report.read_text())["frames"]
    assert frames >= 20, f"only {frames} frames were shown"
