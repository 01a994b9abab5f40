import pytest

from common.errors import UserError
from runtime.uri import (
    CaptureOptions,
    csi_pipeline,
    h264_encoder,
    parse_input,
    parse_output,
    rtsp_output_pipeline,
    rtsp_pipeline,
    rtsp_pipelines,
    v4l2_pipeline,
)


@pytest.mark.parametrize(
    ("uri", "kind", "location", "live"),
    [
        ("csi://0", "csi", "0", True),
        ("v4l2:///dev/video1", "v4l2", "/dev/video1", True),
        ("/dev/video2", "v4l2", "/dev/video2", True),
        ("0", "v4l2", "/dev/video0", True),
        ("rtsp://user:pw@cam.local:554/stream", "rtsp", "rtsp://user:pw@cam.local:554/stream", True),
        ("file://clip.mp4", "file", "clip.mp4", False),
        ("clip.mp4", "file", "clip.mp4", False),
        ("frames/*.png", "images", "frames/*.png", False),
        ("frame.jpg", "images", "frame.jpg", False),
    ],
)
def test_parse_input(uri, kind, location, live):
    parsed = parse_input(uri)
    assert (parsed.kind, parsed.location, parsed.live) == (kind, location, live)


def test_parse_input_directory_is_images(tmp_path):
    assert parse_input(str(tmp_path)).kind == "images"


@pytest.mark.parametrize("uri", ["csi://front", "v4l2://video0", "ftp://x/y", "", "rtsp://"])
def test_bad_input_uri_is_a_user_error(uri):
    with pytest.raises(UserError):
        parse_input(uri)


@pytest.mark.parametrize(
    ("uri", "kind", "location"),
    [
        (None, "display", "0"),
        ("display://0", "display", "0"),
        ("out.mp4", "video", "out.mp4"),
        ("file://out.avi", "video", "out.avi"),
        ("out_%05d.png", "images", "out_%05d.png"),
        ("frame.png", "images", "frame_%05d.png"),
        ("rtsp://127.0.0.1:8554/seg", "rtsp", "rtsp://127.0.0.1:8554/seg"),
        ("null://", "null", ""),
    ],
)
def test_parse_output(uri, kind, location):
    parsed = parse_output(uri)
    assert (parsed.kind, parsed.location) == (kind, location)


@pytest.mark.parametrize("uri", ["out.xyz", "out_%05d", "smb://x"])
def test_bad_output_uri_is_a_user_error(uri):
    with pytest.raises(UserError):
        parse_output(uri)


def test_csi_pipeline_string():
    assert csi_pipeline(1, CaptureOptions(width=1920, height=1080, rate=29.97)) == (
        "nvarguscamerasrc sensor-id=1 ! "
        "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=2997/100,format=NV12 ! "
        "nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=1 max-buffers=1 sync=false"
    )


def test_v4l2_pipeline_strings():
    assert v4l2_pipeline("/dev/video0", CaptureOptions(width=640, height=480, rate=30)) == (
        "v4l2src device=/dev/video0 ! video/x-raw,width=640,height=480,framerate=30/1 ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false"
    )
    assert v4l2_pipeline("/dev/video0", CaptureOptions(codec="mjpeg")).startswith("v4l2src device=/dev/video0 ! image/jpeg ! jpegdec ! ")


def test_rtsp_pipeline_picks_the_decoder_by_platform():
    options = CaptureOptions(latency_ms=100)
    desktop = rtsp_pipeline("rtsp://cam/s", options, jetson=False)
    jetson = rtsp_pipeline("rtsp://cam/s", options, jetson=True)
    assert desktop == (
        "rtspsrc location=rtsp://cam/s latency=100 ! rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false"
    )
    assert "nvv4l2decoder ! nvvidconv" in jetson and "avdec" not in jetson
    assert "rtph265depay ! h265parse ! avdec_h265" in rtsp_pipeline("rtsp://cam/s", CaptureOptions(codec="h265"), jetson=False)


def test_rtsp_output_pipeline():
    assert "x264enc" in rtsp_output_pipeline("rtsp://h:8554/seg", 4_000_000, "x264enc")
    assert "nvv4l2h264enc bitrate=4000000" in rtsp_output_pipeline("rtsp://h:8554/seg", 4_000_000, "nvv4l2h264enc")


@pytest.mark.parametrize(("jetson", "model", "nvenc", "encoder"), [
    (True, "NVIDIA Jetson AGX Orin Developer Kit", True, "nvv4l2h264enc"),
    (True, "NVIDIA Jetson Orin NX Engineering Reference Developer Kit", True, "nvv4l2h264enc"),
    (True, "NVIDIA Jetson Orin Nano Developer Kit", True, "x264enc"),     # no NVENC on Orin Nano
    (True, "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", False, "x264enc"),
    (True, "some Jetson without the encoder node", False, "x264enc"),
    (False, "", False, "x264enc"),
])
def test_h264_encoder_falls_back_to_software_without_nvenc(jetson, model, nvenc, encoder):
    assert h264_encoder(jetson, model, nvenc) == encoder


def test_rtsp_input_tries_h264_then_h265():
    auto = rtsp_pipelines("rtsp://cam/s", CaptureOptions(), jetson=False)
    assert ["rtph264depay" in auto[0], "rtph265depay" in auto[1]] == [True, True]
    assert len(rtsp_pipelines("rtsp://cam/s", CaptureOptions(codec="h265"), jetson=True)) == 1
