"""Jetson input and output choices: software H.265 without NVENC, NVDEC decoding, RTSP over TCP.

Pipeline strings only: nvv4l2decoder, nvvidconv and NVENC exist only on a Jetson, so these
pipelines cannot run (or even parse) here; test_gstreamer.py parses every pipeline that uses
none of them. What is checked is the choice of elements and the one-line refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

import uda_adapt.runtime.jetson as jetson
import uda_adapt.runtime.sources as sources
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.encoders import check_software_h265
from uda_adapt.runtime.uri import CaptureOptions, parse_input, rtsp_pipeline, v4l2_pipeline


# --- software H.265 on a Jetson without NVENC (Orin Nano) -------------------------------------------
def test_software_h265_on_a_jetson_warns_at_720p_and_is_refused_above():
    warning = check_software_h265("h265", hardware=False, jetson=True, width=1280, height=720)
    assert warning is not None and "--codec h264" in warning
    with pytest.raises(UserError, match=r"--codec h265 at 1920x1080: this Jetson has no hardware encoder .* use --codec h264"):
        check_software_h265("h265", hardware=False, jetson=True, width=1920, height=1080)
    # NVENC, H.264, or a desktop (x265 on a desktop CPU keeps up): nothing to say.
    assert check_software_h265("h265", hardware=True, jetson=True, width=1920, height=1080) is None
    assert check_software_h265("h264", hardware=False, jetson=True, width=1920, height=1080) is None
    assert check_software_h265("h265", hardware=False, jetson=False, width=1920, height=1080) is None


def test_a_1080p_h265_file_on_an_orin_nano_is_refused_before_any_encoder_starts(tmp_path, monkeypatch):
    from uda_adapt.runtime.sinks import VideoFileSink

    monkeypatch.setattr(jetson, "is_jetson", lambda: True)
    started = []
    monkeypatch.setattr("uda_adapt.runtime.sinks.cv2.VideoWriter", lambda *a, **k: started.append(a))
    sink = VideoFileSink(tmp_path / "out.mp4", 30.0, "h265", gstreamer=True, hardware=False)
    with pytest.raises(UserError, match="use --codec h264"):
        sink.write(np.zeros((1080, 1920, 3), np.uint8))
    assert started == [] and list(tmp_path.iterdir()) == []
    messages = []
    sink = VideoFileSink(tmp_path / "small.mp4", 30.0, "h265", gstreamer=True, hardware=False, log=messages.append)
    with pytest.raises(AttributeError):          # the fake writer above: the check passed and an encoder was started
        sink.write(np.zeros((720, 1280, 3), np.uint8))
    assert len(started) == 1 and "encodes in software on this Jetson" in messages[0]


# --- NVDEC for files, RTSP and MJPEG; RTSP over TCP ---------------------------------------------------
def _source(uri: str, **options) -> sources.OpenCVSource:
    return sources.OpenCVSource(parse_input(uri), CaptureOptions(**options), gstreamer=True, jetson=True, probe=lambda url: None)


def test_hardware_decoding_of_a_file_uses_nvdec_and_keeps_every_frame(tmp_path):
    clip = tmp_path / "a b.mp4"
    target, api, _ = _source(str(clip), decoder="hardware").capture_args()
    assert api == sources.cv2.CAP_GSTREAMER
    assert target.startswith(f'filesrc location="{clip}" ! parsebin ! nvv4l2decoder ! nvvidconv')
    assert "drop=false" in target and "drop=1" not in target       # a file is processed whole
    target, api, _ = _source(str(clip)).capture_args()
    assert (target, api) == (str(clip), sources.cv2.CAP_ANY)        # auto: FFmpeg on the CPU, as before


def test_hardware_decoding_of_an_mjpeg_camera_parses_whole_jpegs_for_nvdec():
    pipeline = v4l2_pipeline("/dev/video0", CaptureOptions(codec="mjpeg", decoder="hardware", width=1280, height=720))
    assert "image/jpeg,width=1280,height=720 ! jpegparse ! nvv4l2decoder mjpeg=1 ! nvvidconv" in pipeline
    assert "jpegdec" not in v4l2_pipeline("/dev/video0", CaptureOptions(codec="mjpeg", decoder="hardware"))
    assert "! jpegdec !" in v4l2_pipeline("/dev/video0", CaptureOptions(codec="mjpeg"))


def test_rtsp_decoder_follows_the_option():
    url = "rtsp://cam.local/s"
    assert "nvv4l2decoder" in rtsp_pipeline(url, CaptureOptions(), jetson=True)
    assert "avdec_h264" in rtsp_pipeline(url, CaptureOptions(decoder="software"), jetson=True)
    assert "avdec_h264" in rtsp_pipeline(url, CaptureOptions(), jetson=False)


def test_hardware_decoding_off_a_jetson_is_one_line(tmp_path):
    desktop = sources.OpenCVSource(parse_input(str(tmp_path / "a.mp4")), CaptureOptions(decoder="hardware"), gstreamer=True,
                                   jetson=False)
    with pytest.raises(UserError, match="--input-decoder hardware needs a Jetson"):
        desktop.capture_args()
    no_gst = sources.OpenCVSource(parse_input("rtsp://cam.local/s"), CaptureOptions(decoder="hardware"), gstreamer=False,
                                  jetson=True)
    with pytest.raises(UserError, match="GStreamer"):
        no_gst.capture_args()


def test_rtsp_over_tcp_for_gstreamer_and_ffmpeg(monkeypatch):
    url = "rtsp://cam.local/s"
    assert " protocols=tcp ! " in rtsp_pipeline(url, CaptureOptions(transport="tcp"), jetson=False)
    assert "protocols" not in rtsp_pipeline(url, CaptureOptions(), jetson=False)
    # setenv first, so that the value this test makes is undone even where the variable was unset.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    ffmpeg = sources.OpenCVSource(parse_input(url), CaptureOptions(transport="tcp"), gstreamer=False, jetson=False)
    ffmpeg.capture_args()
    assert sources.os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"].endswith("|rtsp_transport;tcp")
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp")     # the user's own: kept
    ffmpeg.capture_args()
    assert sources.os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp"
    with pytest.raises(UserError, match="--input-transport 'quic' is unknown"):
        CaptureOptions(transport="quic")


def test_the_cli_passes_transport_and_decoder_on(tmp_path, monkeypatch):
    from uda_adapt.cli.main import main
    import uda_adapt.runtime.stream as stream

    seen = []
    monkeypatch.setattr(stream, "run_stream", lambda config, log: seen.append(config) or (_ for _ in ()).throw(UserError("stop")))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    main(["run", str(model), "rtsp://cam.local/s", "null://", "--input-transport", "tcp", "--input-decoder", "software",
          "--give-up-after", "30"])
    assert seen and (seen[0].capture.transport, seen[0].capture.decoder) == ("tcp", "software")
    assert seen[0].backoff.give_up_after == 30       # the reconnect limit data capture has too
