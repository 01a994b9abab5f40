"""Paired (image, label) transforms: numpy RGB uint8 + uint8 train ids in, tensors out.

Randomness comes from torch's global RNG, so `torch.manual_seed` makes a run repeatable, and
DataLoader workers (which torch seeds per worker) draw different augmentations.
Labels are only ever resized with NEAREST and padded with `IGNORE_INDEX`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.common.errors import UserError
from uda_adapt.common.preprocess import IMAGENET_MEAN, IMAGENET_STD  # the one home of the constants


@dataclass
class TrainTransform:
    """Resize to `base_size`, random scale, colour jitter, normalise, random crop, random flip.

    Returns a float (3, H, W) image and a long (H, W) label with (H, W) == `crop_size`. Where the
    scaled image is smaller than the crop, the image is padded with zeros after normalisation
    (i.e. with the mean colour) and the label with `IGNORE_INDEX`, so padding adds no loss.
    """

    crop_size: tuple[int, int]                      # (H, W) of every output
    scale_range: tuple[float, float] = (0.5, 1.5)   # uniform random factor on top of base_size
    base_size: tuple[int, int] | None = None        # (H, W) first, e.g. GTA5 (1052, 1914) -> (720, 1280)
    flip: bool = True                               # horizontal flip with probability 0.5
    jitter: float = 0.0                             # brightness/contrast/saturation factor in [1-j, 1+j]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        _check_size("crop_size", self.crop_size)
        if self.base_size is not None:
            _check_size("base_size", self.base_size)
        low, high = self.scale_range
        if not 0 < low <= high:
            raise UserError(f"scale_range {tuple(self.scale_range)} must be two factors with 0 < low <= high")
        if not 0 <= self.jitter < 1:
            raise UserError(f"jitter {self.jitter} must be in [0, 1)")

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.base_size is not None:
            image, label = resize_pair(image, label, self.base_size)
        low, high = self.scale_range
        scale = low + (high - low) * _uniform()
        height, width = label.shape
        image, label = resize_pair(image, label, (max(1, round(height * scale)), max(1, round(width * scale))))
        pixels = image.astype(np.float32) / 255.0
        if self.jitter > 0:
            pixels = colour_jitter(pixels, self.jitter)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        pixels, label = random_crop(pixels, label, self.crop_size)
        if self.flip and _uniform() < 0.5:
            pixels, label = pixels[:, ::-1], label[:, ::-1]
        return _to_tensors(pixels, label)


@dataclass
class EvalTransform:
    """Normalise (and optionally resize) the image; the label stays at its original resolution.

    Evaluation compares predictions upsampled to the full label size, so only the network input
    is resized here.
    """

    size: tuple[int, int] | None = None   # (H, W) network input; None keeps the image size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size is not None:
            _check_size("size", self.size)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size is not None and image.shape[:2] != tuple(self.size):
            image = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        return normalize_image(image, self.mean, self.std), torch.from_numpy(np.ascontiguousarray(label)).long()


def normalize_image(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float (3, H, W), scaled to [0, 1] then standardised per channel."""
    pixels = (image.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to (H, W): bilinear for the image, nearest for the label (ids must not blend)."""
    if label.shape == tuple(size):
        return image, label
    dsize = (size[1], size[0])
    return (cv2.resize(image, dsize, interpolation=cv2.INTER_LINEAR),
            cv2.resize(label, dsize, interpolation=cv2.INTER_NEAREST))


def random_crop(pixels: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Crop (H, W) at a random offset; pad bottom/right with 0 (image) and IGNORE_INDEX (label)."""
    crop_h, crop_w = size
    height, width = label.shape
    top = int(torch.randint(0, max(height - crop_h, 0) + 1, ()).item())
    left = int(torch.randint(0, max(width - crop_w, 0) + 1, ()).item())
    out_pixels = np.zeros((crop_h, crop_w, pixels.shape[2]), np.float32)
    out_label = np.full((crop_h, crop_w), IGNORE_INDEX, np.uint8)
    h, w = min(crop_h, height), min(crop_w, width)
    out_pixels[:h, :w] = pixels[top:top + h, left:left + w]
    out_label[:h, :w] = label[top:top + h, left:left + w]
    return out_pixels, out_label


def colour_jitter(pixels: np.ndarray, strength: float) -> np.ndarray:
    """Random brightness, contrast and saturation on float RGB in [0, 1] (H, W, 3)."""
    brightness, contrast, saturation = (1 - strength + 2 * strength * _uniform() for _ in range(3))
    pixels = pixels * brightness
    gray = pixels @ np.asarray([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as torchvision
    pixels = (pixels - gray.mean()) * contrast + gray.mean()
    gray = pixels @ np.asarray([0.299, 0.587, 0.114], np.float32)
    pixels = gray[..., None] + (pixels - gray[..., None]) * saturation
    return np.clip(pixels, 0.0, 1.0)


def _to_tensors(pixels: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    return image, torch.from_numpy(np.ascontiguousarray(label)).long()


def _uniform() -> float:
    return float(torch.rand(()).item())


def _check_size(name: str, size: Sequence[int]) -> None:
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise UserError(f"{name} {tuple(size)} must be two positive integers (height, width)")
