"""The one interface every inference backend implements.

`infer` takes a normalised float32 batch (B, 3, H, W) at `input_size` and returns an int32
class-index mask (B, h, w): at input resolution for exported models (argmax fused in the
graph); lower for a logits model exported at its output stride. The renderer scales the mask
to the frame with nearest-neighbour.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from uda_adapt.common.manifest import Manifest

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
    """The (H, W) to feed: an explicit override (`--size`), else the manifest's `input.size`."""
    if override is not None:
        return int(override[0]), int(override[1])
    return manifest.input.size


def logits_to_mask(output: np.ndarray) -> np.ndarray:
    """float (B, C, h, w) logits -> int32 (B, h, w); masks pass through as int32."""
    if output.ndim == 4:
        return output.argmax(axis=1).astype(np.int32)
    return output.astype(np.int32, copy=False)
