"""The Cityscapes 19 train-id label space, and the SYNTHIA evaluation protocols.

Every label map in uda-adapt is uint8 train ids with `IGNORE_INDEX` for "not labelled".
"""

from __future__ import annotations

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# SYNTHIA-RAND-CITYSCAPES is reported on 16 classes (no terrain, truck, train) and on 13
# (additionally without wall, fence, pole). Both are subsets of the same 19-class confusion matrix.
SYNTHIA16_CLASSES: tuple[str, ...] = tuple(
    c for c in CITYSCAPES_CLASSES if c not in ("terrain", "truck", "train")
)
SYNTHIA13_CLASSES: tuple[str, ...] = tuple(
    c for c in SYNTHIA16_CLASSES if c not in ("wall", "fence", "pole")
)

PROTOCOLS: dict[str, tuple[str, ...]] = {
    "19": CITYSCAPES_CLASSES,
    "16": SYNTHIA16_CLASSES,
    "13": SYNTHIA13_CLASSES,
}
