"""Rare-class sampling of source images (DAFormer's RCS).

Class c is drawn with probability softmax((1 - f_c) / T) over the classes present in the
source, f_c its share of labelled source pixels; then an image containing c is drawn
uniformly. A small temperature T favours rare classes strongly, so that a class in 2 % of the
images is seen in many batches, not a few, and self-training does not forget it.

The statistics take one pass over every source label (24,966 for GTA5), so they are cached
beside the labels, as DAFormer's `sample_class_stats.json`, under a key made of the label
files' names, sizes and modification times: a changed label, or another class count, is a
new key. Where the label directory is read-only they are computed at each start.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.errors import UserError

CACHE_PREFIX = ".uda-adapt-class-stats-"


@dataclass
class ClassStatistics:
    frequency: np.ndarray            # (C,) share of labelled pixels per class
    images_with: list[list[int]]     # per class, the indices of the images that contain it


def statistics_cache(dataset, num_classes: int, min_pixels: int) -> Path | None:
    """Where `dataset`'s statistics are cached (beside its first label), or None for a dataset
    without label files."""
    paths = [dataset.label_path(i) for i in range(len(dataset))] if hasattr(dataset, "label_path") else [None]
    if not paths or any(p is None for p in paths):
        return None
    digest = hashlib.sha256(f"{type(dataset).__name__} {num_classes} {min_pixels}".encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"\n{path} {stat.st_size} {stat.st_mtime_ns}".encode())
    return Path(paths[0]).parent / f"{CACHE_PREFIX}{digest.hexdigest()[:16]}.json"


def class_statistics(dataset, num_classes: int, min_pixels: int = 0) -> ClassStatistics:
    """Every label of `dataset` (`load_label(i)` -> train ids) read once, or the cached result.

    `images_with[c]` lists the images with more than `min_pixels` pixels of c (DAFormer's
    `pixels > self.rcs_min_pixels`); `frequency` counts every pixel."""
    cache = statistics_cache(dataset, num_classes, min_pixels)
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        return ClassStatistics(np.asarray(saved["frequency"], dtype=np.float64), saved["images_with"])
    stats = _read_class_statistics(dataset, num_classes, min_pixels)
    if cache is not None and os.access(cache.parent, os.W_OK):
        try:
            atomic_write_text(cache, json.dumps({"frequency": stats.frequency.tolist(), "images_with": stats.images_with}))
        except UserError:
            pass   # a full disk: the cache is only a saving, and the statistics are already here
    return stats


def _read_class_statistics(dataset, num_classes: int, min_pixels: int) -> ClassStatistics:
    pixels = np.zeros(num_classes, np.int64)
    images_with: list[list[int]] = [[] for _ in range(num_classes)]
    for index in range(len(dataset)):
        label = dataset.load_label(index)
        counts = np.bincount(label[label != IGNORE_INDEX], minlength=num_classes)[:num_classes]
        pixels += counts
        for c in np.flatnonzero(counts > min_pixels):
            images_with[c].append(index)
    return ClassStatistics(pixels / max(pixels.sum(), 1), images_with)


def class_probabilities(stats: ClassStatistics, temperature: float) -> torch.Tensor:
    """(C,) softmax((1 - f_c) / T) over the classes that appear in at least one image; 0 elsewhere."""
    present = torch.tensor([bool(images) for images in stats.images_with])
    logits = (1.0 - torch.as_tensor(stats.frequency, dtype=torch.float64)) / temperature
    logits = logits.masked_fill(~present, float("-inf"))
    return torch.softmax(logits, dim=0)


def rare_class_order(stats: ClassStatistics, temperature: float):
    """An epoch order for `BatchStream`: `size` (image, class) picks drawn class-first, with
    replacement; the class lets the loader look for a crop that shows it (`SeededSamples`)."""
    probabilities = class_probabilities(stats, temperature)
    if not bool(probabilities.isfinite().all()) or float(probabilities.sum()) == 0:
        raise UserError("rare-class sampling found no source image with more than rcs_min_pixels pixels of any class; "
                        "lower source.rcs_min_pixels or self_train.mean_teacher.rcs_min_pixels, whichever stage samples "
                        "(it counts label pixels at the labels' own size)")

    def order(generator: torch.Generator, size: int) -> list[tuple[int, int]]:
        classes = torch.multinomial(probabilities, size, replacement=True, generator=generator).tolist()
        picks = torch.rand(size, generator=generator, dtype=torch.float64).tolist()
        return [(stats.images_with[c][int(u * len(stats.images_with[c]))], c) for c, u in zip(classes, picks)]

    return order


def rare_class_stream(dataset, num_classes: int, temperature: float, min_pixels: int, min_crop_ratio: float):
    """The `BatchStream` arguments of rare-class sampling: the epoch order and the class pixels a
    crop must show (`order=`, `min_class_pixels=`)."""
    order = rare_class_order(class_statistics(dataset, num_classes, min_pixels), temperature)
    return order, min_pixels * min_crop_ratio
