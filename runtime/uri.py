"""Input and output URIs, following jetson-utils, and the GStreamer pipelines they map to.

Inputs:  `csi://0`, `v4l2:///dev/video0` (also `/dev/video0` and a bare camera index `0`),
         `rtsp://host/path`, `file://clip.mp4` or a bare path, a directory or a quoted glob
         of images.
Outputs: `display://0`, `file://out.mp4` or a bare video path, `out_%05d.png` (an image
         sequence), `rtsp://@:8554/out` (served from this process; `rtsp://@127.0.0.1:8554/out`
         binds one address), `rtsp://[user:pass@]host:8554/seg` (pushed to an RTSP server), `null://`.

RTSP credentials never go into a pipeline's `location`: they become `user-id`/`user-pw`
properties, quoted, so a password with spaces, `!` or quotes cannot break the pipeline.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

from uda_adapt.common.errors import UserError
from uda_adapt.runtime.encoders import gst_quote
from uda_adapt.runtime.jetson import is_jetson  # noqa: F401  (re-exported: callers pick pipelines with it)

InputKind = Literal["file", "images", "v4l2", "csi", "rtsp"]
OutputKind = Literal["display", "video", "images", "rtsp", "rtsp-server", "null"]
Flip = Literal["none", "horizontal", "vertical", "rotate-180"]
FLIPS: tuple[str, ...] = ("none", "horizontal", "vertical", "rotate-180")
# auto: rtspsrc's own order (UDP first, TCP when no UDP packet arrives within its timeout).
Transport = Literal["auto", "tcp", "udp"]
TRANSPORTS: tuple[str, ...] = ("auto", "tcp", "udp")
# auto: NVDEC for RTSP on a Jetson, the CPU for files (FFmpeg) and MJPEG (jpegdec); hardware: NVDEC
# for all three (a Jetson with GStreamer only); software: the CPU everywhere.
Decoder = Literal["auto", "software", "hardware"]
DECODERS: tuple[str, ...] = ("auto", "software", "hardware")
# nvvidconv's flip-method for each --input-flip (0 none, 2 rotate-180, 4 horizontal, 6 vertical).
NVVIDCONV_FLIP = {"none": 0, "rotate-180": 2, "horizontal": 4, "vertical": 6}
DEFAULT_RTSP_PORT = 8554

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
    flip: Flip = "none"                  # --input-flip: a camera mounted upside down or mirrored
    transport: Transport = "auto"        # --input-transport: RTSP over UDP, or TCP (cameras behind NAT, lossy links)
    decoder: Decoder = "auto"            # --input-decoder: hardware = NVDEC on a Jetson for files, RTSP and MJPEG

    def __post_init__(self) -> None:
        if self.flip not in FLIPS:
            raise UserError(f"--input-flip {self.flip!r} is unknown; valid: {', '.join(FLIPS)}")
        if self.transport not in TRANSPORTS:
            raise UserError(f"--input-transport {self.transport!r} is unknown; valid: {', '.join(TRANSPORTS)}")
        if self.decoder not in DECODERS:
            raise UserError(f"--input-decoder {self.decoder!r} is unknown; valid: {', '.join(DECODERS)}")


@dataclasses.dataclass(frozen=True)
class RtspURL:
    """An `rtsp://` URL split for GStreamer: credentials apart from the location.

    `serve` is `rtsp://@[address]:port/path` (no host before the port): this process is the server.
    """

    host: str
    port: int
    path: str
    user: str | None = None
    password: str | None = None
    serve: bool = False
    scheme: str = "rtsp"

    @property
    def location(self) -> str:
        """The URL without credentials, for rtspsrc/rtspclientsink `location`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def url_with_credentials(self) -> str:
        """The URL with percent-encoded credentials, for FFmpeg."""
        if self.user is None:
            return self.location
        userinfo = quote(self.user, safe="") + ":" + quote(self.password or "", safe="")
        return self.location.replace("://", f"://{userinfo}@", 1)


def parse_rtsp_url(url: str) -> RtspURL:
    """Split `rtsp://[user[:password]@]host[:port][/path]`; the password may hold any character but `@/`.

    Percent-escapes in the user and password are decoded (`p%40ss` is `p@ss`).
    """
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    path = slash + path
    if "@" in path.split("?")[0] and "@" not in authority:
        # `rtsp://user:pa/ss@host/...`: a '/' in the password; the last '@' ends the credentials.
        userinfo_and_more, _, tail = rest.rpartition("@")
        authority, slash, path = tail.partition("/")
        authority, path = f"{userinfo_and_more}@{authority}", slash + path
    userinfo, at, hostport = authority.rpartition("@")
    user = password = None
    if at and userinfo:
        user, _, password = userinfo.partition(":")
        user, password = unquote(user), unquote(password)
    match = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(\d*))?", hostport)
    if not match:
        raise UserError(f"{scheme}:// URL {redact_url(url)} has a bad host or port; expected {scheme}://[user:pass@]host[:port]/path")
    host = match.group(1).strip("[]")
    # `@` with nothing before it, or no host at all: jetson-utils' way of saying "serve it here".
    serve = (bool(at) and not userinfo) or host in ("", "0.0.0.0")
    port = int(match.group(2)) if match.group(2) else (DEFAULT_RTSP_PORT if serve else 554)
    if not 1 <= port <= 65535:
        # gst-rtsp-server keeps the port in 16 bits: 99999 would quietly serve on 34463.
        raise UserError(f"{scheme}:// URL {redact_url(url)} has port {port}; a port is 1 to 65535, e.g. {DEFAULT_RTSP_PORT}")
    return RtspURL(host=host or "0.0.0.0", port=port, path=path or "/", user=user, password=password, serve=serve, scheme=scheme.lower())


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`, for messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, tail = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{tail}"


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
        parse_rtsp_url(text)          # a bad host or port is refused here, before anything opens
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
            url = parse_rtsp_url(text)
            if url.serve and url.user is not None:
                raise UserError(f"output {redact_url(text)}: the built-in RTSP server takes no password; serve rtsp://@:{url.port}{url.path}")
            if url.serve and scheme == "rtsps":
                raise UserError(f"output {text}: the built-in RTSP server speaks plain rtsp://; serve rtsp://@:{url.port}{url.path}")
            return OutputURI("rtsp-server" if url.serve else "rtsp", text, text)
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
# NVDEC's NV12 in NVMM memory -> BGRx in system memory (videoconvert then drops the x).
_NV_TO_BGRX = "nvvidconv ! video/x-raw,format=BGRx"


def csi_pipeline(sensor: int, options: CaptureOptions) -> str:
    """Jetson CSI camera via nvarguscamerasrc, converted from NVMM NV12 to BGR for OpenCV (flipped in nvvidconv)."""
    width, height, rate = options.width or 1280, options.height or 720, options.rate or 30
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},framerate={_fraction(rate)},format=NV12 ! "
        f"nvvidconv flip-method={NVVIDCONV_FLIP[options.flip]} ! video/x-raw,format=BGRx ! "
        f"videoconvert ! video/x-raw,format=BGR ! {_APPSINK}"
    )


def v4l2_pipeline(device: str, options: CaptureOptions) -> str:
    caps = []
    if options.width and options.height:
        caps += [f"width={options.width}", f"height={options.height}"]
    if options.rate:
        caps.append(f"framerate={_fraction(options.rate)}")
    caps_text = "," + ",".join(caps) if caps else ""
    if options.codec == "mjpeg" and options.decoder == "hardware":
        # NVDEC decodes MJPEG with mjpeg=1 and wants whole JPEG frames, hence jpegparse (DeepStream's
        # Gst-nvvideo4linux2 notes: "use the open source jpegparse plugin before the decoder").
        source = f"v4l2src device={gst_quote(device)} ! image/jpeg{caps_text} ! jpegparse ! nvv4l2decoder mjpeg=1 ! {_NV_TO_BGRX}"
    elif options.codec == "mjpeg":
        source = f"v4l2src device={gst_quote(device)} ! image/jpeg{caps_text} ! jpegdec"
    else:
        source = f"v4l2src device={gst_quote(device)} ! video/x-raw{caps_text}"
    return f"{source} ! videoconvert ! video/x-raw,format=BGR ! {_APPSINK}"


def file_decode_pipeline(path: str) -> str:
    """A video file decoded by NVDEC (--input-decoder hardware on a Jetson): every frame, in order.

    parsebin picks the demuxer and parser for the container and codec; nvv4l2decoder takes
    H.264, H.265, VP9, AV1 and MPEG-4. The appsink holds two frames and then blocks the decoder
    (no drops: a file is processed whole), unlike the live sources' one-frame drop.
    """
    return (f"filesrc location={gst_quote(path)} ! parsebin ! nvv4l2decoder ! {_NV_TO_BGRX} ! "
            f"videoconvert ! video/x-raw,format=BGR ! appsink max-buffers=2 drop=false sync=false")


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
    if options.decoder == "hardware" or (jetson and options.decoder == "auto"):
        decode = f"nvv4l2decoder ! {_NV_TO_BGRX} ! videoconvert"
    else:
        decode = f"avdec_{codec} ! videoconvert"
    # protocols=tcp: RTP interleaved in the RTSP connection, for a camera behind NAT or a firewall
    # that drops the UDP ports (rtspsrc's "protocols" flags: udp, udp-mcast, tcp).
    transport = f" protocols={options.transport}" if options.transport != "auto" else ""
    return (
        f"{rtspsrc(url)} latency={options.latency_ms}{transport} ! "
        f"rtp{codec}depay ! {codec}parse ! {decode} ! video/x-raw,format=BGR ! {_APPSINK}"
    )


def rtspsrc(url: str) -> str:
    """`rtspsrc` for `url`, the credentials as quoted properties rather than inside the location."""
    parsed = parse_rtsp_url(url)
    element = f"rtspsrc location={gst_quote(parsed.location)}"
    if parsed.user is not None:
        element += f" user-id={gst_quote(parsed.user)} user-pw={gst_quote(parsed.password or '')}"
    return element


def _fraction(rate: float) -> str:
    """GStreamer wants framerates as fractions: 30 -> 30/1, 29.97 -> 2997/100."""
    if float(rate).is_integer():
        return f"{int(rate)}/1"
    return f"{round(rate * 100)}/100"
