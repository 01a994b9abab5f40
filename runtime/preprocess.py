"""Frame -> network input: `common.preprocess.prepare_input`, into buffers reused frame to frame.

The same contract (stretch-resize, colour order, scale, mean/std, NCHW float32), held equal
to `prepare_input` by tests/runtime/test_preprocess.py. Everything runs in OpenCV (which
releases the GIL) into buffers allocated once, so the preprocessing of one frame overlaps the
inference of the previous one on another thread.
"""

from __future__ import annotations

import cv2
import numpy as np

from uda_adapt.common.manifest import InputSpec


class Preprocessor:
    """`__call__(frame)`: BGR uint8 (H, W, 3) -> float32 (1, 3, h, w) at `size` = (h, w).

    The returned array is reused by the next call: consume it before calling again.
    """

    def __init__(self, spec: InputSpec, size: tuple[int, int]) -> None:
        self.size = size
        h, w = size
        # ((x * scale) - mean) / std  ==  x * (scale / std) + (-mean / std): one fused op per plane.
        self._gain = [spec.scale / s for s in spec.std]
        self._offset = [-m / s for m, s in zip(spec.mean, spec.std)]
        # Network channel c comes from frame plane `_plane[c]` (frames are BGR).
        self._plane = [2, 1, 0] if spec.color_order.upper() == "RGB" else [0, 1, 2]
        self._resized = np.empty((h, w, 3), np.uint8)
        self._planes = [np.empty((h, w), np.uint8) for _ in range(3)]
        self._output = np.empty((1, 3, h, w), np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        h, w = self.size
        if frame.shape[:2] != (h, w):
            cv2.resize(frame, (w, h), dst=self._resized, interpolation=cv2.INTER_LINEAR)
            frame = self._resized
        cv2.split(frame, self._planes)
        for c in range(3):
            plane = self._planes[self._plane[c]]
            cv2.addWeighted(plane, self._gain[c], plane, 0.0, self._offset[c], dst=self._output[0, c], dtype=cv2.CV_32F)
        return self._output
