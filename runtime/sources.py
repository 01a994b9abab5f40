"""Frame sources by URI: video files, image folders and globs, V4L2 and CSI cameras, RTSP.

Image folders and globs are read file by file (runtime.image_folder). Everything else goes
through OpenCV: FFmpeg for files (and RTSP when OpenCV has no GStreamer), GStreamer pipelines for
CSI cameras, V4L2 and RTSP where the build has it (JetPack's does; the PyPI wheel does not).
Each source reports why it cannot open in one sentence.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.errors import UserError
from uda_adapt.runtime import cvbuild
from uda_adapt.runtime.capture import VideoSource
from uda_adapt.runtime.frame_fit import fit_frame
from uda_adapt.runtime.image_folder import ImageFolderSource
from uda_adapt.runtime.rtsp_probe import probe_rtsp
from uda_adapt.runtime.uri import (
    CaptureOptions,
    InputURI,
    redact_url,
    csi_pipeline,
    file_decode_pipeline,
    is_jetson,
    parse_rtsp_url,
    rtsp_pipeline,
    rtsp_pipelines,
    v4l2_pipeline,
)

# A dead RTSP server or camera must not block a read forever: OpenCV's FFmpeg backend gives up
# after these, the source reports "lost", and the capture thread reconnects with back-off.
NETWORK_TIMEOUT_MS = 5000
# OpenCV (4.6, Debian's and JetPack's) waits for a GStreamer pipeline to start without a limit, and
# an RTSP server that refuses the connection at the wrong moment leaves it waiting for ever: a
# live GStreamer open that takes longer is given up: its thread finishes on its own, and a capture
# it opens late is used by the next open. While it runs no second open starts, unless it has hung
# for OPEN_ABANDON_S (then it is left to the process's end).
GSTREAMER_OPEN_TIMEOUT_S = 10.0
OPEN_ABANDON_S = 60.0
# Low-latency demuxing for FFmpeg RTSP; OpenCV reads this variable each time it opens a stream.
FFMPEG_LOW_LATENCY = "fflags;nobuffer|flags;low_delay"


class OpenCVSource:
    """A `cv2.VideoCapture` over a file, camera or stream."""

    def __init__(self, uri: InputURI, options: CaptureOptions, *, gstreamer: bool | None = None, jetson: bool | None = None,
                 probe: Callable[[str], str | None] = probe_rtsp) -> None:
        self.name = redact_url(uri.original)     # no password in logs and messages
        self.live = uri.live
        self.fps: float | None = None
        self._uri, self._options = uri, options
        self._gstreamer = cvbuild.has_gstreamer() if gstreamer is None else gstreamer
        self._jetson = is_jetson() if jetson is None else jetson
        self._probe = probe
        self._cap: cv2.VideoCapture | None = None
        self._lock = threading.Lock()             # `_cap` is swapped by the capture thread, closed by the owner too
        self._opening: list[_BackgroundOpen] = []  # live GStreamer opens given up on but still running
        self._worked: int | None = None           # the candidate (RTSP codec) that opened last; reconnects use it only
        self.frame_count: int | None = None      # a file's frames, as its container states (progress lines)
        self._position = 0                       # index in the file of the next frame (names saved masks)

    def capture_args(self) -> tuple[str | int, int, list[int]]:
        """What to hand `cv2.VideoCapture`: target, API preference and open parameters (the first to try)."""
        return self.capture_candidates()[0]

    def capture_candidates(self) -> list[tuple[str | int, int, list[int]]]:
        """Every way to open the source, in the order to try them (RTSP: H.264, then H.265)."""
        uri, options = self._uri, self._options
        if uri.kind == "rtsp" and options.decoder == "hardware":
            self._check_hardware_decoder()
        if uri.kind == "rtsp" and self._gstreamer:
            return [(pipeline, cv2.CAP_GSTREAMER, []) for pipeline in rtsp_pipelines(uri.location, options, self._jetson)]
        return [self._capture_args()]

    def _check_hardware_decoder(self) -> None:
        if not self._jetson:
            raise UserError(f"input {self.name}: --input-decoder hardware needs a Jetson (NVDEC through nvv4l2decoder); "
                            "drop the option to decode on the CPU")
        if not self._gstreamer:
            raise UserError(cvbuild.no_gstreamer(f"--input-decoder hardware for {self.name}"))

    def _capture_args(self) -> tuple[str | int, int, list[int]]:
        uri, options = self._uri, self._options
        if uri.kind == "file" and options.decoder == "hardware":
            self._check_hardware_decoder()
            return file_decode_pipeline(uri.location), cv2.CAP_GSTREAMER, []
        if uri.kind == "file":
            return uri.location, cv2.CAP_ANY, []
        if uri.kind == "csi":
            if not self._gstreamer:
                raise UserError(cvbuild.no_gstreamer(f"input {uri.original}"))
            return csi_pipeline(uri.index or 0, options), cv2.CAP_GSTREAMER, []
        if uri.kind == "v4l2":
            if options.decoder == "hardware" and options.codec == "mjpeg":
                self._check_hardware_decoder()
            if self._gstreamer:
                return v4l2_pipeline(uri.location, options), cv2.CAP_GSTREAMER, []
            return (uri.index if uri.index is not None else uri.location), cv2.CAP_V4L2, []
        if uri.kind == "rtsp":
            if self._gstreamer:
                return rtsp_pipeline(uri.location, options, self._jetson), cv2.CAP_GSTREAMER, []
            _set_ffmpeg_capture_options(options.transport)
            return parse_rtsp_url(uri.location).url_with_credentials(), cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS]
        raise UserError(f"input {uri.original}: OpenCV cannot read {uri.kind} sources")

    def open(self) -> None:
        self.close()
        uri = self._uri
        if uri.kind == "file" and not Path(uri.location).is_file():
            raise UserError(f"input {uri.location} does not exist")
        if uri.kind == "v4l2" and not self._gstreamer and not Path(uri.location).exists():
            raise UserError(f"input {uri.original}: camera {uri.location} does not exist; list cameras with `v4l2-ctl --list-devices`")
        # FFmpeg would print its own line ("moov atom not found") above the one-line error below;
        # read once, at OpenCV's first FFmpeg use. Set OPENCV_FFMPEG_LOGLEVEL to see FFmpeg's log.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        opened = self._late_capture()
        if opened is None:
            opened = self._open_candidates()
        cap, api = opened
        if uri.kind == "v4l2" and api == cv2.CAP_V4L2:
            self._request_camera_mode(cap)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if uri.kind == "file" else 0
        self.frame_count = count if count > 0 else None
        self._position = 0
        with self._lock:
            self._cap = cap

    def _open_candidates(self) -> tuple[cv2.VideoCapture, int]:
        uri, candidates = self._uri, self.capture_candidates()
        if uri.kind == "rtsp" and self._gstreamer:
            # Ask the server first: a GStreamer open that fails costs more than time (see rtsp_probe).
            reason = self._probe(uri.location)
            if reason is not None:
                raise UserError(f"cannot open input {self.name}: {reason} (check the URL and that the camera is on and reachable)")
        # A camera that restarts streams the codec it streamed before: once one has worked, only it.
        order = [self._worked] if self._worked is not None and self._worked < len(candidates) else range(len(candidates))
        for index in order:
            target, api, params = candidates[index]
            if api == cv2.CAP_GSTREAMER and uri.live:
                opener = _BackgroundOpen(target, api, params, index)
                if not opener.wait(GSTREAMER_OPEN_TIMEOUT_S):
                    self._opening.append(opener)      # used by the next open if it succeeds late
                    continue
                cap = opener.take()
            else:
                cap = cv2.VideoCapture(target, api, params)
                if not cap.isOpened():
                    cap.release()
                    cap = None
            if cap is not None:
                self._worked = index if len(candidates) > 1 else None
                return cap, api
        raise UserError(self._why_not_open())

    def _late_capture(self) -> tuple[cv2.VideoCapture, int] | None:
        """A capture that an earlier, given-up open has opened since; a UserError while one is still trying.

        Never two live GStreamer opens of one source at once: a second pipeline started while the
        first is still starting makes two clients of one camera, and the first's late success
        would otherwise be released from its own thread while the second starts.
        """
        adopted = None
        for opener in list(self._opening):
            if opener.done():
                self._opening.remove(opener)
                cap = opener.take()
                if cap is not None and adopted is None:
                    adopted, self._worked = cap, opener.candidate
                elif cap is not None:
                    cap.release()
            elif time.monotonic() - opener.started > OPEN_ABANDON_S:
                self._opening.remove(opener)          # hung for good: left to the end of the process
        if adopted is not None:
            return adopted, cv2.CAP_GSTREAMER
        if self._opening:
            raise UserError(f"cannot open input {self.name}: the previous attempt is still waiting for the stream "
                            f"(given up on after {GSTREAMER_OPEN_TIMEOUT_S:g} s)")
        return None

    def _request_camera_mode(self, cap: cv2.VideoCapture) -> None:
        options = self._options
        if options.codec == "mjpeg":
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if options.width and options.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, options.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, options.height)
        if options.rate:
            cap.set(cv2.CAP_PROP_FPS, options.rate)

    def _why_not_open(self) -> str:
        uri = self._uri
        if uri.kind == "file":
            return f"cannot open input {uri.location}: OpenCV's FFmpeg cannot decode it (not a video, or an unsupported codec); re-encode it, e.g. ffmpeg -i {uri.location} -c:v libx264 clip.mp4"
        if uri.kind == "csi":
            return f"cannot open input {uri.original}: nvarguscamerasrc could not start sensor {uri.index}; check the camera cable and try `sudo systemctl restart nvargus-daemon`"
        if uri.kind == "v4l2":
            return f"cannot open input {uri.original}: camera {uri.location} is busy, unsupported or not permitted (is another program using it? is the user in the 'video' group?)"
        several = len(self.capture_candidates()) > 1 and self._worked is None     # a reconnect tries the codec that worked
        tried = " (tried H.264 and H.265; give --input-codec for another)" if several else ""
        within = GSTREAMER_OPEN_TIMEOUT_S if self._gstreamer else NETWORK_TIMEOUT_MS / 1000
        return f"cannot open input {self.name}: no stream within {within:g} s{tried} (check the URL, credentials and that the camera is reachable)"

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._cap is None:
            return False, None
        ok, image = self._cap.read()
        if not ok:
            return False, None
        self._position += 1
        return True, fit_frame(image, self._options, self._uri)

    def frame_name(self) -> str | None:
        """A file's frame as `<stem>_<index>` (index in the file, from 0); None for live sources."""
        if self._uri.kind != "file":
            return None
        return f"{Path(self._uri.location).stem}_{self._position - 1:06d}"

    def skip(self) -> bool:
        self._position += 1
        return self._cap is not None and self._cap.grab()

    def close(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def _set_ffmpeg_capture_options(transport: str) -> None:
    """OpenCV reads OPENCV_FFMPEG_CAPTURE_OPTIONS at each FFmpeg open; a value the user set is kept."""
    current = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    ours = {FFMPEG_LOW_LATENCY, *(f"{FFMPEG_LOW_LATENCY}|rtsp_transport;{t}" for t in ("tcp", "udp"))}
    if current is None or current in ours:
        suffix = f"|rtsp_transport;{transport}" if transport != "auto" else ""
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = FFMPEG_LOW_LATENCY + suffix


class _BackgroundOpen:
    """One `cv2.VideoCapture` opening on its own thread, so that the caller can stop waiting for it."""

    def __init__(self, target: str | int, api: int, params: list[int], candidate: int) -> None:
        self.candidate, self.started = candidate, time.monotonic()
        self._cap: cv2.VideoCapture | None = None
        self._done = threading.Event()
        threading.Thread(target=self._open, args=(target, api, params), name="open capture", daemon=True).start()

    def _open(self, target: str | int, api: int, params: list[int]) -> None:
        cap = cv2.VideoCapture(target, api, params)
        if cap.isOpened():
            self._cap = cap
        else:
            cap.release()
        self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def done(self) -> bool:
        return self._done.is_set()

    def take(self) -> cv2.VideoCapture | None:
        """The opened capture (once; None if it failed or is still opening)."""
        if not self._done.is_set():
            return None
        cap, self._cap = self._cap, None
        return cap


SOURCES: dict[str, Callable[[InputURI, CaptureOptions], VideoSource]] = {
    "file": OpenCVSource,
    "v4l2": OpenCVSource,
    "csi": OpenCVSource,
    "rtsp": OpenCVSource,
    "images": ImageFolderSource,
}


def open_source(uri: InputURI, options: CaptureOptions = CaptureOptions()) -> VideoSource:
    """Create and open the source for `uri`; a UserError names it and says why it cannot open."""
    try:
        make = SOURCES[uri.kind]
    except KeyError:
        raise UserError(f"input {uri.original}: unknown kind {uri.kind!r}; valid: {', '.join(SOURCES)}") from None
    source = make(uri, options)
    source.open()
    return source
