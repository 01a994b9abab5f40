"""Parity and int8 calibration feed the network exactly what the device's runtime will."""

import cv2
import numpy as np

from uda_adapt.common.manifest import InputSpec
from uda_adapt.export.parity import load_parity_samples
from uda_adapt.export.precision import ImageCalibrationReader
from uda_adapt.runtime.preprocess import Preprocessor


def test_calibration_and_parity_inputs_match_the_runtime(target_data):
    # A non-default contract: BGR networks scaled to 0..255 (mmseg-style checkpoints).
    spec = InputSpec(color_order="BGR", scale=1.0, mean=(103.5, 116.3, 123.7), std=(57.4, 57.1, 58.4), size=(32, 64))
    images = sorted((target_data / "val" / "images").glob("*.png"))
    device = Preprocessor(spec, spec.size)
    reader = ImageCalibrationReader(images, spec)
    samples = load_parity_samples(target_data, "folder", "val", len(images), spec)
    for path, sample in zip(images, samples.inputs):
        on_device = device(cv2.imread(str(path))).copy()       # the runtime decodes BGR with OpenCV
        np.testing.assert_allclose(reader.get_next()["image"], on_device, atol=2e-5)
        np.testing.assert_allclose(sample, on_device, atol=2e-5)
