"""Where rendered frames go: a video file, an image sequence, a window, RTSP, or nowhere.

Every sink is a context manager. A video file is written under a temporary name and renamed
when the sink closes, which it always does, also on Ctrl-C or an error: an interrupted run
leaves a playable video of the frames it got to, and never a truncated file under the name.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from common.atomic import ensure_writable_dir
from common.errors import UserError
from runtime import cvbuild
from runtime.uri import OutputURI, detect_h264_encoder, rtsp_output_pipeline

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
QUIT_KEYS = (ord("q"), 27)   # q, Esc


class FramePacer:
    """How many times to write each frame so a constant-rate video keeps real time.

    A video file (and OpenCV's GStreamer writer, which stamps buffers n / fps) has one frame
    rate. With `--latest` the pipeline drops frames when inference is slower than the source,
    so writing one output frame per processed frame would play back too fast. Each frame is
    placed at its capture time instead: written as often as needed to fill the slots since the
    previous one (a gap repeats the last picture), or not at all when its slot is taken.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._start: float | None = None
        self._written = 0

    def repeats(self, timestamp: float) -> int:
        if self._start is None:
            self._start = timestamp
        slot = int(round((timestamp - self._start) * self.fps))   # this frame's slot: 0, 1, 2, ...
        count = max(slot + 1 - self._written, 0)
        self._written += count
        return count


class Sink(Protocol):
    name: str

    def write(self, image: np.ndarray) -> bool:
        """Show or store one BGR uint8 (H, W, 3) image; False once the sink has stopped (window closed)."""

    def close(self) -> None: ...
    def __enter__(self) -> Sink: ...
    def __exit__(self, *exc_info: object) -> None: ...


class _SinkBase:
    name = ""
    frames = 0

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
    """An mp4 (mp4v) or avi (MJPG) file; the size is fixed by the first frame."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.fps = fps if fps and fps > 0 else 30.0
        if self.path.is_dir():
            raise UserError(f"output {self.path} is a directory; give a file name such as {self.path / 'out.mp4'}")
        ensure_writable_dir(self.path.parent)
        self._fourcc = FOURCC_BY_SUFFIX.get(self.path.suffix.lower(), "mp4v")
        self._writer: cv2.VideoWriter | None = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self._failed = False            # a write failed: the video is cut short and is not kept

    def _open(self, width: int, height: int) -> None:
        # Not mkstemp: its 0600 mode would stick to the final video; O_EXCL keeps the name ours.
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{self.path.suffix}")
        os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self._fourcc), self.fps, (width, height))
        if not writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise UserError(f"cannot write video {self.path}: OpenCV has no {self._fourcc} encoder for {self.path.suffix}; use .mp4")
        self._writer, self._size = writer, (width, height)

    def write(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        if self._writer is None:
            self._open(w, h)
        if (w, h) != self._size:
            # A video has one size; frames of an image folder may not.
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        try:
            self._writer.write(image)
        except OSError as exc:
            self._failed = True
            raise UserError(f"cannot write video {self.path}: {exc.strerror or exc}; free some disk space "
                            "or choose another output") from exc
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()      # writes the mp4 index: without it the file does not play
        self._writer = None
        # OpenCV's writer does not report failed writes: a full disk shows as no space left after.
        cut_short = bool(self.frames) and not self._failed and _disk_full(self._tmp)
        if self.frames and not self._failed and not cut_short:
            os.replace(self._tmp, self.path)
            return
        self._tmp.unlink(missing_ok=True)
        if cut_short:
            raise UserError(f"cannot write video {self.path}: the disk is full and the video was cut short; "
                            "free some disk space or choose another output")


def _disk_full(path: Path) -> bool:
    try:
        return os.statvfs(path).f_bavail == 0
    except (OSError, AttributeError):   # no statvfs on Windows
        return False


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
        self._window = name
        self._opened = False

    def write(self, image: np.ndarray) -> bool:
        cv2.imshow(self._window, image)
        self._opened = True
        key = cv2.waitKey(1) & 0xFF     # also pumps the window's events
        if key in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self._window, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self._opened:
            cv2.destroyWindow(self._window)
            self._opened = False


class RtspSink(_SinkBase):
    """H.264 pushed to an RTSP server (e.g. mediamtx) through a GStreamer `rtspclientsink`."""

    def __init__(self, url: str, fps: float, bitrate: int = 4_000_000) -> None:
        if not cvbuild.has_gstreamer():
            raise UserError(cvbuild.no_gstreamer(f"output {url}") + "; or write a file instead")
        if "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise UserError(f"output {url}: serving RTSP is not built in; run an RTSP server (e.g. mediamtx) and push to rtsp://127.0.0.1:8554/seg")
        self.name = url
        self._pipeline = rtsp_output_pipeline(url, bitrate, detect_h264_encoder())
        self._fps = fps if fps and fps > 0 else 30.0
        self._writer: cv2.VideoWriter | None = None

    def write(self, image: np.ndarray) -> bool:
        if self._writer is None:
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(self._pipeline, cv2.CAP_GSTREAMER, 0, self._fps, (w, h), True)
            if not self._writer.isOpened():
                raise UserError(f"cannot stream to {self.name}: GStreamer could not start `{self._pipeline}` (is the server up, are x264enc/rtspclientsink installed?)")
        self._writer.write(image)
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def display_problem() -> str | None:
    """Why a window cannot be shown here, or None when it can."""
    if not cvbuild.has_gui():
        return "this OpenCV has no GUI support (opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display is attached (DISPLAY is not set)"
    return None


def check_output(output: OutputURI, *, headless: bool = False) -> None:
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
    elif output.kind == "images":
        ImageSequenceSink(output.location)
    elif output.kind == "rtsp" and not cvbuild.has_gstreamer():
        raise UserError(cvbuild.no_gstreamer(f"output {output.location}") + "; or write a file instead")


def open_sink(output: OutputURI, fps: float | None, *, headless: bool = False, bitrate: int = 4_000_000) -> Sink:
    """The sink for `output`; each checks writability or display availability as it opens."""
    check_output(output, headless=headless)
    fps = fps or 30.0
    makers = {
        "display": lambda: DisplaySink(),
        "video": lambda: VideoFileSink(output.location, fps),
        "images": lambda: ImageSequenceSink(output.location),
        "rtsp": lambda: RtspSink(output.location, fps, bitrate),
        "null": lambda: NullSink(),
    }
    return makers[output.kind]()
