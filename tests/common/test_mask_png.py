"""Class-id masks as PNG: the ids read back unchanged, with or without a palette."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from uda_adapt.common.mask_png import encode_mask_png, write_mask_png


def _mask() -> np.ndarray:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 19, size=(7, 13)).astype(np.int32)
    mask[0, 0] = 255                                    # the ignore index survives too
    return mask


def test_id_png_holds_the_class_ids(tmp_path):
    mask = _mask()
    write_mask_png(tmp_path / "a.png", mask)
    image = Image.open(tmp_path / "a.png")
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), mask)


def test_palette_png_holds_the_ids_and_the_class_colours(tmp_path):
    mask = _mask()
    palette = [(i, 2 * i, 255 - i) for i in range(19)]
    write_mask_png(tmp_path / "p.png", mask, palette)
    image = Image.open(tmp_path / "p.png")
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image), mask)
    colours = np.asarray(image.getpalette()[: 3 * 19]).reshape(19, 3)
    np.testing.assert_array_equal(colours, palette)
    rgb = np.asarray(image.convert("RGB"))
    assert tuple(rgb[0, 1]) == palette[mask[0, 1]]


def test_ids_that_do_not_fit_eight_bits_are_refused():
    with pytest.raises(ValueError, match="0..255"):
        encode_mask_png(np.full((2, 2), 300))
