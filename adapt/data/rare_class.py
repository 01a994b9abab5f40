"""Rare-class sampling of source images (DAFormer's RCS).

Class c is drawn with probability softmax((1 - f_c) / T) over the classes present in the
source, f_c its share of labelled source pixels; then an image containing c is drawn
uniformly. A small temperature T favours rare classes strongly, so that a class in 2 % of the
images is seen in many batches, not a few, and self-training does not forget it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adapt.classes import IGNORE_INDEX


@dataclass
class ClassStatistics:
    frequency: np.ndarray            # (C,) share of labelled pixels per class
    images_with: list[list[int]]     # per class, the indices of the images that contain it


def class_statistics(dataset, num_classes: int, min_pixels: int = 1) -> ClassStatistics:
    """Read every label of `dataset` (`load(i)` -> (image, label)) once."""
    pixels = np.zeros(num_classes, np.int64)
    images_with: list[list[int]] = [[] for _ in range(num_classes)]
    for index in range(len(dataset)):
        label = dataset.load_label(index)
        counts = np.bincount(label[label != IGNORE_INDEX], minlength=num_classes)[:num_classes]
        pixels += counts
        for c in np.flatnonzero(counts >= min_pixels):
            images_with[c].append(index)
    return ClassStatistics(pixels / max(pixels.sum(), 1), images_with)


def class_probabilities(stats: ClassStatistics, temperature: float) -> torch.Tensor:
    """(C,) softmax((1 - f_c) / T) over the classes that appear in at least one image; 0 elsewhere."""
    present = torch.tensor([bool(images) for images in stats.images_with])
    logits = (1.0 - torch.as_tensor(stats.frequency, dtype=torch.float64)) / temperature
    logits = logits.masked_fill(~present, float("-inf"))
    return torch.softmax(logits, dim=0)


def rare_class_order(stats: ClassStatistics, temperature: float):
    """An epoch order for `BatchStream`: `size` images drawn class-first, with replacement."""
    probabilities = class_probabilities(stats, temperature)

    def order(generator: torch.Generator, size: int) -> list[int]:
        classes = torch.multinomial(probabilities, size, replacement=True, generator=generator).tolist()
        picks = torch.rand(size, generator=generator, dtype=torch.float64).tolist()
        return [stats.images_with[c][int(u * len(stats.images_with[c]))] for c, u in zip(classes, picks)]

    return order
