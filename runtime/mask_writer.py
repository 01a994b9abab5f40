"""`run --save-masks DIR`: each frame's class-id mask as a PNG, named after its input frame.

    [render loop] --queue(16), blocks when full--> [mask writer thread: resize, encode, write]

Encoding and fsync-ing a PNG take milliseconds, so they run on their own thread, off the render
loop. No mask is dropped: a full queue makes the render loop wait (the user asked for every
mask). Names come from the source (`Frame.name`: an image's stem, `<video stem>_<index>`); live
frames, which have none, are `frame_<seq>`. A replayed file (--input-loop) rewrites the same names.
Masks are saved at the frame's resolution (nearest neighbour), so they line up with the input.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.atomic import ensure_writable_dir
from uda_adapt.common.mask_png import check_mask_format, write_mask_png
from uda_adapt.runtime.capture import Frame, Log, log_to_stderr

QUEUE_SIZE = 16
_END = None


class MaskWriter:
    """Call it with `(frame, mask)` from the render loop; a context manager that flushes on exit."""

    def __init__(self, folder: str | Path, *, mask_format: str = "id", palette: Sequence[Sequence[int]] = (),
                 log: Log = log_to_stderr, join_timeout: float = 30.0) -> None:
        check_mask_format(mask_format)
        self.folder = ensure_writable_dir(folder)
        self._palette = list(palette) if mask_format == "palette" else None
        self._queue: queue.Queue[tuple[str, tuple[int, int], np.ndarray] | None] = queue.Queue(QUEUE_SIZE)
        self._errors: list[BaseException] = []
        self._log, self._join_timeout = log, join_timeout
        self.written = 0
        self._thread = threading.Thread(target=self._work, name="mask writer", daemon=True)

    def __enter__(self) -> MaskWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, frame: Frame, mask: np.ndarray) -> None:
        self._raise_error()
        name = frame.name or f"frame_{frame.seq:06d}"
        # A copy: backends may reuse their output buffer for the next frame.
        ids = np.asarray(mask).astype(np.uint8, copy=True)
        self._queue.put((name, frame.image.shape[:2], ids))

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise its error if it had one."""
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join(self._join_timeout)
            if self._thread.is_alive():
                self._log(f"the mask writer did not finish within {self._join_timeout:.0f} s; some masks in {self.folder} are missing")
        self._raise_error()

    def _raise_error(self) -> None:
        if self._errors:
            raise self._errors[0]

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if self._errors:
                continue       # drain the queue so the render loop never blocks on a dead writer
            name, (height, width), ids = item
            try:
                if ids.shape != (height, width):
                    ids = cv2.resize(ids, (width, height), interpolation=cv2.INTER_NEAREST)
                write_mask_png(self.folder / f"{name}.png", ids, self._palette)
                self.written += 1
            except Exception as exc:  # handed to the render loop's thread, which re-raises it
                self._errors.append(exc)
