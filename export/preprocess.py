"""Picking and resizing the target images the parity gate and int8 calibration use.

The images become network inputs through `common.preprocess.prepare_input`, the function
the runtime's preprocessing is held equal to, so both checks see what the device sees.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


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
