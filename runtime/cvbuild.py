"""What this OpenCV build can do: GStreamer for cameras and RTSP, a GUI for windows.

The PyPI `opencv-python-headless` wheel has FFmpeg but neither GStreamer nor a GUI; JetPack's
`python3-opencv` has GStreamer (and GTK on a desktop image).
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
