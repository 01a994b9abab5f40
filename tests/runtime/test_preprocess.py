"""The runtime's buffer-reusing preprocessor is the input contract, `common.preprocess.prepare_input`."""

import numpy as np
import pytest

from uda_adapt.common.manifest import InputSpec
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.runtime.preprocess import Preprocessor


@pytest.mark.parametrize("spec", [
    InputSpec(),                                                     # RGB, 1/255, ImageNet mean/std
    InputSpec(color_order="BGR"),
    InputSpec(scale=1.0, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4)),   # mmseg-style, 0..255
    InputSpec(scale=1 / 127.5, mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0)),       # [-1, 1]
])
@pytest.mark.parametrize("frame_size", [(48, 80), (32, 64), (75, 133)])   # smaller, equal, larger and odd
def test_runtime_preprocessor_equals_the_contract(spec, frame_size):
    rng = np.random.default_rng(sum(frame_size))
    frame = rng.integers(0, 256, (*frame_size, 3), dtype=np.uint8)     # BGR, as OpenCV decodes
    runtime = Preprocessor(spec, (32, 64))
    for _ in range(2):                                                  # the reused buffers stay right
        got = runtime(frame)
        want = prepare_input(frame, spec, (32, 64), frame_order="BGR")
        assert got.shape == want.shape == (1, 3, 32, 64) and got.dtype == want.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_frame_order_is_honoured():
    spec = InputSpec(size=(4, 4))
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255                                                  # pure red in BGR
    rgb = bgr[..., ::-1].copy()
    np.testing.assert_array_equal(prepare_input(bgr, spec), prepare_input(rgb, spec, frame_order="RGB"))
    red = prepare_input(bgr, spec)[0, 0]                               # network channel 0 is R
    assert np.allclose(red, (1.0 - spec.mean[0]) / spec.std[0])


def test_size_defaults_to_the_manifest():
    assert prepare_input(np.zeros((10, 20, 3), np.uint8), InputSpec(size=(8, 16))).shape == (1, 3, 8, 16)
