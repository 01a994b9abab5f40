"""Serving the overlay over RTSP from this process: `rtsp://@:8554/out`, as jetson-utils does.

GStreamer's RTSP server (gst-rtsp-server, through PyGObject) runs its GLib main loop on its own
thread. Every client shares one media pipeline:

    write(BGR frame) -> appsrc -> videoconvert -> I420 -> x264enc | nvv4l2h264enc -> h264parse -> rtph264pay -> clients

The server starts with the first frame (the caps need its size). Drop policy: while no client
watches, frames are discarded, as a broadcast would; while one does, appsrc keeps at most a few
frames and drops the oldest (leaky downstream), so a slow network never makes the run queue up.
PyGObject and gst-rtsp-server are imported here only, when an `rtsp://@...` output opens.
"""

from __future__ import annotations

import socket
import threading

import numpy as np

from uda_adapt.common.errors import UserError
from uda_adapt.runtime.encoders import encode_chain, encoder_fits
from uda_adapt.runtime.uri import RtspURL, _fraction

INSTALL_HINT = ("the built-in RTSP server needs PyGObject and gst-rtsp-server: "
                "sudo apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
                "(in a venv made with --system-site-packages), or push to an external server with rtsp://host:8554/seg")
QUEUED_FRAMES = 3          # appsrc holds at most this many frames; older ones are dropped


def import_gst_rtsp_server():
    """(Gst, GLib, GstRtspServer), initialised; a UserError saying what to install when missing."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:       # ValueError: gi present, the typelib is not
        raise UserError(f"{INSTALL_HINT} ({exc})") from None
    Gst.init(None)
    return Gst, GLib, GstRtspServer


def server_launch(width: int, height: int, fps: float, codec: str, hardware: bool, bitrate: int) -> str:
    """The shared media's pipeline description (gst-rtsp-server wants the payloader named pay0)."""
    frame_bytes = width * height * 3
    caps = f"video/x-raw,format=BGR,width={width},height={height},framerate={_fraction(fps)}"
    source = (f"appsrc name=src is-live=true format=time do-timestamp=true block=false "
              f"max-bytes={QUEUED_FRAMES * frame_bytes} leaky-type=downstream caps={caps}")
    return f"( {source} ! {encode_chain(codec, hardware, bitrate)} ! {codec}parse ! rtp{codec}pay name=pay0 pt=96 config-interval=1 )"


class RtspServerSink:
    """A sink that serves what it is given at `url` (host 0.0.0.0: every interface)."""

    def __init__(self, url: RtspURL, fps: float, codec: str, hardware: bool, bitrate: int, log=None) -> None:
        self._Gst, self._GLib, self._GstRtspServer = import_gst_rtsp_server()
        self.name = f"rtsp://{url.host}:{url.port}{url.path}"
        self.frames = 0
        self._url, self._fps, self._codec, self._hardware, self._bitrate = url, fps, codec, hardware, bitrate
        self._log = log or (lambda message: None)
        self._lock = threading.Lock()
        self._appsrc = None
        self._size: tuple[int, int] | None = None
        self._loop = None
        self._thread: threading.Thread | None = None
        self._source_id: int | None = None
        self._context = None

    def __enter__(self) -> RtspServerSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start(self, width: int, height: int) -> None:
        encoder_fits(self._codec, self._hardware, width, height, self._log)
        GLib, GstRtspServer = self._GLib, self._GstRtspServer
        server = GstRtspServer.RTSPServer()
        server.set_address(self._url.host)
        server.set_service(str(self._url.port))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(server_launch(width, height, self._fps, self._codec, self._hardware, self._bitrate))
        factory.set_shared(True)
        factory.connect("media-configure", self._on_media_configure)
        server.get_mount_points().add_factory(self._url.path, factory)
        # A context of our own: the server's sockets are served by our loop only.
        self._context = GLib.MainContext.new()
        self._source_id = server.attach(self._context)
        if not self._source_id:
            raise UserError(f"cannot serve {self.name}: port {self._url.port} on {self._url.host} is in use or not allowed; "
                            "choose another port, e.g. rtsp://@:8555/out")
        self._server = server
        self._loop = GLib.MainLoop.new(self._context, False)
        self._thread = threading.Thread(target=self._loop.run, name="rtsp server", daemon=True)
        self._thread.start()
        self._size = (width, height)
        encoder = f"{self._codec}, {'NVENC' if self._hardware else 'software'} encoder"
        if self._url.host in ("0.0.0.0", "::"):
            self._log(f"serving rtsp://{socket.gethostname()}:{self._url.port}{self._url.path} on every interface ({encoder})")
        else:
            self._log(f"serving rtsp://{self._url.host}:{self._url.port}{self._url.path} ({encoder})")

    def _on_media_configure(self, factory, media) -> None:
        # Runs on the server's thread when the first client connects (shared media: once).
        appsrc = media.get_element().get_child_by_name("src")
        media.connect("unprepared", self._on_media_unprepared)
        with self._lock:
            self._appsrc = appsrc

    def _on_media_unprepared(self, media) -> None:
        with self._lock:
            self._appsrc = None

    def write(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        if self._size is None:
            self._start(w, h)
        if (w, h) != self._size:
            import cv2

            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self.frames += 1
        with self._lock:
            appsrc = self._appsrc
        if appsrc is None:
            return True                 # nobody watching: the frame is not kept
        buffer = self._Gst.Buffer.new_wrapped(np.ascontiguousarray(image).tobytes())
        appsrc.emit("push-buffer", buffer)
        return True

    def close(self) -> None:
        with self._lock:
            appsrc, self._appsrc = self._appsrc, None
        if appsrc is not None:
            appsrc.emit("end-of-stream")
        if self._loop is not None:
            self._loop.quit()
            if self._thread is not None:
                self._thread.join(timeout=5.0)
            self._loop = None
        if self._source_id is not None:
            source = self._context.find_source_by_id(self._source_id)
            if source is not None:
                source.destroy()          # closes the listening socket
            self._source_id = None
