"""`Segmenter`: numpy frames in, class-id masks at the frame's size out, with the CLI's own pieces."""

from __future__ import annotations

import numpy as np
import pytest

from uda_adapt import Segmenter
from uda_adapt.common.errors import UserError

RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)   # BGR, as OpenCV reads frames


def test_a_frame_of_any_size_gives_a_mask_of_that_size(tiny_onnx):
    # tiny_onnx's class is the strongest colour channel of the RGB input: 0 red, 1 green, 2 blue.
    frame = np.zeros((30, 50, 3), np.uint8)
    frame[:, :20], frame[:, 20:35], frame[:, 35:] = RED, GREEN, BLUE
    with Segmenter(tiny_onnx) as seg:
        assert seg.input_size != frame.shape[:2]              # so the mask must be scaled back
        mask = seg(frame)
        assert mask.dtype == np.uint8 and mask.shape == (30, 50)
        assert (mask[:, :18] == 0).all() and (mask[:, 22:33] == 1).all() and (mask[:, 37:] == 2).all()
        assert set(np.unique(mask)) == {0, 1, 2}                  # nearest-neighbour: no blended ids
        assert (seg(frame[..., ::-1].copy(), frame_order="RGB") == mask).all()
        colour = seg.colorize(mask)
        assert colour.shape == (30, 50, 3) and (colour[0, 0] == seg.palette[0]).all()
        assert seg.classes[0] == "road" and "CPUExecutionProvider" in seg.providers


def test_the_mask_equals_what_the_run_pipeline_feeds_the_backend(small_onnx):
    """Same contract as `uda-adapt run`: prepare_input at the model's size, then the backend."""
    from uda_adapt.common.preprocess import prepare_input
    from uda_adapt.runtime.backends import open_backend

    rng = np.random.default_rng(0)
    backend = open_backend(small_onnx)
    frame = rng.integers(0, 256, (*backend.input_size, 3), dtype=np.uint8)
    expected = backend.infer(prepare_input(frame, backend.manifest.input, backend.input_size))[0]
    with Segmenter(small_onnx) as seg:
        np.testing.assert_array_equal(seg(frame), expected.astype(np.uint8))


def test_bad_frames_and_checkpoints_are_user_errors(tiny_onnx, tmp_path):
    with Segmenter(tiny_onnx) as seg:
        with pytest.raises(UserError, match=r"uint8 \(H, W, 3\) frames, got float32 \(4, 4, 3\)"):
            seg(np.zeros((4, 4, 3), np.float32))
        with pytest.raises(UserError, match="got uint8 \\(4, 4\\)"):
            seg(np.zeros((4, 4), np.uint8))
        with pytest.raises(UserError, match="frame_order"):
            seg(np.zeros((4, 4, 3), np.uint8), frame_order="BRG")
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"not really")
    with pytest.raises(UserError, match="export it first"):
        Segmenter(checkpoint)
