"""GTA5 (Richter et al. 2016, "Playing for Data") in its download layout.

    ROOT/images/<stem>.png
    ROOT/labels/<stem>.png       Cityscapes label ids (indexed-colour PNGs)
    ROOT/{train,val}.txt         optional: image names per split; without them `train` is every image

A handful of GTA5 images differ in size from their labels; the size check names each one, and
listing the good images in `train.txt` is the way to leave them out.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from uda_adapt.adapt.data.cityscapes import LABEL_ID_TABLE
from uda_adapt.adapt.data.dataset import PairTransform, SegmentationDataset, flat_layout_samples, read_id_png, require_dir

LAYOUT = "ROOT/images/<stem>.png with ROOT/labels/<stem>.png"


class GTA5Dataset(SegmentationDataset):
    """GTA5 with its labels mapped to the 19 Cityscapes train ids."""

    id_hint = "GTA5 labels are Cityscapes label ids, mapped through the official table"

    def __init__(self, root: str | os.PathLike, split: str, *, require_labels: bool,
                 transform: PairTransform | None = None) -> None:
        root = require_dir(Path(root), "GTA5 root", f"expected {LAYOUT}")
        image_dir = require_dir(root / "images", "GTA5 images folder", f"expected {LAYOUT}")
        samples, has_labels = flat_layout_samples(root, image_dir, root / "labels", split, name="GTA5",
                                                  missing_labels_hint="unpack the GTA5 labels next to images/",
                                                  require_labels=require_labels)
        super().__init__(samples, has_labels=has_labels, transform=transform)

    def read_train_ids(self, path: Path) -> np.ndarray:
        return LABEL_ID_TABLE[read_id_png(path, "Cityscapes label ids")]
