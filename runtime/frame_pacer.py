"""Frame pacing for constant-rate outputs (video files, OpenCV's GStreamer writer) fed with dropped frames."""

from __future__ import annotations


class FramePacer:
    """How many times to write each frame so a constant-rate video keeps real time.

    A video file (and OpenCV's GStreamer writer, which stamps buffers n / fps) has one frame
    rate. With `--latest` the pipeline drops frames when inference is slower than the source,
    so writing one output frame per processed frame would play back too fast. Each frame is
    placed at its capture time instead: written as often as needed to fill the slots since the
    previous one (a gap repeats the last picture), or not at all when its slot is taken.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._start: float | None = None
        self._written = 0

    def repeats(self, timestamp: float) -> int:
        if self._start is None:
            self._start = timestamp
        slot = int(round((timestamp - self._start) * self.fps))   # this frame's slot: 0, 1, 2, ...
        count = max(slot + 1 - self._written, 0)
        self._written += count
        return count
