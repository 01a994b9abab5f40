"""Cross-domain mixing for mean-teacher self-training (DACS's ClassMix) and its strong augmentation.

ClassMix: for each source image, half of the classes present in its label (chosen per image)
are cut out and pasted onto a target image. The mixed label takes the source label where
pixels were pasted and the teacher's pseudo label elsewhere: pixels and labels move with the
same mask, so a pasted car keeps its car label. The mixed image then gets colour jitter and a
Gaussian blur, so the student cannot match the teacher by copying its input statistics.

Every random choice draws from an explicit `torch.Generator`, whose state a checkpoint saves:
a resumed run makes the same choices as an uninterrupted one.

Shapes: images (B, 3, H, W) normalised with `mean`/`std`; labels (B, H, W) long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adapt.classes import IGNORE_INDEX


def classmix_masks(source_labels: torch.Tensor, generator: torch.Generator,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, H, W) bool: the pixels of half of the classes present in each source label.

    Half is rounded up (DACS: `(n + n % 2) / 2`), so an image with one class pastes it. An image
    with no labelled pixel pastes nothing.
    """
    masks = torch.zeros_like(source_labels, dtype=torch.bool)
    for b, label in enumerate(source_labels):
        classes = torch.unique(label)
        classes = classes[classes != ignore_index]
        if classes.numel() == 0:
            continue
        count = (classes.numel() + 1) // 2
        order = torch.randperm(classes.numel(), generator=generator)[:count].to(classes.device)
        masks[b] = torch.isin(label, classes[order])
    return masks


def mix(mask: torch.Tensor, pasted: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """`pasted` where mask (B, H, W) is true, `base` elsewhere; images (B, C, H, W) or labels (B, H, W)."""
    if pasted.ndim == mask.ndim + 1:
        mask = mask.unsqueeze(1)
    return torch.where(mask, pasted, base)


@dataclass
class StrongAugmentation:
    """Colour jitter and Gaussian blur on normalised images, per image, as DACS/DAFormer.

    jitter: brightness/contrast/saturation factors in [1 - s, 1 + s] and a hue shift of up to
    s / 4 turns, applied with probability `jitter_p`; blur: sigma ~ U(0.15, 1.15), kernel about
    10 % of the image's short side (odd), with probability `blur_p`.
    """

    mean: Sequence[float]
    std: Sequence[float]
    jitter_strength: float = 0.2
    jitter_p: float = 0.2
    blur_p: float = 0.5

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        rgb = images * std + mean
        out = []
        for image in rgb:
            draws = torch.rand(6, generator=generator).tolist()
            if draws[0] < self.jitter_p:
                s = self.jitter_strength
                factors = [1 - s + 2 * s * v for v in draws[1:4]]
                image = colour_jitter(image, *factors, hue=(draws[4] - 0.5) * s / 2)
            if torch.rand((), generator=generator).item() < self.blur_p:
                sigma = 0.15 + torch.rand((), generator=generator).item()
                image = gaussian_blur(image, sigma, kernel_size(image.shape[-2:]))
            out.append(image)
        return (torch.stack(out) - mean) / std


def kernel_size(size: Sequence[int], fraction: float = 0.1) -> int:
    """An odd kernel of about `fraction` of the short side (at least 3)."""
    k = max(3, int(math.ceil(fraction * min(size))))
    return k if k % 2 else k + 1


def colour_jitter(image: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float = 0.0) -> torch.Tensor:
    """RGB (3, H, W) in [0, 1] -> jittered, clamped to [0, 1]. `hue` is a shift in turns."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device).view(3, 1, 1)
    image = (image * brightness).clamp(0, 1)
    gray_mean = (image * weights).sum(0).mean()
    image = ((image - gray_mean) * contrast + gray_mean).clamp(0, 1)
    gray = (image * weights).sum(0, keepdim=True)
    image = (gray + (image - gray) * saturation).clamp(0, 1)
    if hue:
        image = rotate_hue(image, hue)
    return image


def rotate_hue(image: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate the hue of RGB (3, H, W) by `turns` about the grey axis (a YIQ-space rotation)."""
    angle = 2 * math.pi * turns
    cos, sin = math.cos(angle), math.sin(angle)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          dtype=image.dtype, device=image.device)
    rotation = torch.tensor([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], dtype=image.dtype, device=image.device)
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq
    return torch.einsum("ij,jhw->ihw", matrix, image).clamp(0, 1)


def gaussian_blur(image: torch.Tensor, sigma: float, size: int) -> torch.Tensor:
    """Separable Gaussian blur of (3, H, W) with reflect padding; the image keeps its size."""
    radius = size // 2
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[0]
    out = image.unsqueeze(0)
    pad_w, pad_h = min(radius, image.shape[-1] - 1), min(radius, image.shape[-2] - 1)
    out = F.pad(out, (pad_w, pad_w, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel[radius - pad_w: radius + pad_w + 1].view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, pad_h, pad_h), mode="reflect")
    out = F.conv2d(out, kernel[radius - pad_h: radius + pad_h + 1].view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return out.squeeze(0)
