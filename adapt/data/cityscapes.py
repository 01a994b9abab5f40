"""Cityscapes in its official layout, with the official labelIds -> trainIds table.

    ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

Stems are `{city}_{seq}_{frame}`, unique across the dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from uda_adapt.adapt.data.dataset import PairTransform, Sample, SegmentationDataset, lookup_table, read_id_png, require_dir
from uda_adapt.common.errors import UserError

# The `trainId` column of cityscapesScripts' helpers/labels.py: every label id not listed
# (unlabeled, ego vehicle, ground, parking, rail track, guard rail, bridge, tunnel, polegroup,
# caravan, trailer, license plate, ...) is ignored in training and evaluation.
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
LABEL_ID_TABLE = lookup_table(LABEL_ID_TO_TRAIN_ID)

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
LAYOUT = "ROOT/leftImg8bit/{split}/{city}/*_leftImg8bit.png with ROOT/gtFine/{split}/{city}/*_gtFine_labelIds.png"


class CityscapesDataset(SegmentationDataset):
    """Cityscapes `train`/`val`/`test` (or any split folder present), 19 train ids."""

    id_hint = "Cityscapes label ids map to train ids through the official table"

    def __init__(self, root: str | os.PathLike, split: str, *, require_labels: bool,
                 transform: PairTransform | None = None) -> None:
        root = require_dir(Path(root), "Cityscapes root", f"expected {LAYOUT}")
        image_root = require_dir(root / "leftImg8bit", "Cityscapes image folder", f"expected {LAYOUT}")
        split_dir = image_root / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in image_root.iterdir() if p.is_dir())
            raise UserError(f"Cityscapes split folder {split_dir} does not exist; splits found: {', '.join(found) or 'none'}")
        label_split = root / "gtFine" / split
        has_labels = label_split.is_dir()
        if require_labels and not has_labels:
            raise UserError(f"Cityscapes label folder {label_split} does not exist, but split '{split}' needs labels; "
                            "download gtFine_trainvaltest and unpack it next to leftImg8bit")
        samples = []
        for image in sorted(split_dir.glob(f"*/*{IMAGE_SUFFIX}")):
            stem = image.name[: -len(IMAGE_SUFFIX)]
            label = label_split / image.parent.name / f"{stem}{LABEL_SUFFIX}" if has_labels else None
            if label is not None and not label.is_file():
                raise UserError(f"image {image} has no label {label}; restore it from gtFine, or remove the image")
            samples.append(Sample(stem, image, label))
        if not samples:
            raise UserError(f"Cityscapes split folder {split_dir} holds no {{city}}/*{IMAGE_SUFFIX} images")
        super().__init__(samples, has_labels=has_labels, transform=transform)

    def read_train_ids(self, path: Path) -> np.ndarray:
        return LABEL_ID_TABLE[read_id_png(path, "Cityscapes label ids")]
