"""What this OpenCV build can do: GStreamer for cameras and RTSP, a GUI for windows.

The PyPI `opencv-python-headless` wheel has FFmpeg but neither GStreamer nor a GUI; JetPack's
`nvidia-opencv` (and Debian's `python3-opencv` off a Jetson) has GStreamer (and GTK on a desktop image).
"""

from __future__ import annotations

import functools
import re


@functools.cache
def _build_information() -> str:
    import cv2

    return cv2.getBuildInformation()


def _feature(name: str) -> bool:
    match = re.search(rf"^\s*{name}:\s*(.+)$", _build_information(), flags=re.MULTILINE)
    return bool(match) and not match.group(1).strip().upper().startswith(("NO", "NONE"))


def has_gstreamer() -> bool:
    return _feature("GStreamer")


def has_gui() -> bool:
    return _feature("GUI")


def no_gstreamer(what: str) -> str:
    """The error for `what` (e.g. "input csi://0") on an OpenCV without GStreamer, with the fix.

    Usually a PyPI wheel (opencv-python[-headless]) installed into the environment shadows
    JetPack's GStreamer-enabled nvidia-opencv.
    """
    import cv2

    return (f"{what} needs OpenCV built with GStreamer, and this OpenCV ({cv2.__version__}, {cv2.__file__}) has none; "
            "on Jetson use JetPack's nvidia-opencv: `pip uninstall -y opencv-python opencv-python-headless` in a venv "
            "made with --system-site-packages (install uda-adapt with the [jetson] extra, see samples/jetson.md); "
            "check with `python3 -c \"import cv2; print(cv2.getBuildInformation())\" | grep GStreamer`")
