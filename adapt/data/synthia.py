"""SYNTHIA-RAND-CITYSCAPES in its download layout.

    ROOT/RGB/<stem>.png
    ROOT/GT/LABELS/<stem>.png    16-bit PNG: class id in the first channel, instance id in the second
    ROOT/{train,val}.txt         optional: image names per split; without them `train` is every image

Trained and reported in the 19 Cityscapes train ids; terrain, truck and train never occur, which is
why SYNTHIA results are given on 16 and 13 classes (`adapt.classes.PROTOCOLS`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from uda_adapt.adapt.data.dataset import PairTransform, SegmentationDataset, flat_layout_samples, lookup_table, require_dir
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.images import read_unchanged

# SYNTHIA class id -> Cityscapes train id, as in the public loaders of CBST/CRST, DACS
# (data/synthia_loader.py), IAST and ProDA; names from SYNTHIA-RAND-CITYSCAPES' README.
# Unlisted ids (0 void, 13 parking-slot, 14 road-work, 22 lanemarking) are ignored.
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0,    # road
    4: 1,    # sidewalk
    2: 2,    # building
    21: 3,   # wall
    5: 4,    # fence
    7: 5,    # pole
    15: 6,   # traffic light
    9: 7,    # traffic sign
    6: 8,    # vegetation
    16: 9,   # terrain (absent from the images)
    1: 10,   # sky
    10: 11,  # pedestrian -> person
    17: 12,  # rider
    8: 13,   # car
    18: 14,  # truck (absent)
    19: 15,  # bus
    20: 16,  # train (absent)
    12: 17,  # motorcycle
    11: 18,  # bicycle
}
SYNTHIA_ID_TABLE = lookup_table(SYNTHIA_ID_TO_TRAIN_ID, size=1 << 16)

LAYOUT = "ROOT/RGB/<stem>.png with ROOT/GT/LABELS/<stem>.png"


class SynthiaDataset(SegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES with its labels mapped to the 19 Cityscapes train ids."""

    id_hint = "SYNTHIA class ids map to train ids through the SYNTHIA table"

    def __init__(self, root: str | os.PathLike, split: str, *, require_labels: bool,
                 transform: PairTransform | None = None) -> None:
        root = require_dir(Path(root), "SYNTHIA root", f"expected {LAYOUT}")
        image_dir = require_dir(root / "RGB", "SYNTHIA RGB folder", f"expected {LAYOUT}")
        samples, has_labels = flat_layout_samples(root, image_dir, root / "GT" / "LABELS", split, name="SYNTHIA",
                                                  missing_labels_hint="unpack GT/LABELS next to RGB/",
                                                  require_labels=require_labels)
        super().__init__(samples, has_labels=has_labels, transform=transform)

    def read_train_ids(self, path: Path) -> np.ndarray:
        raw = read_unchanged(path)
        if raw.ndim == 3 and raw.shape[2] < 3:
            raise UserError(f"label {path} has {raw.shape[2]} channels; SYNTHIA labels are 3- or 4-channel PNGs "
                            "with the class id in the first channel")
        if raw.ndim == 3:
            # OpenCV returns channels as B, G, R(, A): the file's first channel (the class id,
            # `imageio.imread(f)[:, :, 0]` in the public loaders) is index 2 here.
            raw = raw[:, :, 2]
        return SYNTHIA_ID_TABLE[raw]
