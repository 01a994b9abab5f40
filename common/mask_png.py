"""Class-id masks as PNG files: raw ids (8-bit grey) or palettised (ids, with the class colours).

Both keep the class id as the pixel value, so any tool reads the ids back unchanged (a
palettised PNG opens in an image viewer in colour, `PIL.Image.open(path)` gives the ids,
`cv2.imread` would give the colours: read those with PIL or `IMREAD_UNCHANGED`-aware tools).
The encoder is the PNG format itself (zlib from the standard library): OpenCV cannot write a
palette and Pillow is not part of the runtime install.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from uda_adapt.common.atomic import atomic_write_bytes
from uda_adapt.common.errors import UserError

MASK_FORMATS = ("id", "palette")
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# zlib level 3: masks are long runs, so higher levels shrink the file little and cost time.
_COMPRESSION = 3


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_mask_png(mask: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> bytes:
    """PNG bytes of an (H, W) integer mask with ids 0..255; with `palette` (RGB per id) palettised.

    Ids without a palette entry (the ignore index 255, for one) are black in the palette.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"a mask is (H, W), got shape {mask.shape}")
    if mask.dtype != np.uint8:
        if mask.min() < 0 or mask.max() > 255:
            raise ValueError("mask ids must lie in 0..255 to fit an 8-bit PNG")
        mask = mask.astype(np.uint8)
    height, width = mask.shape
    colour_type = 0 if palette is None else 3           # 0: greyscale, 3: indexed colour
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    if palette is not None:
        table = np.zeros((256, 3), np.uint8)
        colours = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
        table[: len(colours)] = colours
        chunks.append(_chunk(b"PLTE", table.tobytes()))
    rows = np.empty((height, width + 1), np.uint8)
    rows[:, 0] = 0                                       # filter type "None" on every row
    rows[:, 1:] = mask
    chunks.append(_chunk(b"IDAT", zlib.compress(rows.tobytes(), _COMPRESSION)))
    chunks.append(_chunk(b"IEND", b""))
    return _SIGNATURE + b"".join(chunks)


def write_mask_png(path: str | os.PathLike, mask: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> None:
    """Write `mask` atomically (a reader never sees half a file)."""
    atomic_write_bytes(path, encode_mask_png(mask, palette))


def check_mask_format(value: str, option: str = "--mask-format") -> str:
    if value not in MASK_FORMATS:
        raise UserError(f"{option} {value!r} is unknown; valid: {', '.join(MASK_FORMATS)}")
    return value
