"""Is an RTSP server answering? One `OPTIONS` request over TCP, before GStreamer is involved.

OpenCV 4.6 (Debian's and JetPack's) disposes a GStreamer pipeline that failed to start without
first setting it to NULL: rtspsrc's threads are still running when its locks are freed
(GStreamer-CRITICAL "disposed while PLAYING", "g_mutex_clear() called on ... locked mutex"), and
after a few of those a later open can hang for good. A camera that is down (restarting, unplugged)
would cost one such failed open per reconnect attempt, so reconnects first ask the server here and
hand the pipeline to OpenCV only once it answers.
"""

from __future__ import annotations

import socket

from uda_adapt.runtime.uri import parse_rtsp_url

PROBE_TIMEOUT_S = 3.0


def probe_rtsp(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when an RTSP server answers at `url` (any status, 401 included), else why not.

    `rtsps://` is only connected to (the TLS handshake is GStreamer's job).
    """
    parsed = parse_rtsp_url(url)
    try:
        with socket.create_connection((parsed.host, parsed.port), timeout=timeout) as connection:
            if parsed.scheme != "rtsp":
                return None
            connection.sendall(f"OPTIONS {parsed.location} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: uda-adapt\r\n\r\n".encode())
            reply = connection.recv(64)
    except socket.timeout:
        return f"{parsed.host}:{parsed.port} did not answer within {timeout:g} s"
    except OSError as exc:
        return f"cannot connect to {parsed.host}:{parsed.port} ({exc.strerror or exc})"
    if not reply:
        return f"{parsed.host}:{parsed.port} closed the connection without answering"
    if not reply.startswith(b"RTSP/"):
        return f"{parsed.host}:{parsed.port} is not an RTSP server (it answered {reply[:20]!r})"
    return None
