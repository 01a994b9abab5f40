"""Where rendered frames go: a video file, an image sequence, a window, RTSP, or nowhere.

Every sink is a context manager. A video file is written under a temporary name and renamed
when the sink closes, which it always does, also on Ctrl-C or an error: an interrupted run
leaves a playable video of the frames it got to, and never a truncated file under the name.
Videos are H.264 (yuv420p) through GStreamer where OpenCV has it, else mp4v (`runtime/encoders.py`);
`rtsp://@:8554/out` is served by `runtime/rtsp_server.py`.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from uda_adapt.common.atomic import ensure_writable_dir
from uda_adapt.common.errors import UserError
from uda_adapt.runtime import cvbuild
from uda_adapt.runtime.encoders import (
    ENCODER_PACKAGES,
    FOURCC_BY_SUFFIX,
    STREAM_CODECS,
    detect_hardware_encoder,
    encoder_element,
    encoder_fits,
    file_pipeline,
    resolve_codec,
    rtsp_push_pipeline,
)
from uda_adapt.runtime.rtsp_push import StreamPusher
from uda_adapt.runtime.uri import OutputURI, parse_rtsp_url, redact_url

QUIT_KEYS = (ord("q"), 27)   # q, Esc
PUSH_STALL_S = 10.0          # an RTSP server that takes a pushed stream takes each frame well within this


class Sink(Protocol):
    name: str
    # True where writes must come from the main thread (GUI windows); others may be written
    # from a thread of lower priority (run_pipeline's `side_nice`).
    main_thread_only: bool

    def write(self, image: np.ndarray) -> bool:
        """Show or store one BGR uint8 (H, W, 3) image; False once the sink has stopped (window closed)."""

    def close(self) -> None: ...
    def __enter__(self) -> Sink: ...
    def __exit__(self, *exc_info: object) -> None: ...


class _SinkBase:
    name = ""
    frames = 0
    main_thread_only = False

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        pass


class NullSink(_SinkBase):
    """Discards frames: for benchmarks and `--headless` runs that only want the report."""

    name = "null://"

    def write(self, image: np.ndarray) -> bool:
        self.frames += 1
        return True


class VideoFileSink(_SinkBase):
    """A video file of `codec` (None: H.264 where OpenCV has GStreamer, else mp4v); the size is fixed by the first frame."""

    def __init__(self, path: str | os.PathLike, fps: float, codec: str | None = None, bitrate: int = 4_000_000,
                 *, gstreamer: bool | None = None, hardware: bool | None = None, log=None) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.fps = fps if fps and fps > 0 else 30.0
        if self.path.is_dir():
            raise UserError(f"output {self.path} is a directory; give a file name such as {self.path / 'out.mp4'}")
        ensure_writable_dir(self.path.parent)
        gstreamer = cvbuild.has_gstreamer() if gstreamer is None else gstreamer
        self.codec = resolve_codec(codec, gstreamer)
        self._hardware = (detect_hardware_encoder() if hardware is None else hardware) and self.codec != "mp4v"
        self._bitrate = bitrate
        self._log = log
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None

    def _open(self, width: int, height: int) -> None:
        encoder_fits(self.codec, self._hardware, width, height, self._log)
        # Not mkstemp: its 0600 mode would stick to the final video; O_EXCL keeps the name ours.
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{self.path.suffix}")
        os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        if self.codec == "mp4v":
            fourcc = FOURCC_BY_SUFFIX.get(self.path.suffix.lower(), "mp4v")
            writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (width, height))
            problem = f"OpenCV has no {fourcc} encoder for {self.path.suffix}; use .mp4"
        else:
            pipeline = file_pipeline(str(self._tmp), self.codec, self._hardware, self._bitrate)
            writer = cv2.VideoWriter(pipeline, cv2.CAP_GSTREAMER, 0, self.fps, (width, height), True)
            encoder = encoder_element(self.codec, self._hardware)
            problem = (f"GStreamer could not start `{pipeline}`; is {encoder} installed "
                       f"({ENCODER_PACKAGES.get(encoder, 'JetPack')})? Or use --codec mp4v")
        if not writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write video {self.path}: {problem}")
        self._writer, self._size = writer, (width, height)

    def write(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        if self._writer is None:
            self._open(w, h)
        if (w, h) != self._size:
            # A video has one size; frames of an image folder may not.
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()      # writes the mp4 index: without it the file does not play
        self._writer = None
        # OpenCV's writers report no failed write: a full disk or a file size limit shows only as a
        # file that does not open, or holds fewer frames than were written.
        readable = _readable_frames(self._tmp) if self.frames else 0
        if self.frames and readable >= self.frames:
            os.replace(self._tmp, self.path)
            return
        self._tmp.unlink(missing_ok=True)
        if self.frames:
            raise UserError(f"cannot write video {self.path}: it was cut short ({readable} of {self.frames} frames readable; "
                            f"is the disk full?); free some disk space or choose another output")


def _readable_frames(path: Path) -> int:
    """How many frames the finished video at `path` holds by its index; 0 when it does not open.

    Containers without a frame count in their index (count unknown) are trusted when a first
    frame decodes.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0:
            return count
        return sys.maxsize if cap.read()[0] else 0
    finally:
        cap.release()


class ImageSequenceSink(_SinkBase):
    """One image per frame, `pattern % index` (e.g. out_%05d.png), numbered from 0."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.name = pattern
        try:
            pattern % 0
        except (TypeError, ValueError):
            raise UserError(f"output {pattern!r} needs exactly one %d-style number, e.g. out_%05d.png") from None
        ensure_writable_dir(Path(pattern % 0).parent)

    def write(self, image: np.ndarray) -> bool:
        path = self.pattern % self.frames
        if not cv2.imwrite(path, image):
            raise UserError(f"cannot write image {path}; check the disk space and the file suffix")
        self.frames += 1
        return True


class DisplaySink(_SinkBase):
    """An OpenCV window; q or Esc (or closing it) stops the run."""

    def __init__(self, name: str = "uda-adapt") -> None:
        problem = display_problem()
        if problem:
            raise UserError(f"cannot open display://: {problem}; pass --headless, or give an output file such as out.mp4")
        self.name = "display://0"
        self.main_thread_only = True
        self._window = name
        self._opened = False

    def write(self, image: np.ndarray) -> bool:
        # A close handled since the last frame (GTK destroys the window on WM_DELETE_WINDOW, on
        # whichever OpenCV call pumps events next): imshow would open a new window under the
        # same name and the user's close would be lost.
        if self._opened and window_closed(self._window):
            return False
        cv2.imshow(self._window, image)
        self._opened = True
        key = cv2.waitKey(1) & 0xFF     # also pumps the window's events
        if key in QUIT_KEYS:
            return False
        return not window_closed(self._window)

    def close(self) -> None:
        if self._opened:
            self._opened = False
            try:
                cv2.destroyWindow(self._window)
            except cv2.error:           # already gone with its GUI thread (Qt, after a close)
                pass


def window_closed(window: str) -> bool:
    """Whether the user closed `window`.

    WND_PROP_VISIBLE is 1 while shown and 0 once closed (Qt, Win32). GTK builds, which include
    JetPack's and Ubuntu's, do not implement it and return -1 for an open window: only 0 means
    closed. There a closed window is one that no longer exists, which any property then says
    with -1 (or an error).
    """
    try:
        visible = cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE)
        if visible >= 0:
            return visible == 0
        return cv2.getWindowProperty(window, cv2.WND_PROP_AUTOSIZE) < 0
    except cv2.error:
        return True


class RtspSink(_SinkBase):
    """Frames encoded and pushed to an RTSP server (e.g. mediamtx) through a GStreamer `rtspclientsink`."""

    def __init__(self, url: str, fps: float, bitrate: int = 4_000_000, codec: str | None = None, log=None) -> None:
        if not cvbuild.has_gstreamer():
            raise UserError(cvbuild.no_gstreamer(f"output {redact_url(url)}") + "; or write a file instead")
        self.codec = _stream_codec(codec)
        parsed = parse_rtsp_url(url)
        self.name = parsed.location
        self._hardware, self._log = detect_hardware_encoder(), log
        self._pipeline = rtsp_push_pipeline(parsed.location, parsed.user, parsed.password, self.codec, self._hardware, bitrate)
        self._fps = fps if fps and fps > 0 else 30.0
        self._writer: StreamPusher | None = None

    def write(self, image: np.ndarray) -> bool:
        if self._writer is None:
            h, w = image.shape[:2]
            encoder_fits(self.codec, self._hardware, w, h, self._log)
            self._writer = StreamPusher(self._pipeline, self._fps, (w, h), self.name, stall_s=PUSH_STALL_S)
        self._writer.push(image)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _stream_codec(codec: str | None) -> str:
    if codec is None:
        return "h264"
    if codec not in STREAM_CODECS:
        raise UserError(f"--codec {codec} cannot be streamed over RTSP; use {' or '.join(STREAM_CODECS)}")
    return codec


def display_problem() -> str | None:
    """Why a window cannot be shown here, or None when it can."""
    if not cvbuild.has_gui():
        return "this OpenCV has no GUI support (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display is attached (DISPLAY is not set)"
    return None


def check_output(output: OutputURI, *, headless: bool = False, codec: str | None = None) -> None:
    """Fail early, before any model or camera is opened, if `output` cannot be written or shown."""
    if output.kind == "display":
        if headless:
            raise UserError("--headless and display:// contradict each other; give an output file, or drop --headless")
        problem = display_problem()
        if problem:
            raise UserError(f"cannot open display://: {problem}; pass --headless, or give an output file such as out.mp4")
    elif output.kind == "video":
        if Path(output.location).is_dir():
            raise UserError(f"output {output.location} is a directory; give a file name such as {Path(output.location) / 'out.mp4'}")
        ensure_writable_dir(Path(output.location).parent)
        resolve_codec(codec, cvbuild.has_gstreamer())
    elif output.kind == "images":
        ImageSequenceSink(output.location)
    elif output.kind == "rtsp":
        if not cvbuild.has_gstreamer():
            raise UserError(cvbuild.no_gstreamer(f"output {redact_url(output.location)}") + "; or write a file instead")
        _stream_codec(codec)
    elif output.kind == "rtsp-server":
        from uda_adapt.runtime.rtsp_server import import_gst_rtsp_server

        _stream_codec(codec)
        import_gst_rtsp_server()


def open_sink(output: OutputURI, fps: float | None, *, headless: bool = False, bitrate: int = 4_000_000,
              codec: str | None = None, log=None) -> Sink:
    """The sink for `output`; each checks writability or display availability as it opens."""
    check_output(output, headless=headless, codec=codec)
    fps = fps or 30.0
    makers = {
        "display": lambda: DisplaySink(),
        "video": lambda: VideoFileSink(output.location, fps, codec, bitrate, log=log),
        "images": lambda: ImageSequenceSink(output.location),
        "rtsp": lambda: RtspSink(output.location, fps, bitrate, codec, log),
        "rtsp-server": lambda: _rtsp_server(output, fps, bitrate, codec, log),
        "null": lambda: NullSink(),
    }
    return makers[output.kind]()


def _rtsp_server(output: OutputURI, fps: float, bitrate: int, codec: str | None, log) -> Sink:
    from uda_adapt.runtime.rtsp_server import RtspServerSink

    return RtspServerSink(parse_rtsp_url(output.location), fps, _stream_codec(codec), detect_hardware_encoder(), bitrate, log)
