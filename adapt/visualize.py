"""Pictures of predictions: palette colouring and overlays, for reports and demos."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uda_adapt.adapt.classes import IGNORE_INDEX


def palette_lut(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(256, 3) uint8 lookup table: class id -> RGB; ids without a colour (255 = ignore) are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    lut[IGNORE_INDEX] = 0
    return lut


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) integer ids -> (H, W, 3) RGB uint8."""
    return palette_lut(palette)[np.clip(label, 0, 255).astype(np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured `label` over RGB `image`; ignored pixels keep the image."""
    coloured = colorize(label, palette).astype(np.float32)
    blended = image.astype(np.float32) * (1 - alpha) + coloured * alpha
    keep = (label == IGNORE_INDEX)[..., None]
    return np.where(keep, image, blended.round()).astype(np.uint8)


def comparison_strip(image: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Image | prediction overlay | ground truth side by side (ground truth only when known)."""
    panels = [image, overlay(image, prediction, palette, 0.6)]
    if truth is not None:
        panels.append(overlay(image, truth, palette, 0.6))
    return np.concatenate(panels, axis=1)
