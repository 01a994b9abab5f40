"""Block masks for masked image consistency (MIC, Hoyer et al. CVPR 2023).

As lhoyer/MIC `masking_transforms.py` (`BlockMaskGenerator`): the image is cut into square
blocks of side `block`, each block is kept when a uniform draw exceeds `ratio` (so a share
`ratio` of blocks is blanked on average), and the block grid is upsampled with nearest
neighbour to the image. Blanking multiplies the *normalised* image by the mask, so a blanked
pixel holds the dataset mean colour, exactly as MIC's `imgs * input_mask`.

Masks are drawn for the global batch from an explicit generator (its state is checkpointed),
so data-parallel ranks each take their slice of the single-process masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def block_size_for(crop: tuple[int, int], fraction: float) -> int:
    """Block side in pixels: `fraction` of the crop's short side (MIC: 64 of 512, 0.125), at least 1."""
    return max(1, round(fraction * min(crop)))


def block_masks(count: int, size: tuple[int, int], ratio: float, block: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 1, H, W) float {0, 1}: 1 where the image is kept.

    The grid is round(H / block) x round(W / block) blocks (at least 1 x 1), as MIC's.
    """
    height, width = size
    grid = (max(1, round(height / block)), max(1, round(width / block)))
    keep = (torch.rand((count, 1, *grid), generator=generator) > ratio).float()
    return F.interpolate(keep, size=(height, width), mode="nearest")


def mask_images(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Normalised images (B, 3, H, W) with blanked blocks set to 0, i.e. the mean colour."""
    return images * masks.to(images.device, images.dtype)
