"""The input contract: a decoded frame -> the network input, from the manifest's `InputSpec`.

One home for the normalisation constants and the default input size, and one function that
every deployment path uses: the parity gate and int8 calibration at export time, and (as the
buffer-reusing `runtime.preprocess.Preprocessor`, held equal to it by a test) the runtime.
Training keeps its own tensor path (`adapt.data.transforms`) with the same constants.

    frame uint8 (H0, W0, 3) in `frame_order`
      -> stretch-resize to size (H, W), bilinear       (the export's resize policy)
      -> channels in `spec.color_order`
      -> x * spec.scale, then (x - mean) / std per channel
      -> float32 (1, 3, H, W)
"""

from __future__ import annotations

from typing import Literal, Protocol

import cv2
import numpy as np

# torchvision's ImageNet statistics, which every backbone here was pretrained with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# (H, W): Cityscapes at half resolution, the usual UDA evaluation size.
DEFAULT_INPUT_SIZE: tuple[int, int] = (512, 1024)
RESIZE_MODES = ("stretch",)   # the aspect ratio is not kept, as in training's eval resize


class InputContract(Protocol):
    """What `prepare_input` reads of a manifest's `InputSpec`.

    A protocol rather than the class itself: `common.manifest` takes its defaults from this
    module, so importing it back here would make the two modules import each other.
    """

    @property
    def size(self) -> tuple[int, int]: ...
    @property
    def color_order(self) -> str: ...
    @property
    def scale(self) -> float: ...
    @property
    def mean(self) -> tuple[float, float, float]: ...
    @property
    def std(self) -> tuple[float, float, float]: ...


def prepare_input(frame: np.ndarray, spec: InputContract, size: tuple[int, int] | None = None,
                  frame_order: Literal["BGR", "RGB"] = "BGR") -> np.ndarray:
    """uint8 (H0, W0, 3) in `frame_order` -> float32 (1, 3, H, W) at `size` (default `spec.size`).

    OpenCV decodes to BGR (the default here); `adapt.images.read_rgb` and datasets give RGB.
    """
    height, width = size if size is not None else spec.size
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames are (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
    if frame.shape[:2] != (height, width):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    if frame_order.upper() != spec.color_order.upper():
        frame = frame[..., ::-1]
    pixels = frame.astype(np.float32) * np.float32(spec.scale)
    pixels = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])
