import pytest

from uda_adapt.common.errors import UserError
from uda_adapt.runtime.encoders import encode_chain, encoder_element, file_pipeline, has_hardware_encoder, resolve_codec, rtsp_push_pipeline
from uda_adapt.runtime.uri import (
    CaptureOptions,
    csi_pipeline,
    parse_input,
    parse_output,
    parse_rtsp_url,
    redact_url,
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
        ("rtsp://user:pass@mediamtx.local:8554/seg", "rtsp", "rtsp://user:pass@mediamtx.local:8554/seg"),
        ("rtsp://@:8554/out", "rtsp-server", "rtsp://@:8554/out"),
        ("rtsp://@127.0.0.1:8555/out", "rtsp-server", "rtsp://@127.0.0.1:8555/out"),
        ("rtsp://0.0.0.0:8554/out", "rtsp-server", "rtsp://0.0.0.0:8554/out"),
        ("null://", "null", ""),
    ],
)
def test_parse_output(uri, kind, location):
    parsed = parse_output(uri)
    assert (parsed.kind, parsed.location) == (kind, location)


@pytest.mark.parametrize("uri", ["out.xyz", "out_%05d", "smb://x", "rtsp://u:p@:8554/out", "rtsp://host:port/x"])
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
        "v4l2src device=\"/dev/video0\" ! video/x-raw,width=640,height=480,framerate=30/1 ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false"
    )
    assert v4l2_pipeline("/dev/video0", CaptureOptions(codec="mjpeg")).startswith('v4l2src device="/dev/video0" ! image/jpeg ! jpegdec ! ')


def test_rtsp_pipeline_picks_the_decoder_by_platform():
    options = CaptureOptions(latency_ms=100)
    desktop = rtsp_pipeline("rtsp://cam/s", options, jetson=False)
    jetson = rtsp_pipeline("rtsp://cam/s", options, jetson=True)
    assert desktop == (
        'rtspsrc location="rtsp://cam:554/s" latency=100 ! rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! '
        "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false"
    )
    assert "nvv4l2decoder ! nvvidconv" in jetson and "avdec" not in jetson
    assert "rtph265depay ! h265parse ! avdec_h265" in rtsp_pipeline("rtsp://cam/s", CaptureOptions(codec="h265"), jetson=False)


@pytest.mark.parametrize(("url", "host", "port", "path", "user", "password", "serve"), [
    ("rtsp://cam.local/stream", "cam.local", 554, "/stream", None, None, False),
    ("rtsp://admin:secret@10.0.0.5:8554/live?ch=1", "10.0.0.5", 8554, "/live?ch=1", "admin", "secret", False),
    ('rtsp://admin:pa ss!"q\\@cam/s', "cam", 554, "/s", "admin", 'pa ss!"q\\', False),
    ("rtsp://admin:p%40ss@cam/s", "cam", 554, "/s", "admin", "p@ss", False),
    ("rtsp://admin:a/b@cam/s", "cam", 554, "/s", "admin", "a/b", False),
    ("rtsp://@:8555/out", "0.0.0.0", 8555, "/out", None, None, True),
    ("rtsp://@127.0.0.1/out", "127.0.0.1", 8554, "/out", None, None, True),
    ("rtsp://[::1]:8554/x", "::1", 8554, "/x", None, None, False),
])
def test_rtsp_urls_split_credentials_from_the_location(url, host, port, path, user, password, serve):
    parsed = parse_rtsp_url(url)
    assert (parsed.host, parsed.port, parsed.path, parsed.user, parsed.password, parsed.serve) == (host, port, path, user, password, serve)
    assert "@" not in parsed.location or not user


def test_passwords_stay_out_of_messages_and_pipeline_locations():
    url = 'rtsp://admin:s3cr et!"@cam.local:554/s'
    assert redact_url(url) == "rtsp://admin:***@cam.local:554/s"
    pipeline = rtsp_pipeline(url, CaptureOptions(), jetson=False)
    assert pipeline.startswith('rtspsrc location="rtsp://cam.local:554/s" user-id="admin" user-pw="s3cr et!\\"" latency=200 ! ')
    assert parse_rtsp_url(url).url_with_credentials() == "rtsp://admin:s3cr%20et%21%22@cam.local:554/s"
    push = rtsp_push_pipeline("rtsp://srv:8554/seg", "u", "p w", "h264", False, 4_000_000)
    assert push.endswith('rtspclientsink location="rtsp://srv:8554/seg" user-id="u" user-pw="p w"')


def test_software_encoders_are_pinned_to_4_2_0():
    # Without the caps, videoconvert offers x264enc Y444 from BGR: High 4:4:4 that few players decode.
    for codec in ("h264", "h265"):
        chain = encode_chain(codec, hardware=False, bitrate=4_000_000)
        assert f"videoconvert ! video/x-raw,format=I420 ! {encoder_element(codec, False)} " in chain
    assert "nvv4l2h264enc bitrate=4000000" in encode_chain("h264", hardware=True, bitrate=4_000_000)
    assert file_pipeline("/v/a b.mp4", "h264", False, 2_000_000) == (
        "appsrc ! videoconvert ! video/x-raw,format=I420 ! x264enc bitrate=2000 tune=zerolatency speed-preset=ultrafast "
        'key-int-max=30 ! h264parse ! mp4mux ! filesink location="/v/a b.mp4"')
    assert "! h265parse ! matroskamux !" in file_pipeline("a.mkv", "h265", False, 4_000_000)
    with pytest.raises(UserError, match="an .avi file cannot hold H.265"):
        file_pipeline("a.avi", "h265", False, 4_000_000)


def test_codec_defaults_to_h264_with_gstreamer_and_mp4v_without():
    assert resolve_codec(None, gstreamer=True) == "h264"
    assert resolve_codec(None, gstreamer=False) == "mp4v"
    assert resolve_codec("mp4v", gstreamer=True) == "mp4v"
    with pytest.raises(UserError, match="--codec h265 needs OpenCV built with GStreamer.*--codec mp4v"):
        resolve_codec("h265", gstreamer=False)


def test_an_unknown_flip_lists_the_valid_ones():
    with pytest.raises(UserError, match="--input-flip 'upside-down' is unknown; valid: none, horizontal, vertical, rotate-180"):
        CaptureOptions(flip="upside-down")


@pytest.mark.parametrize(("flip", "method"), [("none", 0), ("rotate-180", 2), ("horizontal", 4), ("vertical", 6)])
def test_csi_flip_is_done_by_nvvidconv(flip, method):
    assert f"nvvidconv flip-method={method} !" in csi_pipeline(0, CaptureOptions(flip=flip))


@pytest.mark.parametrize(("jetson", "model", "nvenc", "encoder"), [
    (True, "NVIDIA Jetson AGX Orin Developer Kit", True, "nvv4l2h264enc"),
    (True, "NVIDIA Jetson Orin NX Engineering Reference Developer Kit", True, "nvv4l2h264enc"),
    (True, "NVIDIA Jetson Orin Nano Developer Kit", True, "x264enc"),     # no NVENC on Orin Nano
    (True, "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", False, "x264enc"),
    (True, "some Jetson without the encoder node", False, "x264enc"),
    (False, "", False, "x264enc"),
])
def test_h264_encoder_falls_back_to_software_without_nvenc(jetson, model, nvenc, encoder):
    assert encoder_element("h264", has_hardware_encoder(jetson, model, nvenc)) == encoder


def test_rtsp_input_tries_h264_then_h265():
    auto = rtsp_pipelines("rtsp://cam/s", CaptureOptions(), jetson=False)
    assert ["rtph264depay" in auto[0], "rtph265depay" in auto[1]] == [True, True]
    assert len(rtsp_pipelines("rtsp://cam/s", CaptureOptions(codec="h265"), jetson=True)) == 1


@pytest.mark.parametrize("url", ["rtsp://@:99999/out", "rtsp://@:0/out", "rtsp://cam.local:70000/stream"])
def test_an_rtsp_port_outside_1_to_65535_is_one_line(url):
    from uda_adapt.common.errors import UserError

    with pytest.raises(UserError, match=r"has port \d+; a port is 1 to 65535"):
        parse_output(url) if "@:" in url else parse_input(url)
    assert parse_rtsp_url("rtsp://@:65535/out").port == 65535 and parse_rtsp_url("rtsp://@:1/out").port == 1
