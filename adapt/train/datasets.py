"""The datasets a run trains on, built from the config, with the cross-dataset checks."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from uda_adapt.adapt.data import open_dataset
from uda_adapt.adapt.data.transforms import TrainTransform
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.train.config import DatasetConfig, TrainConfig


def train_transform(cfg: TrainConfig, spec: DatasetConfig, mean, std, jitter: float | None = None) -> TrainTransform:
    """Training crops of the domain `spec` (its own base size; crop, scales and flip shared)."""
    data = cfg.data
    return TrainTransform(
        crop_size=tuple(data.crop_size),
        scale_range=tuple(data.scale_range),
        base_size=tuple(spec.base_size) if spec.base_size else None,
        flip=data.flip,
        jitter=data.jitter if jitter is None else jitter,
        mean=mean,
        std=std,
    )


def labelled_train_set(spec: DatasetConfig, transform):
    return open_dataset(spec.kind, spec.root, spec.train_split, require_labels=True, transform=transform)


def unlabelled_train_set(spec: DatasetConfig, transform=None):
    """The target train split as the adaptation sees it: images only, labels never read."""
    return open_dataset(spec.kind, spec.root, spec.train_split, require_labels=False, transform=transform)


# The validity map's value on image pixels inside the pseudo-label margins (0 elsewhere on the
# image, IGNORE_INDEX on crop padding).
MARGIN = 1


class _ValidPixels(Dataset):
    """An unlabelled split whose "label" marks image pixels (0) so that padding (IGNORE_INDEX) shows.

    The transform pads crops of scaled-down images with IGNORE_INDEX; with an all-zero label in,
    `label != IGNORE_INDEX` is exactly where the crop has image content. `margins` (top, bottom,
    left, right shares of the image) are marked MARGIN before the transform, so they move with
    the scaling, cropping and flipping (MIC marks them on the full image, before the crop).
    """

    def __init__(self, base, transform, margins: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> None:
        self.base, self.transform, self.margins = base, transform, tuple(margins)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image = self.base.load_image(index)
        return self.transform(image, margin_map(image.shape[:2], self.margins))


def margin_map(size: tuple[int, int], margins: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) uint8: MARGIN in the top, bottom, left and right shares `margins` of the image, 0 elsewhere."""
    height, width = size
    top, bottom, left, right = (round(share * side) for share, side in zip(margins, (height, height, width, width)))
    label = np.zeros((height, width), np.uint8)
    # Slices from `side - n`, not `-n`: a margin of 0 rows must mark nothing (x[-0:] is all of x).
    label[:top] = MARGIN
    label[height - bottom:] = MARGIN
    label[:, :left] = MARGIN
    label[:, width - right:] = MARGIN
    return label


def target_crop_set(cfg: TrainConfig, mean, std) -> Dataset:
    """Target train crops (geometric augmentation only) with a validity map in place of labels:
    0 on image pixels, MARGIN in the mean teacher's pseudo-label margins, IGNORE_INDEX on padding."""
    return _ValidPixels(unlabelled_train_set(cfg.data.target), train_transform(cfg, cfg.data.target, mean, std, jitter=0.0),
                        cfg.self_train.mean_teacher.pseudo_margins)


def check_same_classes(source, target) -> None:
    if tuple(source.classes) != tuple(target.classes):
        raise UserError(
            f"source and target datasets have different class sets ({len(source.classes)} vs {len(target.classes)} classes); "
            "give both the same meta.json classes"
        )
