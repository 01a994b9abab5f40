"""Colouring masks onto frames: overlay, mask, side-by-side, a legend and an FPS line.

The mask is coloured with a 256-entry palette lookup table (`cv2.applyColorMap`) and blended with
`cv2.addWeighted`, both in OpenCV with the GIL released. Ignored classes (and the ignore
index) show the frame underneath in `overlay` and black in `mask`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from uda_adapt.common.errors import UserError

Visualize = Literal["overlay", "mask", "side-by-side"]
VISUALIZE_MODES: tuple[str, ...] = ("overlay", "mask", "side-by-side")

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def parse_alpha(alpha: float) -> float:
    """Overlay opacity in 0..1; values above 1 are jetson-inference's 0..255 scale."""
    if alpha < 0 or alpha > 255:
        raise UserError(f"--alpha must be in 0..1 (or 0..255), got {alpha:g}")
    return alpha / 255.0 if alpha > 1 else float(alpha)


def class_ids(classes: Sequence[str], names: Sequence[str]) -> tuple[int, ...]:
    """Indices of `names` in `classes`; an unknown name is a UserError listing the valid ones."""
    ids = []
    for name in names:
        if name not in classes:
            raise UserError(f"--ignore-class {name!r} is not a class of this model; classes: {', '.join(classes)}")
        ids.append(list(classes).index(name))
    return tuple(ids)


@dataclasses.dataclass(frozen=True)
class RenderOptions:
    visualize: Visualize = "overlay"
    alpha: float = 0.5                    # overlay opacity of the class colours, 0..1
    ignore_classes: tuple[str, ...] = ()
    legend: bool = True
    fps: bool = True


class Renderer:
    """`render(frame, mask, fps)`: BGR uint8 (H, W, 3) + int (h, w) mask -> BGR uint8 image.

    Buffers are reused while the frame size holds; the returned image is a fresh array, so a
    sink on another thread may keep it.
    """

    def __init__(self, classes: Sequence[str], palette: Sequence[Sequence[int]], options: RenderOptions, ignore_index: int = 255) -> None:
        if options.visualize not in VISUALIZE_MODES:
            raise UserError(f"--visualize {options.visualize!r} is unknown; valid: {', '.join(VISUALIZE_MODES)}")
        self.classes = tuple(classes)
        self.options = options
        self.alpha = parse_alpha(options.alpha)
        ignored = set(class_ids(self.classes, options.ignore_classes)) | {ignore_index}
        # Palette as a BGR lookup table; ids without a class (and ignored ones) are flagged.
        self._lut = np.zeros((256, 1, 3), np.uint8)
        self._lut[: len(palette), 0] = np.asarray(palette, np.uint8)[:, ::-1]
        self._hidden_lut = np.full(256, 255, np.uint8)
        self._hidden_lut[: len(self.classes)] = 0
        for cid in ignored:
            if 0 <= cid < 256:
                self._hidden_lut[cid] = 255
        self._lut[self._hidden_lut == 255] = 0
        self._hides_any = bool(ignored & set(range(len(self.classes))))
        self._shape: tuple[int, int] | None = None

    def _buffers(self, h: int, w: int) -> None:
        if self._shape != (h, w):
            self._mask8 = np.empty((h, w), np.uint8)
            self._colour = np.empty((h, w, 3), np.uint8)
            self._hidden = np.empty((h, w), np.uint8)
            self._shape = (h, w)

    def colour(self, frame_shape: tuple[int, int], mask: np.ndarray) -> np.ndarray:
        """The colour mask at `frame_shape` (H, W); the mask is scaled with nearest-neighbour."""
        h, w = frame_shape
        self._buffers(h, w)
        # Class ids fit in uint8 (at most 255 classes; 255 is the ignore index).
        if mask.shape != (h, w):
            cv2.resize(mask.astype(np.uint8), (w, h), dst=self._mask8, interpolation=cv2.INTER_NEAREST)
        else:
            np.copyto(self._mask8, mask, casting="unsafe")
        # One pass from class ids to BGR: a user colour map is a 256-entry, 3-channel lookup.
        cv2.applyColorMap(self._mask8, self._lut, dst=self._colour)
        return self._colour

    def render(self, frame: np.ndarray, mask: np.ndarray, fps: float | None = None) -> np.ndarray:
        h, w = frame.shape[:2]
        colour = self.colour((h, w), mask)
        mode = self.options.visualize
        overlay = None
        if mode == "overlay":
            overlay = self._blend(frame, colour)
            out = overlay
        elif mode == "mask":
            out = colour.copy()
        else:
            out = np.empty((h, 2 * w, 3), np.uint8)
            out[:, :w] = frame
            out[:, w:] = colour
        if self.options.legend:
            self._draw_legend(out, self._present_classes())
        if self.options.fps and fps is not None:
            _text(out, f"{fps:.1f} FPS", (8, out.shape[0] - 10))
        return out

    def _blend(self, frame: np.ndarray, colour: np.ndarray) -> np.ndarray:
        out = cv2.addWeighted(frame, 1.0 - self.alpha, colour, self.alpha, 0.0)
        if self._hides_any:
            # Ignored classes show the frame unchanged.
            cv2.LUT(self._mask8, self._hidden_lut, dst=self._hidden)
            cv2.copyTo(frame, self._hidden, out)
        return out

    def _present_classes(self) -> list[int]:
        counts = cv2.calcHist([self._mask8], [0], None, [256], [0, 256]).ravel()
        return [c for c in range(len(self.classes)) if counts[c] > 0 and self._hidden_lut[c] == 0]

    def _draw_legend(self, image: np.ndarray, present: list[int]) -> None:
        """A box in the top-left corner: a colour swatch and the name of each class in view."""
        if not present:
            return
        row = 16
        width = 28 + max(cv2.getTextSize(self.classes[c], _FONT, 0.45, 1)[0][0] for c in present)
        height = 6 + row * len(present)
        box = image[4 : 4 + height, 4 : 4 + width]
        box //= 3           # darken in place so the names stay readable on any scene
        for i, cid in enumerate(present):
            y = 4 + 4 + i * row
            colour = tuple(int(v) for v in self._lut[cid, 0])
            cv2.rectangle(image, (10, y), (22, y + 11), colour, thickness=-1)
            cv2.putText(image, self.classes[cid], (28, y + 10), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def _text(image: np.ndarray, text: str, origin: tuple[int, int]) -> None:
    cv2.putText(image, text, origin, _FONT, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, _FONT, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
