"""Input and output URIs, following jetson-utils, and the GStreamer pipelines they map to.

Inputs:  `csi://0`, `v4l2:///dev/video0` (also `/dev/video0` and a bare camera index `0`),
         `rtsp://host/path`, `file://clip.mp4` or a bare path, a directory or a quoted glob
         of images.
Outputs: `display://0`, `file://out.mp4` or a bare video path, `out_%05d.png` (an image
         sequence), `rtsp://host:8554/seg` (pushed to an RTSP server), `null://`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal

from common.errors import UserError

InputKind = Literal["file", "images", "v4l2", "csi", "rtsp"]
OutputKind = Literal["display", "video", "images", "rtsp", "null"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi")
LIVE_KINDS = ("v4l2", "csi", "rtsp")
GLOB_CHARS = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class InputURI:
    """Where frames come from. `location` is a path, a device node or a URL."""

    kind: InputKind
    location: str
    original: str
    index: int | None = None          # csi sensor id / camera index

    @property
    def live(self) -> bool:
        """Cameras and streams: frames arrive in real time and may be dropped."""
        return self.kind in LIVE_KINDS


@dataclasses.dataclass(frozen=True)
class OutputURI:
    kind: OutputKind
    location: str
    original: str


@dataclasses.dataclass(frozen=True)
class CaptureOptions:
    """What a user may ask of a source (jetson-utils `videoOptions`); None keeps the source's own."""

    width: int | None = None
    height: int | None = None
    rate: float | None = None
    codec: Literal["auto", "h264", "h265", "mjpeg"] = "auto"   # auto: RTSP tries H.264, then H.265
    latency_ms: int = 200                # rtspsrc jitter buffer


def parse_input(uri: str) -> InputURI:
    text = uri.strip()
    if not text:
        raise UserError("the input URI is empty; give a video file, an image folder, csi://0, v4l2:///dev/video0 or rtsp://...")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _parse_bare_input(text)
    scheme = scheme.lower()
    if scheme == "csi":
        if not rest.isdigit():
            raise UserError(f"input {uri!r}: a CSI camera is csi://N with a sensor number, e.g. csi://0")
        return InputURI("csi", rest, text, index=int(rest))
    if scheme == "v4l2":
        if rest.isdigit():
            return InputURI("v4l2", f"/dev/video{rest}", text, index=int(rest))
        if not rest.startswith("/dev/"):
            raise UserError(f"input {uri!r}: a V4L2 camera is v4l2:///dev/videoN")
        return InputURI("v4l2", rest, text, index=_video_index(rest))
    if scheme in ("rtsp", "rtsps"):
        if not rest:
            raise UserError(f"input {uri!r} has no host; expected rtsp://host[:port]/path")
        return InputURI("rtsp", text, text)
    if scheme == "file":
        return _parse_bare_input(rest, original=text)
    raise UserError(f"input {uri!r} has unknown scheme {scheme!r}; valid: csi://, v4l2://, rtsp://, file:// or a bare path")


def _parse_bare_input(text: str, original: str | None = None) -> InputURI:
    original = original or text
    if text.isdigit():
        return InputURI("v4l2", f"/dev/video{text}", original, index=int(text))
    if text.startswith("/dev/video"):
        return InputURI("v4l2", text, original, index=_video_index(text))
    if GLOB_CHARS.search(text) or Path(text).is_dir() or Path(text).suffix.lower() in IMAGE_SUFFIXES:
        return InputURI("images", text, original)
    return InputURI("file", text, original)


def _video_index(device: str) -> int | None:
    match = re.fullmatch(r"/dev/video(\d+)", device)
    return int(match.group(1)) if match else None


def parse_output(uri: str | None) -> OutputURI:
    """`None` or `display://N` is a window; a bare path picks video or images by its suffix."""
    text = (uri or "display://0").strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme == "display":
            return OutputURI("display", rest or "0", text)
        if scheme == "null":
            return OutputURI("null", "", text)
        if scheme in ("rtsp", "rtsps"):
            return OutputURI("rtsp", text, text)
        if scheme == "file":
            return _parse_path_output(rest, text)
        raise UserError(f"output {uri!r} has unknown scheme {scheme!r}; valid: display://, file://, rtsp://, null:// or a bare path")
    if text.lower() == "null":
        return OutputURI("null", "", text)
    return _parse_path_output(text, text)


def _parse_path_output(path: str, original: str) -> OutputURI:
    suffix = Path(path).suffix.lower()
    if "%" in path or suffix in IMAGE_SUFFIXES:
        if suffix not in IMAGE_SUFFIXES:
            raise UserError(f"output {original!r}: an image sequence needs an image suffix, e.g. out_%05d.png")
        return OutputURI("images", path if "%" in path else str(Path(path).with_name(Path(path).stem + "_%05d" + suffix)), original)
    if path.endswith("/") or Path(path).is_dir():
        return OutputURI("images", str(Path(path) / "%05d.png"), original)
    if suffix not in VIDEO_SUFFIXES:
        raise UserError(f"output {original!r}: unknown file type {suffix or '(none)'}; use .mp4, .avi, .mkv or an image pattern like out_%05d.png")
    return OutputURI("video", path, original)


# --- GStreamer pipelines -------------------------------------------------------------------------
# appsink drop=1 max-buffers=1: GStreamer itself keeps only the newest frame, so a slow consumer
# never makes a live camera queue up seconds of old video.
_APPSINK = "appsink drop=1 max-buffers=1 sync=false"


def csi_pipeline(sensor: int, options: CaptureOptions, flip_method: int = 0) -> str:
    """Jetson CSI camera via nvarguscamerasrc, converted from NVMM NV12 to BGR for OpenCV."""
    width, height, rate = options.width or 1280, options.height or 720, options.rate or 30
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={_fraction(rate)},format=NV12 ! "
        f"nvvidconv flip-method={flip_method} ! video/x-raw,format=BGRx ! "
        f"videoconvert ! video/x-raw,format=BGR ! {_APPSINK}"
    )


def v4l2_pipeline(device: str, options: CaptureOptions) -> str:
    caps = []
    if options.width and options.height:
        caps += [f"width={options.width}", f"height={options.height}"]
    if options.rate:
        caps.append(f"framerate={_fraction(options.rate)}")
    caps_text = "," + ",".join(caps) if caps else ""
    if options.codec == "mjpeg":
        source = f"v4l2src device={device} ! image/jpeg{caps_text} ! jpegdec"
    else:
        source = f"v4l2src device={device} ! video/x-raw{caps_text}"
    return f"{source} ! videoconvert ! video/x-raw,format=BGR ! {_APPSINK}"


def rtsp_pipelines(url: str, options: CaptureOptions, jetson: bool) -> list[str]:
    """The pipelines to try in order: the asked codec, or (auto) H.264 and then H.265.

    Cameras stream either, and the depayloader must match: an H.264 pipeline never links to
    an H.265 stream, it only times out.
    """
    codecs = ["h264", "h265"] if options.codec in ("auto", "mjpeg") else [options.codec]
    return [rtsp_pipeline(url, options, jetson, codec) for codec in codecs]


def rtsp_pipeline(url: str, options: CaptureOptions, jetson: bool, codec: str | None = None) -> str:
    """Low-latency RTSP client: hardware decoder on Jetson, libav elsewhere."""
    codec = codec or ("h265" if options.codec == "h265" else "h264")
    if jetson:
        decode = "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert"
    else:
        decode = f"avdec_{codec} ! videoconvert"
    return (
        f"rtspsrc location={url} latency={options.latency_ms} ! "
        f"rtp{codec}depay ! {codec}parse ! {decode} ! video/x-raw,format=BGR ! {_APPSINK}"
    )


def h264_encoder(jetson: bool, model: str = "", nvenc_device: bool = True) -> str:
    """`nvv4l2h264enc` on a Jetson with NVENC, else `x264enc`.

    Jetson Orin Nano has no hardware video encoder (NVENC), so there, and wherever the
    encoder device node is missing, H.264 is encoded in software, as jetson-utils does.
    """
    if jetson and nvenc_device and "orin nano" not in model.lower():
        return "nvv4l2h264enc"
    return "x264enc"


def detect_h264_encoder() -> str:
    """`h264_encoder` for this machine (device-tree model, /dev/v4l2-nvenc)."""
    jetson = is_jetson()
    try:
        model = Path("/proc/device-tree/model").read_text(errors="ignore").strip("\x00")
    except OSError:
        model = ""
    return h264_encoder(jetson, model, Path("/dev/v4l2-nvenc").exists())


def rtsp_output_pipeline(url: str, bitrate: int, encoder: str) -> str:
    """Encode BGR frames to H.264 with `encoder` and push them to an RTSP server (e.g. mediamtx) at `url`."""
    if encoder == "nvv4l2h264enc":
        encode = (
            "videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
            f"nvv4l2h264enc bitrate={bitrate} insert-sps-pps=1 idrinterval=30"
        )
    else:
        encode = f"videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast bitrate={bitrate // 1000} key-int-max=30"
    return f"appsrc ! {encode} ! h264parse ! rtspclientsink location={url}"


def _fraction(rate: float) -> str:
    """GStreamer wants framerates as fractions: 30 -> 30/1, 29.97 -> 2997/100."""
    if float(rate).is_integer():
        return f"{int(rate)}/1"
    return f"{round(rate * 100)}/100"


def is_jetson() -> bool:
    """True on NVIDIA Jetson (L4T), where the nv* GStreamer elements exist."""
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return "jetson" in Path("/proc/device-tree/model").read_text(errors="ignore").lower()
    except OSError:
        return False
