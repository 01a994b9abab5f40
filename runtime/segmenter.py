"""`Segmenter`: numpy frames in, class-id masks out, from an exported model, without torch.

The Python face of `uda-adapt run` for code that owns its own frame loop (a ROS node, a
GStreamer appsink, a batch job):

    from uda_adapt import Segmenter
    with Segmenter("exports/mycam") as seg:        # a bundle, model.onnx or a .engine
        mask = seg(frame)                          # (H, W) uint8 class ids at the frame's size
        colour = seg.colorize(mask)                # (H, W, 3) uint8 in the palette, RGB

It uses the same pieces as the command line: the bundle's choice of model for this device
(runtime/bundle.py), the backends (ONNX Runtime, TensorRT) and the one input contract
(common/preprocess.py), so a mask here equals the one `run` draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np

from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import Manifest
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.runtime.backends import open_backend
from uda_adapt.runtime.backends.base import Backend
from uda_adapt.runtime.bundle import resolve_model


def _silent(_: str) -> None:
    """The library stays quiet by default; pass `log=print` to see which model and providers run."""


class Segmenter:
    """An exported model (bundle directory, `.onnx` or `.engine`) that segments one frame at a time.

    `backend`: auto|ort|trt (auto: the bundle's engine for this device where TensorRT runs, else
    ONNX Runtime). `size`: (H, W) for models exported with dynamic shapes. `build`: let a bundle
    without an engine for this device build one (minutes) when TensorRT is installed.
    """

    def __init__(self, model: str | os.PathLike, *, backend: str = "auto", device: int = 0,
                 threads: int | None = None, size: tuple[int, int] | None = None, build: bool = False,
                 log: Callable[[str], None] = _silent) -> None:
        path = resolve_model(model, backend, device, log=log, build=build)
        if backend == "torch" or path.suffix.lower() in (".pt", ".pth"):
            raise UserError(f"Segmenter runs exported models (a bundle, .onnx or .engine), not {path.name}; "
                            "export it first: uda-adapt export CKPT --out DIR")
        self._backend: Backend = open_backend(path, backend, threads=threads, device=device, input_size=size, log=log)
        self.model_path = path
        if len(self.classes) > 255:
            self.close()
            raise UserError(f"{path.name} has {len(self.classes)} classes; Segmenter's uint8 masks hold at most 255")

    @property
    def manifest(self) -> Manifest:
        return self._backend.manifest

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.manifest.classes)

    @property
    def palette(self) -> np.ndarray:
        """(C, 3) uint8 RGB colour of each class id."""
        return np.asarray(self.manifest.palette, np.uint8).reshape(-1, 3)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the network is fed; frames of any size are resized to it."""
        return self._backend.input_size

    @property
    def providers(self) -> list[str]:
        return list(self._backend.providers)

    def __call__(self, frame: np.ndarray, frame_order: Literal["BGR", "RGB"] = "BGR") -> np.ndarray:
        """uint8 (H, W, 3) frame (BGR as OpenCV reads it, or RGB) -> uint8 (H, W) class ids at the frame's size."""
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            shown = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise UserError(f"Segmenter takes uint8 (H, W, 3) frames, got {shown}; convert with frame.astype(np.uint8)")
        if frame_order not in ("BGR", "RGB"):
            raise UserError(f"frame_order must be 'BGR' or 'RGB', not {frame_order!r}")
        batch = prepare_input(frame, self.manifest.input, self.input_size, frame_order)
        mask = self._backend.infer(batch)[0].astype(np.uint8)
        height, width = frame.shape[:2]
        if mask.shape != (height, width):   # nearest: class ids must never blend
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        return mask

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """uint8 (H, W) class ids -> uint8 (H, W, 3) RGB palette colours; ids past the palette (ignore) are black."""
        table = np.zeros((256, 3), np.uint8)
        table[: len(self.palette)] = self.palette
        return table[np.asarray(mask, np.uint8)]

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Segmenter({self._backend.describe()})"
