"""Pushing encoded frames to an RTSP server without letting a stalled server freeze the run.

OpenCV waits without a limit for a GStreamer writer to start, and once started its `write`
blocks as soon as appsrc is full. A server that refuses the credentials, or stops taking the
stream, leaves rtspclientsink short of PLAYING: the first writes fill appsrc, and the next one
never returns. So the writer opens on a thread with a deadline, and frames go to it through a
small queue on a thread of its own: while it is busy the oldest queued frame is dropped (a live
stream keeps the newest), and when it has not finished a frame for `stall_s` the run ends with a
one-line error. A writer stuck inside GStreamer is left to the end of the process.
"""

from __future__ import annotations

import queue
import threading
import time

import cv2
import numpy as np

from uda_adapt.common.errors import UserError

QUEUED_FRAMES = 4


class StreamPusher:
    """`push(image)` hands a BGR frame to a GStreamer `cv2.VideoWriter` running on its own thread."""

    def __init__(self, pipeline: str, fps: float, size: tuple[int, int], name: str, *, stall_s: float) -> None:
        self.name, self._stall_s = name, stall_s
        self.dropped = 0
        writer = _open_within(pipeline, fps, size, stall_s)
        if writer is None:
            raise UserError(self._refused(f"the server did not take the stream within {stall_s:g} s"))
        if not writer.isOpened():
            raise UserError(f"cannot stream to {name}: GStreamer could not connect (is the server up and the password right? "
                            "are gstreamer1.0-rtsp and the encoder installed?); or serve it yourself with rtsp://@:8554/out")
        self._writer = writer
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(QUEUED_FRAMES)
        self._last_done = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rtsp push", daemon=True)
        self._thread.start()

    def _refused(self, what: str) -> str:
        return f"cannot stream to {self.name}: {what} (is the password right, and may this user publish to this path?)"

    def _run(self) -> None:
        while (image := self._queue.get()) is not None:
            self._writer.write(image)
            self._last_done = time.monotonic()

    def push(self, image: np.ndarray) -> None:
        """Queue `image`; a UserError once the writer has been stuck for `stall_s`."""
        while True:
            try:
                self._queue.put_nowait(image)
                return
            except queue.Full:
                if time.monotonic() - self._last_done > self._stall_s:
                    raise UserError(self._refused(f"the server took no frame for {self._stall_s:g} s")) from None
                try:
                    self._queue.get_nowait()       # the writer is behind: drop the oldest frame
                    self.dropped += 1
                except queue.Empty:
                    pass
                time.sleep(0.01)

    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued frames and release the writer; a UserError if it is stuck (then it is left).

        A short input can end before `push` notices a stall: a writer that cannot finish its
        frames here never delivered the stream either.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            raise UserError(self._refused(f"the server took no frame for {time.monotonic() - self._last_done:.0f} s"))
        # Releasing sends EOS and tears the RTSP session down, which waits on the server: a server
        # that never answers the teardown must not hold the run (every frame was written already).
        releaser = threading.Thread(target=self._writer.release, name="release rtsp push", daemon=True)
        releaser.start()
        releaser.join(max(timeout, deadline - time.monotonic()))


def _open_within(pipeline: str, fps: float, size: tuple[int, int], timeout: float) -> cv2.VideoWriter | None:
    """The opened writer, or None while it is still starting after `timeout` s."""
    result: dict[str, cv2.VideoWriter] = {}

    def open_writer() -> None:
        result["writer"] = cv2.VideoWriter(pipeline, cv2.CAP_GSTREAMER, 0, fps, size, True)

    opener = threading.Thread(target=open_writer, name="open rtsp push", daemon=True)
    opener.start()
    opener.join(timeout)
    return result.get("writer")
