"""GStreamer for real, in a JetPack-like environment (Debian's python3-opencv, PyGObject, gst-rtsp-server, no torch).

Every pipeline the runtime builds is parsed by `Gst.parse_launch` (NVIDIA's own elements apart),
and the software ones run: H.264/H.265 files, the built-in RTSP server read back on 127.0.0.1,
RTSP input that loses its server and reconnects, a push to an RTSP server. Run with

    build/venv-jetson/bin/python -m pytest -m gstreamer tests/runtime/test_gstreamer.py tests/runtime/test_display_window.py

in a venv made with --system-site-packages holding `pip install '.[jetson]'` (CONTRIBUTING.md says how).
"""

from __future__ import annotations

import contextlib

import importlib.util
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLIP_FRAMES, read_all_frames, street_frame
from gst_env import Process, free_port, gst, require_gstreamer, uda_command, uda_env

from uda_adapt.common.errors import UserError
from uda_adapt.runtime.encoders import MUXERS, file_pipeline, rtsp_push_pipeline
from uda_adapt.runtime.rtsp_server import server_launch
from uda_adapt.runtime.sinks import VideoFileSink
from uda_adapt.runtime.sources import OpenCVSource
from uda_adapt.runtime.uri import CaptureOptions, csi_pipeline, file_decode_pipeline, parse_input, rtsp_pipelines, v4l2_pipeline

pytestmark = [pytest.mark.gstreamer, pytest.mark.timeout(180)]
require_gstreamer(module_level=True)

PASSWORD = 'p a"s!s\\word'       # a space, a quote, a '!' and a backslash


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """A 30-frame MJPEG clip (any OpenCV writes MJPEG; the test reads nothing it did not write)."""
    path = tmp_path_factory.mktemp("gst_clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 72))
    for i in range(CLIP_FRAMES):
        writer.write(street_frame(i))
    writer.release()
    return str(path)


def ffprobe(path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=codec_name,pix_fmt,profile,nb_read_frames", "-of", "json", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["streams"][0]


# --- the environment ------------------------------------------------------------------------------

def test_opencv_is_the_system_build_with_gstreamer_not_a_wheel():
    from importlib import metadata

    wheels = [d.metadata["Name"] for d in metadata.distributions() if (d.metadata["Name"] or "").lower().startswith("opencv")]
    assert not wheels, f"an OpenCV wheel shadows the system build: {wheels}"
    assert not cv2.__file__.startswith(sys.prefix + "/lib"), f"cv2 comes from the venv: {cv2.__file__}"
    assert "GStreamer:                   YES" in cv2.getBuildInformation()


def test_torch_is_absent():
    assert importlib.util.find_spec("torch") is None, "the [jetson] install must run without torch"


def test_the_installed_console_script_runs_a_model(tiny_onnx, clip, tmp_path):
    script = Path(sys.executable).parent / "uda-adapt"
    if not script.exists():
        pytest.skip("uda-adapt is not installed in this venv (pip install '.[jetson]')")
    report = tmp_path / "report.json"
    result = subprocess.run([str(script), "run", tiny_onnx, clip, "null://", "--json", str(report)],
                            capture_output=True, text=True, timeout=120, env=uda_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(report.read_text())["frames"] == CLIP_FRAMES


# --- every pipeline parses ------------------------------------------------------------------------

def _pipelines() -> dict[str, str]:
    options = CaptureOptions(width=640, height=480, rate=29.97, latency_ms=50)
    pipelines = {
        "csi": csi_pipeline(0, CaptureOptions(flip="rotate-180")),
        "v4l2 raw": v4l2_pipeline("/dev/video0", options),
        "v4l2 mjpeg": v4l2_pipeline("/dev/video0", CaptureOptions(codec="mjpeg", width=1280, height=720)),
        "rtsp server h264": server_launch(128, 72, 30, "h264", False, 4_000_000).strip("() "),
        "rtsp server h265": server_launch(128, 72, 30, "h265", False, 4_000_000).strip("() "),
        "rtsp server nvenc": server_launch(128, 72, 30, "h264", True, 4_000_000).strip("() "),
        "rtsp push": rtsp_push_pipeline("rtsp://srv:8554/seg", "admin", PASSWORD, "h264", False, 4_000_000),
        "rtsp push nvenc": rtsp_push_pipeline("rtsp://srv:8554/seg", None, None, "h264", True, 4_000_000),
    }
    for jetson in (False, True):
        for i, pipeline in enumerate(rtsp_pipelines(f"rtsp://admin:{PASSWORD}@cam.local/s", options, jetson)):
            pipelines[f"rtsp input {i} jetson={jetson}"] = pipeline
    pipelines["rtsp input over tcp"] = rtsp_pipelines("rtsp://cam.local/s", CaptureOptions(transport="tcp"), False)[0]
    # NVDEC pipelines (skipped below off a Jetson: their elements exist only there).
    pipelines["file nvdec"] = file_decode_pipeline("/tmp/a b!.mp4")
    pipelines["mjpeg nvdec"] = v4l2_pipeline("/dev/video0", CaptureOptions(codec="mjpeg", decoder="hardware"))
    for codec in ("h264", "h265"):
        for suffix in MUXERS if codec == "h264" else (".mp4", ".mkv", ".mov"):
            pipelines[f"file {codec} {suffix}"] = file_pipeline(f"/tmp/a b!{suffix}", codec, False, 4_000_000)
        pipelines[f"file {codec} nvenc"] = file_pipeline("/tmp/x.mp4", codec, True, 4_000_000)
    return pipelines


NVIDIA_ELEMENTS = ("nvarguscamerasrc", "nvvidconv", "nvv4l2decoder", "nvv4l2h264enc", "nvv4l2h265enc")


@pytest.mark.parametrize("name", list(_pipelines()))
def test_every_pipeline_the_runtime_builds_parses(name):
    Gst = gst()
    pipeline = _pipelines()[name]
    if any(element in pipeline for element in NVIDIA_ELEMENTS):
        pytest.skip("NVIDIA's elements exist only on a Jetson")
    element = Gst.parse_launch(pipeline)
    element.set_state(Gst.State.NULL)


def _elements(bin_):
    found, iterator, ok = [], bin_.iterate_recurse(), gst().IteratorResult.OK
    while True:
        result, element = iterator.next()
        if result != ok:
            return found
        found.append(element)


def test_rtsp_credentials_reach_rtspsrc_intact():
    Gst = gst()
    pipeline = Gst.parse_launch(rtsp_pipelines(f"rtsp://admin:{PASSWORD}@cam.local:8554/s", CaptureOptions(), False)[0])
    source = next(e for e in _elements(pipeline) if e.get_factory().get_name() == "rtspsrc")
    assert (source.get_property("location"), source.get_property("user-id"), source.get_property("user-pw")) == (
        "rtsp://cam.local:8554/s", "admin", PASSWORD)
    pipeline = Gst.parse_launch(file_pipeline('/tmp/a "b" !c.mp4', "h264", False, 1_000_000))
    sink = next(e for e in _elements(pipeline) if e.get_factory().get_name() == "filesink")
    assert sink.get_property("location") == '/tmp/a "b" !c.mp4'


# --- the software pipelines run -------------------------------------------------------------------

@pytest.mark.parametrize(("codec", "suffix", "ffprobe_codec"), [("h264", ".mp4", "h264"), ("h264", ".mkv", "h264"), ("h265", ".mp4", "hevc")])
def test_video_files_are_4_2_0_and_hold_every_frame(codec, suffix, ffprobe_codec, tmp_path):
    path = tmp_path / f"out dir !/a {codec}{suffix}"
    with VideoFileSink(path, fps=10, codec=codec, hardware=False) as sink:
        for i in range(12):
            sink.write(street_frame(i))
    stream = ffprobe(path)
    # yuv420p: the High 4:4:4 that BGR input would otherwise negotiate plays almost nowhere.
    assert (stream["codec_name"], stream["pix_fmt"], int(stream["nb_read_frames"])) == (ffprobe_codec, "yuv420p", 12)
    frames = read_all_frames(path)
    assert len(frames) == 12
    assert np.abs(frames[5].astype(int) - street_frame(5).astype(int)).mean() < 8      # the picture, not just a file


def test_run_writes_h264_by_default(tiny_onnx, clip, tmp_path):
    out = tmp_path / "overlay.mp4"
    result = subprocess.run(uda_command("run", tiny_onnx, clip, out), capture_output=True, text=True, timeout=120, env=uda_env())
    assert result.returncode == 0, result.stderr[-2000:]
    stream = ffprobe(out)
    assert (stream["codec_name"], stream["pix_fmt"], int(stream["nb_read_frames"])) == ("h264", "yuv420p", CLIP_FRAMES)


def test_a_missing_encoder_is_named(tmp_path, monkeypatch):
    import uda_adapt.runtime.sinks
    from uda_adapt import runtime

    monkeypatch.setattr(runtime.sinks, "file_pipeline", lambda *a: "appsrc ! videoconvert ! no_such_x264enc ! fakesink")
    with pytest.raises(UserError, match=r"is x264enc installed \(gstreamer1.0-plugins-ugly\)\? Or use --codec mp4v"):
        with VideoFileSink(tmp_path / "a.mp4", fps=10, codec="h264", hardware=False) as sink:
            sink.write(street_frame(0))
    assert not list(tmp_path.iterdir())


def _mask_frames(tiny_onnx, clip, folder) -> list[np.ndarray]:
    """The frames `uda-adapt run` renders for `clip`, as PNGs (lossless), to compare a stream with."""
    args = ("run", tiny_onnx, clip, folder / "f_%03d.png", "--visualize", "mask", "--no-legend", "--no-fps-overlay")
    result = subprocess.run(uda_command(*args), capture_output=True, text=True, timeout=120, env=uda_env())
    assert result.returncode == 0, result.stderr[-2000:]
    return [cv2.imread(str(p)) for p in sorted(folder.glob("f_*.png"))]


def _serve(tiny_onnx, clip, port, *extra) -> Process:
    """`uda-adapt run` serving the clip's masks at rtsp://@:PORT/out, in a loop at 10 FPS."""
    return Process("run", tiny_onnx, clip, f"rtsp://@:{port}/out", "--input-loop", "-1", "--input-rate", "10",
                   "--visualize", "mask", "--no-legend", "--no-fps-overlay", *extra)


def _open_reader(url: str, timeout: float = 30.0) -> OpenCVSource:
    source = OpenCVSource(parse_input(url), CaptureOptions(latency_ms=50))
    deadline = time.monotonic() + timeout
    while True:
        try:
            source.open()
            return source
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_frames_round_trip_file_run_rtsp_server_reader(tiny_onnx, clip, tmp_path):
    expected = _mask_frames(tiny_onnx, clip, tmp_path)
    port = free_port()
    with _serve(tiny_onnx, clip, port) as server:
        line = server.lines[server.wait_for(f":{port}/out on every interface", timeout=60)]
        assert line.startswith("uda-adapt: serving rtsp://") and line.endswith("(h264, software encoder)")
        reader = _open_reader(f"rtsp://127.0.0.1:{port}/out")
        try:
            got = [image for ok, image in (reader.read() for _ in range(15)) if ok]
        finally:
            reader.close()
        assert len(got) == 15
        for image in got:
            assert image.shape == expected[0].shape
            # Lossy H.264: each received frame is close to one of the rendered masks.
            nearest = min(np.abs(image.astype(int) - e.astype(int)).mean() for e in expected)
            assert nearest < 6, f"a received frame is {nearest:.1f} grey levels from every rendered one"
        # A client after the first one left gets the stream too (the shared media is set up again).
        reader = _open_reader(f"rtsp://127.0.0.1:{port}/out")
        try:
            assert all(reader.read()[0] for _ in range(5))
        finally:
            reader.close()
        assert server.stop() == 130          # SIGTERM is the CLI's Ctrl-C


def test_serving_on_a_port_in_use_is_one_line(tiny_onnx, clip):
    port = free_port()
    with _serve(tiny_onnx, clip, port) as first:
        first.wait_for("serving", timeout=60)
        with Process("run", tiny_onnx, clip, f"rtsp://@:{port}/out", "--max-frames", "3") as second:
            assert second.wait(60) == 1
            assert f"port {port} on 0.0.0.0 is in use" in second.lines[-1]


@pytest.mark.parametrize("mode", ["--latest", "--buffered"])
def test_rtsp_input_reconnects_after_its_server_restarts(mode, tiny_onnx, clip, tmp_path):
    port, report = free_port(), tmp_path / "report.json"
    with _serve(tiny_onnx, clip, port) as server:
        server.wait_for("serving", timeout=60)      # the first open must find the stream; later ones retry
        with Process("run", tiny_onnx, f"rtsp://127.0.0.1:{port}/out", "null://", mode, "--max-frames", "60",
                     "--json", report) as reader:
            running = reader.wait_for("running rtsp://", timeout=60)
            assert ("(latest frame)" if mode == "--latest" else "(every frame)") in reader.lines[running]
            time.sleep(2.0)                        # some frames through the first connection
            assert server.stop() == 130
            lost = reader.wait_for("lost; reconnecting", timeout=30)
            with _serve(tiny_onnx, clip, port) as restarted:
                try:
                    reader.wait_for("reconnected", timeout=60, after=lost)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\nthe restarted server:\n{restarted.stderr[-2000:]}") from None
                assert reader.wait(90) == 0, reader.stderr[-3000:]
                restarted.stop()
    result = json.loads(report.read_text())
    assert result["frames"] == 60 and result["reconnects"] >= 1


@contextlib.contextmanager
def _recording_server_with_a_password(tmp_path):
    """A recording gst-rtsp-server on 127.0.0.1 that checks the password (RTSPAuth, Basic) and
    writes what it is sent to an H.264 file; yields (port, recorded file)."""
    import gi

    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, GstRtspServer

    Gst = gst()
    port, recorded = free_port(), tmp_path / "recorded.mkv"
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    factory.set_launch(f'( rtph264depay name=depay0 ! h264parse ! matroskamux ! filesink location="{recorded}" )')
    factory.set_latency(50)
    # Only "admin" with PASSWORD gets the role that may publish here; anyone else is refused (401).
    auth, token = GstRtspServer.RTSPAuth(), GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "camera")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic("admin", PASSWORD), token)
    server.set_auth(auth)
    factory.add_role_from_structure(Gst.Structure.new_from_string(
        "camera, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
    server.get_mount_points().add_factory("/in", factory)
    context = GLib.MainContext.new()
    server.attach(context)
    loop = GLib.MainLoop.new(context, False)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield port, recorded
    finally:
        loop.quit()
        thread.join(5)


def test_push_to_an_rtsp_server_with_a_password(tiny_onnx, clip, tmp_path):
    """rtspclientsink -> the password-checking server -> an H.264 file: a password full of quotes gets in."""
    with _recording_server_with_a_password(tmp_path) as (port, recorded):
        result = subprocess.run(uda_command("run", tiny_onnx, clip, f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/in"),
                                capture_output=True, text=True, timeout=120, env=uda_env())
        assert result.returncode == 0, result.stderr[-2000:]
        assert PASSWORD not in result.stderr
    deadline = time.monotonic() + 10
    while not (recorded.exists() and recorded.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    stream = ffprobe(recorded)
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p" and int(stream["nb_read_frames"]) > CLIP_FRAMES // 2


@pytest.mark.xfail(strict=False, reason=(
    "known defect: OpenCV's GStreamer writer can report itself open before rtspclientsink is refused, "
    "then drops every frame with only a warning, so in about 1 run in 15 here the refused push ends with "
    "exit 0; catching it needs a bus watch on the pipeline, which cv2.VideoWriter does not expose"))
def test_a_wrong_password_is_refused_with_one_line(tiny_onnx, clip, tmp_path):
    with _recording_server_with_a_password(tmp_path) as (port, recorded):
        wrong = subprocess.run(uda_command("run", tiny_onnx, clip, f"rtsp://admin:{PASSWORD}x@127.0.0.1:{port}/in"),
                               capture_output=True, text=True, timeout=120, env=uda_env())
    assert wrong.returncode == 1, wrong.stderr[-2000:]
    assert "cannot stream to rtsp://127.0.0.1" in wrong.stderr and "is the password right" in wrong.stderr
    assert PASSWORD not in wrong.stderr
    assert not recorded.exists() or recorded.stat().st_size == 0
