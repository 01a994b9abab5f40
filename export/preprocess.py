"""Turning target images into exported-model inputs, the way a runtime will.

The export's resize policy is `stretch`: the frame is resized to the export size without
keeping the aspect ratio, then scaled by 1/255 and normalised with the checkpoint's mean/std.
Parity checks and int8 calibration both go through here, so they see what the device sees.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from common.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def prepare_input(rgb: np.ndarray, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB uint8 (H0, W0, 3) -> normalised float32 (1, 3, H, W) at `size` = (H, W)."""
    height, width = size
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    image = rgb.astype(np.float32) / 255.0
    image = (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None])


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 train ids (H0, W0) -> (H, W) with nearest neighbour, so no new ids appear."""
    height, width = size
    if label.shape == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)


def list_images(folder: str | os.PathLike, what: str) -> list[Path]:
    """Image files under `folder` (recursively), sorted; a missing or empty folder is a UserError."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{what} folder {root} does not exist; point it at a folder of target images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{what} folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                        "point it at a folder of target images")
    return files


def spread_indices(total: int, count: int) -> list[int]:
    """Up to `count` indices spread evenly over 0..total-1, so a sample covers the whole split."""
    if total <= 0 or count <= 0:
        return []
    if count >= total:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, count)})
