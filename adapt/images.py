"""Reading and writing images and label maps with errors that name the file.

Images are returned as RGB uint8 (H, W, 3); label maps as uint8 (H, W).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.atomic import atomic_path
from uda_adapt.common.errors import UserError


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3)."""
    image = _imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG as uint8 (H, W), unchanged (no colour conversion)."""
    label = _imread(path, cv2.IMREAD_UNCHANGED)
    if label.ndim != 2:
        raise UserError(f"label {path} has {label.shape[2]} channels; labels must be single-channel PNGs of train ids")
    if label.dtype != np.uint8:
        raise UserError(f"label {path} is {label.dtype}; labels must be 8-bit PNGs of train ids (255 = ignore)")
    return label


def read_unchanged(path: str | os.PathLike) -> np.ndarray:
    """Read any image file as stored (keeps 16-bit depth and channel count)."""
    return _imread(path, cv2.IMREAD_UNCHANGED)


def write_rgb(path: str | os.PathLike, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write RGB uint8 (H, W, 3) atomically; the format follows the extension."""
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if Path(path).suffix.lower() in (".jpg", ".jpeg") else []
    _imwrite(path, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), params)


def write_label(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a uint8 (H, W) label map atomically as PNG."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"label maps are uint8 (H, W), got {label.dtype} {label.shape}")
    _imwrite(path, label, [])


def _imread(path: str | os.PathLike, flags: int) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"image file {file} does not exist")
    # np.fromfile + imdecode: unlike cv2.imread it handles non-ASCII paths, and a None result
    # always means the bytes are not a decodable image.
    data = np.fromfile(file, dtype=np.uint8)
    image = _decode_quietly(data, flags) if data.size else None
    if image is None:
        raise UserError(f"cannot decode image {file}: the file is empty, corrupt or not an image; replace or remove it")
    return image


def _decode_quietly(data: np.ndarray, flags: int) -> np.ndarray | None:
    """cv2.imdecode without OpenCV's own log line for a corrupt file: the UserError that follows names it."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(data, flags)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _imwrite(path: str | os.PathLike, image: np.ndarray, params: list[int]) -> None:
    final = Path(path)
    ok, encoded = cv2.imencode(final.suffix or ".png", image, params)
    if not ok:
        raise UserError(f"cannot encode image for {final}: unsupported extension {final.suffix!r}")
    with atomic_path(final) as tmp:
        encoded.tofile(tmp)
