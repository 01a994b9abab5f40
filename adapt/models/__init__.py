"""Segmentation networks by name.

Every model maps normalised RGB (B, 3, H, W) to logits at its own output stride
(B, C, h, w); callers upsample with `upsample_logits` where they need full resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from adapt.errors import UserError
from adapt.models.small import SmallSegmenter


def _build_small(num_classes: int, pretrained: str | None) -> nn.Module:
    model = SmallSegmenter(num_classes)
    if pretrained:
        raise UserError("model 'small' has no pretrained weights; remove model.pretrained")
    return model


MODEL_BUILDERS: dict[str, Callable[[int, str | None], nn.Module]] = {
    "small": _build_small,
}


def build_segmenter(name: str, num_classes: int, pretrained: str | None = None) -> nn.Module:
    """Build model `name`; `pretrained` is None, "imagenet" or a path to a local weight file."""
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(MODEL_BUILDERS)}") from None
    return builder(num_classes, pretrained)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B, C, h, w) logits to (B, C, *size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
