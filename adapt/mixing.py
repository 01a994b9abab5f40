"""Cross-domain mixing for mean-teacher self-training (DACS's ClassMix) and its strong augmentation.

ClassMix: for each source image, half of the classes present in its label (chosen per image)
are cut out and pasted onto a target image. This is DACS's choice (vikolss/DACS trainUDA.py:426,
`torch.unique(labels[image_i])`) with one difference: the ignore label is never a candidate here,
where DACS counts it as a class (when drawn, it pastes unlabelled pixels in place of a real class). It is not DAFormer's: DAFormer's `get_class_masks`
(mmseg/models/utils/dacs_transforms.py:93) takes `torch.unique(labels)` of the whole batch for
every image, ignore label included, so an image may be given classes it does not contain and
paste less than half of its own. The mixed label takes the source label where
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

from uda_adapt.adapt.classes import IGNORE_INDEX


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
class Jitter:
    """One image's colour jitter, as kornia 0.5's `ColorJitter` (the version DACS/DAFormer pin).

    brightness: an additive shift in [-s, s]; contrast: a multiplicative factor in [1 - s, 1 + s]
    (no mean subtraction); saturation: a factor on HSV saturation; hue: a shift of HSV hue in turns,
    in [-s, s] (kornia multiplies its hue factor by 2 pi); `order`: the random order of the four.
    """

    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, ...] = (0, 1, 2, 3)


@dataclass(frozen=True)
class ImageAugmentation:
    """The random choices for one image: its colour jitter and blur sigma, or None for either."""

    jitter: Jitter | None
    blur_sigma: float | None


@dataclass
class StrongAugmentation:
    """Colour jitter and Gaussian blur on normalised images, as DACS/DAFormer's `strong_transform`.

    DAFormer (mmseg/models/uda/dacs.py) draws `color_jitter = random.uniform(0, 1)` and
    `blur = random.uniform(0, 1)` once per training step, and `dacs_transforms.color_jitter`
    applies the jitter when `color_jitter > p` with p = 0.2, i.e. with probability 0.8, and the
    blur when `blur > 0.5`. The decisions are therefore per batch; the jitter factors and blur
    sigma are drawn per image (kornia samples per call, and DAFormer calls it image by image).
    `jitter_p` here is the probability of applying (0.8 = DAFormer's `p=0.2`).
    blur: sigma ~ U(0.15, 1.15), kernel ceil(0.1 x side), made odd by rounding down, per axis.
    """

    mean: Sequence[float]
    std: Sequence[float]
    jitter_strength: float = 0.2
    jitter_p: float = 0.8
    blur_p: float = 0.5

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(images, self.draw(len(images), generator))

    def draw(self, count: int, generator: torch.Generator) -> list[ImageAugmentation]:
        """The choices for a batch of `count` images, in order (one jitter and one blur decision)."""
        jitter_on, blur_on = (v < p for v, p in zip(torch.rand(2, generator=generator).tolist(), (self.jitter_p, self.blur_p)))
        plans = []
        s = self.jitter_strength
        for _ in range(count):
            jitter = None
            if jitter_on:
                b, c, sat, h = torch.rand(4, generator=generator).tolist()
                order = tuple(torch.randperm(4, generator=generator).tolist())
                jitter = Jitter(brightness=(2 * b - 1) * s, contrast=1 - s + 2 * s * c,
                                saturation=1 - s + 2 * s * sat, hue=(2 * h - 1) * s, order=order)
            sigma = 0.15 + torch.rand((), generator=generator).item() if blur_on else None
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
                image = colour_jitter(image, plan.jitter)
            if plan.blur_sigma is not None:
                image = gaussian_blur(image, plan.blur_sigma, kernel_sizes(image.shape[-2:]))
            out.append(image)
        return (torch.stack(out) - mean) / std


def kernel_sizes(size: Sequence[int], fraction: float = 0.1) -> tuple[int, int]:
    """(ky, kx): ceil(fraction x side), minus one where even (DACS: floor(k - 0.5 + k % 2)), at least 3."""
    def odd(side: int) -> int:
        k = int(math.ceil(fraction * side))
        return max(3, k if k % 2 else k - 1)
    return odd(size[0]), odd(size[1])


def colour_jitter(image: torch.Tensor, jitter: Jitter) -> torch.Tensor:
    """RGB (3, H, W) in [0, 1] -> jittered as kornia 0.5 does, each step clamped to [0, 1]."""
    steps = (
        lambda x: (x + jitter.brightness).clamp(0, 1),
        lambda x: (x * jitter.contrast).clamp(0, 1),
        lambda x: adjust_hsv(x, saturation=jitter.saturation),
        lambda x: adjust_hsv(x, hue_turns=jitter.hue),
    )
    for index in jitter.order:
        image = steps[index](image)
    return image


def adjust_hsv(image: torch.Tensor, saturation: float = 1.0, hue_turns: float = 0.0) -> torch.Tensor:
    """Scale HSV saturation (clamped to [0, 1]) and shift HSV hue (in turns) of RGB (3, H, W)."""
    h, s, v = rgb_to_hsv(image)
    s = (s * saturation).clamp(0, 1)
    h = torch.remainder(h + hue_turns, 1.0)
    return hsv_to_rgb(h, s, v)


def rgb_to_hsv(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB (3, H, W) in [0, 1] -> hue in turns [0, 1), saturation, value, each (H, W)."""
    r, g, b = image
    value, argmax = image.max(dim=0)
    delta = value - image.min(dim=0).values
    safe = delta.clamp_min(1e-12)
    hue = torch.where(argmax == 0, torch.remainder((g - b) / safe, 6.0),
                      torch.where(argmax == 1, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) / 6.0
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    return hue, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Hue in turns, saturation, value (H, W) -> RGB (3, H, W)."""
    sector = hue * 6.0
    k = torch.stack([torch.remainder(sector + n, 6.0) for n in (5.0, 3.0, 1.0)])
    return value - value * saturation * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def gaussian_blur(image: torch.Tensor, sigma: float, size: int | tuple[int, int]) -> torch.Tensor:
    """Separable Gaussian blur of (3, H, W) with reflect padding and odd kernel size (ky, kx) or k."""
    ky, kx = (size, size) if isinstance(size, int) else size
    channels = image.shape[0]
    out = image.unsqueeze(0)
    for axis, k in ((-1, kx), (-2, ky)):
        radius = k // 2
        x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = kernel / kernel.sum()
        pad = min(radius, image.shape[axis] - 1)
        kernel = kernel[radius - pad: radius + pad + 1]
        if axis == -1:
            out = F.conv2d(F.pad(out, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
        else:
            out = F.conv2d(F.pad(out, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return out.squeeze(0)
