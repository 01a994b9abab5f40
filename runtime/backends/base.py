"""The one interface every inference backend implements.

`infer` takes a normalised float32 batch (B, 3, H, W) at `input_size` and returns an int32
class-index mask (B, h, w): at input resolution for exported models (argmax fused in the
graph); lower for a logits model exported at its output stride. The renderer scales the mask
to the frame with nearest-neighbour.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from common.manifest import Manifest

DEFAULT_INPUT_SIZE = (512, 1024)


class Backend(Protocol):
    manifest: Manifest               # classes, palette, normalisation
    input_size: tuple[int, int]      # (H, W) the network is fed
    providers: list[str]             # what actually runs it, e.g. ["CPUExecutionProvider"]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (B, 3, H, W) -> int32 (B, h, w) class indices."""

    def describe(self) -> str:
        """One line: backend, model file, providers, input size."""

    def close(self) -> None: ...


def input_size_from(manifest: Manifest, override: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (H, W) to feed: an explicit override, else the manifest's static shape or resize size."""
    if override is not None:
        return override
    shape = manifest.input.shape
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return int(shape[2]), int(shape[3])
    size = manifest.resize.get("size") if isinstance(manifest.resize, dict) else None
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return DEFAULT_INPUT_SIZE


def logits_to_mask(output: np.ndarray) -> np.ndarray:
    """float (B, C, h, w) logits -> int32 (B, h, w); masks pass through as int32."""
    if output.ndim == 4:
        return output.argmax(axis=1).astype(np.int32)
    return output.astype(np.int32, copy=False)
