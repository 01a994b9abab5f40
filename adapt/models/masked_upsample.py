"""Upsampling a prediction grid without reading the padding beside its valid cells."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_upsample(x: torch.Tensor, valid: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B, D, h, w) to `size` that reads only cells where `valid` (B, h, w).

    Plain bilinear would blend a border cell with the padding beside it, letting what padding
    predicts leak into valid tokens; here the weights are renormalised over valid cells (a
    fine cell inside a valid cell always has one). Fine cells with no valid cell in reach
    (inside padding) take plain bilinear, so probabilities stay probabilities everywhere.
    """
    plain = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if valid is None:
        return plain
    weight = valid.unsqueeze(1).to(x.dtype)
    total = F.interpolate(x * weight, size=size, mode="bilinear", align_corners=False)
    share = F.interpolate(weight, size=size, mode="bilinear", align_corners=False)
    return torch.where(share > 0, total / share.clamp_min(1e-6), plain)
