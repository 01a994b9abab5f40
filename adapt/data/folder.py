"""The one folder format for data users bring (and the synthetic benchmark writes).

    ROOT/meta.json                       optional: classes and palette (default: Cityscapes 19)
    ROOT/{split}/images/<stem>.png|jpg
    ROOT/{split}/labels/<stem>.png       uint8 train ids, 255 = ignore; optional for unlabelled splits
"""

from __future__ import annotations

import os
from pathlib import Path

from uda_adapt.adapt.data.dataset import PairTransform, Sample, SegmentationDataset, require_dir
from uda_adapt.adapt.data.meta import META_FILE, read_meta
from uda_adapt.common.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUT = "ROOT/{split}/images/<stem>.png|jpg with ROOT/{split}/labels/<stem>.png"


class FolderDataset(SegmentationDataset):
    """`ROOT/{split}/images` + `ROOT/{split}/labels`, classes from `ROOT/meta.json`.

    With `require_labels=False` a split without a labels folder is unlabelled; a labels folder
    that covers only some images is an error either way, since silently dropping labels
    (or images) would change what a run trains or evaluates on.
    """

    def __init__(self, root: str | os.PathLike, split: str, *, require_labels: bool,
                 transform: PairTransform | None = None) -> None:
        root = require_dir(Path(root), "dataset root", f"expected the folder layout {LAYOUT}")
        meta = read_meta(root)
        split_dir = root / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
            raise UserError(f"split '{split}' folder {split_dir} does not exist; splits found: {', '.join(found) or 'none'} "
                            f"(expected {LAYOUT})")
        images = _index_images(require_dir(split_dir / "images", "images folder", f"expected {LAYOUT}"))
        label_dir = split_dir / "labels"
        has_labels = label_dir.is_dir() and any(label_dir.iterdir())
        if require_labels and not has_labels:
            raise UserError(f"labels folder {label_dir} is missing or empty, but split '{split}' needs labels; "
                            f"add <stem>.png train-id labels there")
        samples = []
        for stem, image in sorted(images.items()):
            label = label_dir / f"{stem}.png"
            if has_labels and not label.is_file():
                raise UserError(f"image {image} has no label {label}; add it, or remove the image")
            samples.append(Sample(stem, image, label if has_labels else None))
        super().__init__(samples, has_labels=has_labels, classes=meta.classes, palette=meta.palette,
                         transform=transform)
        meta_file = root / META_FILE
        if meta_file.is_file():
            self.id_hint = f"the classes come from {meta_file}; convert the label to train ids or fix the class list there"
        else:
            self.id_hint = (f"without {meta_file} the classes are the Cityscapes 19; convert the label to train ids "
                            "or list the dataset's classes in that file")


def _index_images(image_dir: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in image_dir.iterdir():
        # Hidden files are never images: they include the temporaries of interrupted atomic writes.
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in images:
            raise UserError(f"images {images[path.stem]} and {path} share the stem {path.stem!r}; keep one of them")
        images[path.stem] = path
    if not images:
        raise UserError(f"images folder {image_dir} holds no .png or .jpg images")
    return images
