"""Cross-domain mixing for mean-teacher self-training (DACS's ClassMix) and its strong augmentation.

ClassMix: for each source image, half of the classes present in its label (chosen per image)
are cut out and pasted onto a target image. The mixed label takes the source label where
pixels were pasted and the teacher's pseudo label elsewhere: pixels and labels move with the
same mask, so a pasted car keeps its car label. The mixed image then gets colour jitter and a
Gaussian blur, so the student cannot match the teacher by copying its input statistics.

Every random choice draws from an explicit `torch.Generator`, whose state a checkpoint saves:
a resumed run makes the same choices as an uninterrupted one. The choices are drawn for a whole
batch before any pixel moves (`choose_classes`, `StrongAugmentation.draw`), so that in
data-parallel training every rank draws the global batch's choices, in the single-process
order, and applies its own part: each rank mixes its images as one process would have.

Shapes: images (B, 3, H, W) normalised with `mean`/`std`; labels (B, H, W) long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from adapt.classes import IGNORE_INDEX


def class_presence(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, num_classes) bool: which classes each label map (B, H, W) contains."""
    presence = torch.zeros(labels.shape[0], num_classes, dtype=torch.bool, device=labels.device)
    for b, label in enumerate(labels):
        classes = torch.unique(label)
        presence[b, classes[(classes != ignore_index) & (classes < num_classes)]] = True
    return presence


def choose_classes(presence: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """Per image, the class ids to paste: half of those present, rounded up (DACS: `(n + n % 2) / 2`).

    An image with one class pastes it; one with no labelled pixel pastes nothing.
    """
    chosen = []
    for row in presence:
        classes = row.nonzero().flatten()
        if classes.numel():
            count = (classes.numel() + 1) // 2
            classes = classes[torch.randperm(classes.numel(), generator=generator)[:count].to(classes.device)]
        chosen.append(classes)
    return chosen


def paste_masks(labels: torch.Tensor, chosen: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, H, W) bool: the pixels of each label map whose class was chosen for it."""
    masks = torch.zeros_like(labels, dtype=torch.bool)
    for b, (label, classes) in enumerate(zip(labels, chosen)):
        if classes.numel():
            masks[b] = torch.isin(label, classes.to(label.device))
    return masks


def classmix_masks(source_labels: torch.Tensor, generator: torch.Generator,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, H, W) bool: the pixels of half of the classes present in each source label."""
    labelled = source_labels[source_labels != ignore_index]
    num_classes = int(labelled.max()) + 1 if labelled.numel() else 1
    presence = class_presence(source_labels, num_classes, ignore_index)
    return paste_masks(source_labels, choose_classes(presence, generator))


def mix(mask: torch.Tensor, pasted: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """`pasted` where mask (B, H, W) is true, `base` elsewhere; images (B, C, H, W) or labels (B, H, W)."""
    if pasted.ndim == mask.ndim + 1:
        mask = mask.unsqueeze(1)
    return torch.where(mask, pasted, base)


@dataclass(frozen=True)
class ImageAugmentation:
    """The random choices for one image: jitter (brightness, contrast, saturation, hue) and blur sigma, or None."""

    jitter: tuple[float, float, float, float] | None
    blur_sigma: float | None


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
        return self.apply(images, self.draw(len(images), generator))

    def draw(self, count: int, generator: torch.Generator) -> list[ImageAugmentation]:
        """The choices for `count` images, in order (what `__call__` would draw for a batch of `count`)."""
        plans = []
        for _ in range(count):
            draws = torch.rand(6, generator=generator).tolist()
            jitter = None
            if draws[0] < self.jitter_p:
                s = self.jitter_strength
                brightness, contrast, saturation = (1 - s + 2 * s * v for v in draws[1:4])
                jitter = (brightness, contrast, saturation, (draws[4] - 0.5) * s / 2)
            sigma = None
            if torch.rand((), generator=generator).item() < self.blur_p:
                sigma = 0.15 + torch.rand((), generator=generator).item()
            plans.append(ImageAugmentation(jitter, sigma))
        return plans

    def apply(self, images: torch.Tensor, plans: Sequence[ImageAugmentation]) -> torch.Tensor:
        """`images` (B, 3, H, W) normalised, each augmented by its plan."""
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        rgb = images * std + mean
        out = []
        for image, plan in zip(rgb, plans, strict=True):
            if plan.jitter is not None:
                brightness, contrast, saturation, hue = plan.jitter
                image = colour_jitter(image, brightness, contrast, saturation, hue=hue)
            if plan.blur_sigma is not None:
                image = gaussian_blur(image, plan.blur_sigma, kernel_size(image.shape[-2:]))
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
