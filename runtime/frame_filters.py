"""Which camera frames are worth keeping: near-duplicates and blurred frames are dropped.

Used by `uda-adapt data capture` and `uda-adapt run --collect`, so that a parked robot does not
fill a target set with one view and motion blur does not teach the network to guess.

    duplicate: the mean absolute difference of 16x16 grey thumbnails (0..1) to any kept frame
               is under `min_change`
    blurred:   the variance of the Laplacian of the grey frame (at a fixed width, so that the
               threshold does not depend on the camera's resolution) is under `min_sharpness`
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

THUMBNAIL = (16, 16)
# Measured on a generated target drive (`uda-adapt data video`, 256x512): consecutive frames at
# 15 FPS differ by 0.007-0.017 (median 0.0125); a repeated frame re-encoded by H.264 by < 0.002.
DEFAULT_MIN_CHANGE = 0.005
# Laplacian variance at SHARPNESS_WIDTH: the same drive's frames (camera-like blur already in
# them) score 370-490, under a 5x5 box blur 54-80, under a 9x9 box blur 14-20.
DEFAULT_MIN_SHARPNESS = 50.0
SHARPNESS_WIDTH = 256


def thumbnail(image: np.ndarray) -> np.ndarray:
    """BGR or RGB uint8 (H, W, 3) -> float32 (16, 16) grey levels in 0..1."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image, resized to SHARPNESS_WIDTH columns."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height = max(1, round(grey.shape[0] * SHARPNESS_WIDTH / grey.shape[1]))
    grey = cv2.resize(grey, (SHARPNESS_WIDTH, height), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@dataclasses.dataclass
class FilterCounts:
    seen: int = 0
    kept: int = 0
    duplicate: int = 0
    blurred: int = 0

    def line(self) -> str:
        return f"seen {self.seen}  kept {self.kept}  duplicate {self.duplicate}  blurred {self.blurred}"


class FrameFilter:
    """`check(image)` -> "kept", "duplicate" or "blurred"; kept frames join the comparison set.

    `remember(image)` adds a frame that is already in the set (a resumed capture), `forget(i)`
    removes one (a collection that replaces frames).
    """

    def __init__(self, min_change: float = DEFAULT_MIN_CHANGE, min_sharpness: float = DEFAULT_MIN_SHARPNESS) -> None:
        self.min_change, self.min_sharpness = min_change, min_sharpness
        self._thumbs = np.empty((0, *THUMBNAIL), np.float32)
        self.counts = FilterCounts()

    def __len__(self) -> int:
        return len(self._thumbs)

    def remember(self, image: np.ndarray) -> None:
        self._thumbs = np.concatenate([self._thumbs, thumbnail(image)[None]])

    def forget(self, index: int) -> None:
        self._thumbs = np.delete(self._thumbs, index, axis=0)

    def verdict(self, image: np.ndarray) -> str:
        """What `check` would say, without counting or remembering the frame."""
        if self.min_sharpness > 0 and sharpness(image) < self.min_sharpness:
            return "blurred"
        if len(self._thumbs) and self.min_change > 0:
            distance = np.abs(self._thumbs - thumbnail(image)[None]).mean(axis=(1, 2))
            if float(distance.min()) < self.min_change:
                return "duplicate"
        return "kept"

    def check(self, image: np.ndarray) -> str:
        verdict = self.verdict(image)
        self.counts.seen += 1
        setattr(self.counts, verdict, getattr(self.counts, verdict) + 1)
        if verdict == "kept":
            self.remember(image)
        return verdict
