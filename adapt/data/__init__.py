"""Datasets: the folder format users bring, and the GTA5, SYNTHIA and Cityscapes layouts.

Every dataset yields RGB uint8 images with uint8 train ids (255 = ignore) from `load(i)`, and
`transform(image, label)` tensors from `ds[i]`.
"""

from __future__ import annotations

import os
from pathlib import Path

from uda_adapt.adapt.data.cityscapes import CityscapesDataset
from uda_adapt.adapt.data.dataset import PairTransform, PseudoLabelDataset, Sample, SegmentationDataset
from uda_adapt.adapt.data.folder import FolderDataset
from uda_adapt.adapt.data.gta5 import GTA5Dataset
from uda_adapt.adapt.data.meta import DatasetMeta, read_meta, write_meta
from uda_adapt.adapt.data.synthia import SynthiaDataset
from uda_adapt.common.errors import UserError

DATASET_KINDS: dict[str, type[SegmentationDataset]] = {
    "folder": FolderDataset,
    "gta5": GTA5Dataset,
    "synthia": SynthiaDataset,
    "cityscapes": CityscapesDataset,
}


def open_dataset(kind: str, root: str | os.PathLike, split: str, *, require_labels: bool,
                 transform: PairTransform | None = None) -> SegmentationDataset:
    """Open `split` of the dataset at `root` laid out as `kind` (a key of DATASET_KINDS)."""
    if kind not in DATASET_KINDS:
        raise UserError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(DATASET_KINDS)}")
    return DATASET_KINDS[kind](Path(root), split, require_labels=require_labels, transform=transform)


__all__ = [
    "DATASET_KINDS", "CityscapesDataset", "DatasetMeta", "FolderDataset", "GTA5Dataset", "PairTransform",
    "PseudoLabelDataset", "Sample", "SegmentationDataset", "SynthiaDataset", "open_dataset", "read_meta",
    "write_meta",
]
