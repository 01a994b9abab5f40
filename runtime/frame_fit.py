"""A captured frame made to what the user asked for: flipped (--input-flip) and resized
(--input-width/--input-height) where the source itself could not be asked to do it."""

from __future__ import annotations

import cv2
import numpy as np

from uda_adapt.runtime.uri import CaptureOptions, InputURI

# --input-flip as cv2.flip's flipCode (CSI cameras flip in nvvidconv instead, for free).
FLIP_CODES = {"horizontal": 1, "vertical": 0, "rotate-180": -1}


def fit_frame(image: np.ndarray | None, options: CaptureOptions, uri: InputURI) -> np.ndarray | None:
    """Flip (--input-flip), and resize file and stream frames to --input-width/--input-height (cameras are asked instead)."""
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        return image
    if options.flip != "none" and uri.kind != "csi":
        image = cv2.flip(image, FLIP_CODES[options.flip])
    if not (options.width and options.height) or uri.kind in ("v4l2", "csi"):
        return image
    if image.shape[:2] == (options.height, options.width):
        return image
    return cv2.resize(image, (options.width, options.height), interpolation=cv2.INTER_AREA)
