"""Video encoding: which codec and encoder, and the GStreamer pipelines that write files and RTSP.

`--codec h264` (the default wherever OpenCV has GStreamer) and `h265` encode with NVIDIA's
hardware encoder on a Jetson that has one (`nvv4l2h264enc`), else in software (`x264enc`,
`x265enc`). `mp4v` is OpenCV's own MPEG-4 Part 2 writer, the fallback of a plain OpenCV
(the PyPI wheel) with no H.264 encoder at all.

Every software encoder is preceded by `video/x-raw,format=I420`: from BGR input `videoconvert`
would otherwise negotiate Y444 and x264 would write High 4:4:4, which browsers, NVRs and
Jetson's own `nvv4l2decoder` cannot play.
"""

from __future__ import annotations

from pathlib import Path

from uda_adapt.common.errors import UserError
from uda_adapt.runtime import jetson

CODECS = ("h264", "h265", "mp4v")
STREAM_CODECS = ("h264", "h265")           # what RTSP carries
KEYFRAME_INTERVAL = 30                     # frames: a client joining mid-stream waits at most this long

# Container element by file suffix for GStreamer-encoded files.
MUXERS = {".mp4": "mp4mux", ".m4v": "mp4mux", ".mov": "qtmux", ".mkv": "matroskamux", ".avi": "avimux"}
# OpenCV's own writer (no GStreamer): MPEG-4 Part 2, or Motion JPEG in an .avi.
FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}

_SOFTWARE = {"h264": "x264enc", "h265": "x265enc"}
_HARDWARE = {"h264": "nvv4l2h264enc", "h265": "nvv4l2h265enc"}
# Where each software encoder comes from on Debian/Ubuntu/JetPack, for the error that names it.
ENCODER_PACKAGES = {"x264enc": "gstreamer1.0-plugins-ugly", "x265enc": "gstreamer1.0-plugins-bad"}


def resolve_codec(codec: str | None, gstreamer: bool) -> str:
    """The codec to write with: `codec`, or (None) H.264 where GStreamer is, else mp4v."""
    if codec is None:
        return "h264" if gstreamer else "mp4v"
    if codec not in CODECS:
        raise UserError(f"--codec {codec!r} is unknown; valid: {', '.join(CODECS)}")
    if codec != "mp4v" and not gstreamer:
        raise UserError(f"--codec {codec} needs OpenCV built with GStreamer (the PyPI wheel has no {codec.upper()} encoder); "
                        "use --codec mp4v, or JetPack's nvidia-opencv (Debian: python3-opencv; see samples/jetson.md)")
    return codec


def has_hardware_encoder(jetson: bool, model: str = "", nvenc_device: bool = True) -> bool:
    """NVENC on a Jetson, except the Orin Nano, which has none (there jetson-utils encodes in software too)."""
    return jetson and nvenc_device and "orin nano" not in model.lower()


def detect_hardware_encoder() -> bool:
    """`has_hardware_encoder` for this machine (L4T, device-tree model, /dev/v4l2-nvenc)."""
    return has_hardware_encoder(jetson.is_jetson(), jetson.device_model(), jetson.has_nvenc_device())


# The Orin Nano has no NVENC (jetson-utils encodes in software there too): x265enc at
# speed-preset=ultrafast on its six Cortex-A78AE cores does not keep 1080p in real time next to the
# network, while x264enc does. Above this many pixels software H.265 on a Jetson is refused.
SOFTWARE_H265_MAX_PIXELS = 1280 * 720


def check_software_h265(codec: str, hardware: bool, jetson: bool, width: int, height: int) -> str | None:
    """Refuse software H.265 above 720p on a Jetson without NVENC; below, a warning to print (else None)."""
    if codec != "h265" or hardware or not jetson:
        return None
    if width * height > SOFTWARE_H265_MAX_PIXELS:
        raise UserError(f"--codec h265 at {width}x{height}: this Jetson has no hardware encoder (NVENC) and software H.265 "
                        "cannot keep real time above 1280x720; use --codec h264, or a smaller --input-width/--input-height")
    return ("--codec h265 encodes in software on this Jetson (no NVENC), which takes far more CPU than H.264; "
            "--codec h264 leaves more of it to the network")


def encoder_fits(codec: str, hardware: bool, width: int, height: int, log=None) -> None:
    """`check_software_h265` for this machine at the output's size; the warning goes to `log`."""
    warning = check_software_h265(codec, hardware, jetson.is_jetson(), width, height)
    if warning is not None and log is not None:
        log(warning)


def encoder_element(codec: str, hardware: bool) -> str:
    """`nvv4l2h264enc` / `nvv4l2h265enc` with NVENC, else `x264enc` / `x265enc`."""
    if codec not in STREAM_CODECS:
        raise UserError(f"codec {codec!r} has no GStreamer encoder here; valid: {', '.join(STREAM_CODECS)}")
    return (_HARDWARE if hardware else _SOFTWARE)[codec]


def encode_chain(codec: str, hardware: bool, bitrate: int) -> str:
    """From BGR `video/x-raw` to an encoded `codec` elementary stream (before the parser)."""
    encoder = encoder_element(codec, hardware)
    if hardware:
        return ("videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
                f"{encoder} bitrate={bitrate} insert-sps-pps=1 idrinterval={KEYFRAME_INTERVAL}")
    # bitrate in kbit/s for both x264enc and x265enc; ultrafast: a Jetson's CPU keeps up at 1080p.
    options = f"bitrate={max(bitrate // 1000, 1)} tune=zerolatency speed-preset=ultrafast key-int-max={KEYFRAME_INTERVAL}"
    # The I420 caps pin 4:2:0 (see the module docstring).
    return f"videoconvert ! video/x-raw,format=I420 ! {encoder} {options}"


def file_pipeline(path: str, codec: str, hardware: bool, bitrate: int) -> str:
    """OpenCV `VideoWriter` pipeline: BGR frames from appsrc into a `codec` file at `path`."""
    suffix = Path(path).suffix.lower()
    try:
        mux = MUXERS[suffix]
    except KeyError:
        raise UserError(f"output {path}: cannot write {codec} into {suffix or 'a file without a suffix'}; "
                        f"use one of {', '.join(MUXERS)}") from None
    if codec == "h265" and mux == "avimux":
        raise UserError(f"output {path}: an .avi file cannot hold H.265; use .mp4 or .mkv, or --codec h264")
    return (f"appsrc ! {encode_chain(codec, hardware, bitrate)} ! {codec}parse ! {mux} ! "
            f"filesink location={gst_quote(path)}")


def rtsp_push_pipeline(location: str, user: str | None, password: str | None, codec: str, hardware: bool, bitrate: int) -> str:
    """Encode BGR frames and push them to an RTSP server (e.g. mediamtx) at `location`."""
    credentials = ""
    if user is not None:
        credentials = f" user-id={gst_quote(user)} user-pw={gst_quote(password or '')}"
    return (f"appsrc ! {encode_chain(codec, hardware, bitrate)} ! {codec}parse ! "
            f"rtspclientsink location={gst_quote(location)}{credentials}")


def gst_quote(value: str) -> str:
    """A property value for `gst_parse_launch`: double-quoted, with `\\` and `"` escaped.

    Unquoted, a space or `!` in a path or password would split the pipeline description.
    """
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
