"""`uda-adapt run --collect DIR --collect-max N`: keep the frames the model is least sure of.

The next adaptation's target set: DIR/train/images/col_NNNNNN.jpg (the folder format), the raw
camera frames, not the overlay. The collection holds at most N frames; a new frame surer than
all of them is passed over, a less sure one replaces the surest. Blurred frames and frames that
duplicate one already collected are dropped (the filters of `uda-adapt data capture`). Each image
is written atomically as it is collected, and DIR/collect.json lists the collection with each
frame's score, so a run that is stopped at any point leaves a valid folder.

A run into a DIR that already holds a collection continues it: the frames its collect.json lists
(and that are still there) join with their scores and are seen by the duplicate filter, and the
N least sure of old and new are kept. A col_ image the index does not list was being written when
its run was killed (its score never recorded) and is removed.
"""

from __future__ import annotations

import heapq
import json
import re
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.atomic import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.capture_set import encode_jpeg
from uda_adapt.runtime.frame_filters import FrameFilter

PREFIX = "col"
_NAME = re.compile(rf"{PREFIX}_(\d+)\.jpg$")


class Collector:
    """`offer(frame, score)`: BGR uint8 (H, W, 3), score higher = surer; keeps the `limit` lowest scores."""

    def __init__(self, folder: str | Path, limit: int, frame_filter: FrameFilter | None = None) -> None:
        if limit < 1:
            raise UserError(f"--collect-max must be 1 or more, got {limit}")
        self.folder = ensure_writable_dir(folder)
        self.images = ensure_writable_dir(self.folder / "train" / "images")
        self.limit = limit
        self.filter = frame_filter or FrameFilter()
        # Names continue after any earlier collection in DIR.
        numbers = [int(m.group(1)) for p in self.images.iterdir() if (m := _NAME.match(p.name))]
        self._next = max(numbers, default=-1) + 1
        # A max-heap on the score (stored negated): the surest collected frame is on top.
        self._heap: list[tuple[float, int, str]] = []
        self._thumb_names: list[str] = []         # the filter's remembered thumbnails, in order
        self.offered = 0
        self.replaced = 0
        self.continued = self._continue_collection()

    def _continue_collection(self) -> int:
        """Take in the collection DIR already holds (see the module docstring); how many frames."""
        index_path = self.folder / "collect.json"
        listed: dict[str, float] = {}
        if index_path.is_file():
            try:
                frames = json.loads(index_path.read_text())["frames"]
                listed = {Path(f["image"]).name: float(f["score"]) for f in frames}
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{index_path} is not a collection index ({exc}); move it away or --collect into another DIR") from None
        for path in sorted(self.images.iterdir()):
            if not _NAME.match(path.name):
                continue
            image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.name in listed else None
            if image is None:
                path.unlink(missing_ok=True)       # unlisted (killed mid-write) or unreadable: no score to rank it by
                continue
            self.filter.remember(image)
            self._add(path.name, listed[path.name])
        self._trim()
        if self._heap or index_path.is_file():
            self._write_index()
        return len(self._heap)

    def offer(self, frame: np.ndarray, score: float) -> bool:
        self.offered += 1
        if len(self._heap) >= self.limit and score >= -self._heap[0][0]:
            return False                       # surer than everything collected: not needed
        verdict = self.filter.check(frame)
        if verdict != "kept":
            return False
        name = f"{PREFIX}_{self._next:06d}.jpg"
        self._next += 1
        atomic_write_bytes(self.images / name, encode_jpeg(frame))
        self._add(name, score)
        self.replaced += self._trim()
        self._write_index()
        return True

    def _add(self, name: str, score: float) -> None:
        self._thumb_names.append(name)
        heapq.heappush(self._heap, (-score, len(self._thumb_names), name))

    def _trim(self) -> int:
        """Drop the surest frames beyond the limit (file, thumbnail, entry); how many."""
        dropped_count = 0
        while len(self._heap) > self.limit:
            _, _, dropped = heapq.heappop(self._heap)
            (self.images / dropped).unlink(missing_ok=True)
            self.filter.forget(self._thumb_names.index(dropped))
            self._thumb_names.remove(dropped)
            dropped_count += 1
        return dropped_count

    def collected(self) -> list[tuple[str, float]]:
        """(file name, score), least sure first."""
        return sorted(((name, -negative) for negative, _, name in self._heap), key=lambda item: item[1])

    def _write_index(self) -> None:
        items = [{"image": f"train/images/{name}", "score": score} for name, score in self.collected()]
        atomic_write_text(self.folder / "collect.json", json.dumps({"frames": items}, indent=2) + "\n")

    def report(self) -> dict:
        counts = self.filter.counts
        return {"folder": str(self.folder), "collected": len(self._heap), "limit": self.limit, "offered": self.offered,
                "replaced": self.replaced, "duplicate": counts.duplicate, "blurred": counts.blurred, "continued": self.continued}
