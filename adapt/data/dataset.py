"""The dataset base class every layout shares, and the pseudo-label dataset built on it.

A subclass only builds the list of samples (which files) and, where its label files hold
another id space, maps those ids to train ids. Everything else, reading, checking ids and sizes,
and the transform protocol, lives here so that every layout fails the same clear way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX
from uda_adapt.adapt.data.transforms import EvalTransform
from uda_adapt.common.errors import UserError
from uda_adapt.adapt.images import read_rgb, read_unchanged

PairTransform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3  # IHDR colour type of an indexed-colour PNG


@dataclass(frozen=True)
class Sample:
    """One image and, where the split is labelled, its label file."""

    stem: str
    image: Path
    label: Path | None


class SegmentationDataset(torch.utils.data.Dataset):
    """Base: subclasses provide the file index and the id -> train-id mapping.

    `load(i)` returns RGB uint8 (H, W, 3) and train ids uint8 (H, W) (or None when unlabelled);
    `ds[i]` returns `transform(image, label)`, with the label all `IGNORE_INDEX` when unlabelled.
    Without a transform the image is normalised at its own size (see `EvalTransform`).
    """

    def __init__(self, samples: list[Sample], *, has_labels: bool,
                 classes: tuple[str, ...] = CITYSCAPES_CLASSES,
                 palette: tuple[tuple[int, int, int], ...] = CITYSCAPES_PALETTE,
                 transform: PairTransform | None = None) -> None:
        self.samples = sorted(samples, key=lambda s: s.stem)
        self.stems = [s.stem for s in self.samples]
        self.has_labels = has_labels
        self.classes = tuple(classes)
        self.palette = tuple(palette)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        if label is None:
            label = np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        transform = self.transform if self.transform is not None else _DEFAULT_TRANSFORM
        return transform(image, label)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Read sample `index`: RGB uint8 (H, W, 3) and checked train ids uint8 (H, W) or None."""
        image = self.load_image(index)
        label = self.load_label(index)
        if label is not None:
            check_same_size(image, label, self.samples[index].image, self.label_path(index))
        return image, label

    def load_image(self, index: int) -> np.ndarray:
        return read_rgb(self.samples[index].image)

    def load_label(self, index: int) -> np.ndarray | None:
        """Train ids uint8 (H, W), every value a class index or IGNORE_INDEX; None when unlabelled."""
        path = self.label_path(index)
        if path is None:
            return None
        label = self.read_train_ids(path)
        check_ids(label, len(self.classes), path, self.id_hint)
        return label

    def label_path(self, index: int) -> Path | None:
        return self.samples[index].label if self.has_labels else None

    def read_train_ids(self, path: Path) -> np.ndarray:
        """Read a label file as train ids; layouts that store other ids override this."""
        return read_id_png(path, "train ids")

    # Appended to the out-of-range error: says where the valid ids come from.
    id_hint = "convert the label to train ids"


class PseudoLabelDataset(SegmentationDataset):
    """A dataset's images with labels from `label_dir/<stem>.png` (train ids, 255 = not selected).

    Pseudo labels must have the full image size; the base dataset's own labels are never read.
    """

    def __init__(self, base: SegmentationDataset, label_dir: str | os.PathLike,
                 transform: PairTransform | None = None) -> None:
        self.base = base
        self.label_dir = Path(label_dir)
        if not self.label_dir.is_dir():
            raise UserError(f"pseudo-label folder {self.label_dir} does not exist; generate pseudo labels before this stage")
        samples = [Sample(s.stem, s.image, self.label_dir / f"{s.stem}.png") for s in base.samples]
        super().__init__(samples, has_labels=True, classes=base.classes, palette=base.palette, transform=transform)
        self.id_hint = "pseudo labels are written as train ids; regenerate them for this class set"

    def load_image(self, index: int) -> np.ndarray:
        return self.base.load_image(index)

    def read_train_ids(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise UserError(f"pseudo label {path} is missing; regenerate the pseudo labels in {self.label_dir}")
        return read_id_png(path, "train ids")


def read_id_png(path: Path, what: str) -> np.ndarray:
    """Read a single-channel 8-bit PNG of ids as uint8 (H, W).

    Indexed-colour (palette) PNGs, as GTA5 ships its labels, hold the ids as palette indices:
    OpenCV would expand them to colours, so those are read with Pillow.
    """
    if not _is_palette_png(path):
        label = read_unchanged(path)
        if label.ndim != 2 or label.dtype != np.uint8:
            channels = 1 if label.ndim == 2 else label.shape[2]
            raise UserError(f"label {path} is a {channels}-channel {label.dtype} image; labels must be "
                            f"single-channel 8-bit PNGs of {what} (colour-coded label images are not supported)")
        return label
    try:
        with Image.open(path) as img:
            return np.array(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot decode label {path}: the file is corrupt ({exc}); replace or remove it") from exc


def check_ids(label: np.ndarray, num_classes: int, path: Path, hint: str) -> None:
    """Raise if any id is neither a class index (< num_classes) nor IGNORE_INDEX."""
    invalid = (label >= num_classes) & (label != IGNORE_INDEX)
    if invalid.any():
        bad = np.unique(label[invalid])
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise UserError(f"label {path} contains id(s) {shown} outside 0-{num_classes - 1} and "
                        f"{IGNORE_INDEX} (ignore); {hint}")


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path | None) -> None:
    if image.shape[:2] != label.shape:
        (ih, iw), (lh, lw) = image.shape[:2], label.shape
        raise UserError(f"label {label_path} is {lw}x{lh} but its image {image_path} is {iw}x{ih}; "
                        "an image and its label must have the same size (fix or remove the pair)")


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A uint8 table sending each listed id to its train id and every other id to IGNORE_INDEX."""
    table = np.full(size, IGNORE_INDEX, np.uint8)
    for source_id, train_id in mapping.items():
        table[source_id] = train_id
    return table


def require_dir(path: Path, what: str, fix: str) -> Path:
    """Return `path` if it is a directory, else raise naming it."""
    if not path.is_dir():
        raise UserError(f"{what} {path} does not exist; {fix}")
    return path


def split_stems(root: Path, split: str, available: Iterable[str], layout: str) -> list[str]:
    """Stems of `split` from `root/<split>.txt`, or every stem for `train` when there is no such file.

    For layouts without official folders per split (GTA5, SYNTHIA). Lines may be stems or file
    names; blank lines and `#` comments are skipped.
    """
    available = set(available)
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        if split == "train":
            return sorted(available)
        raise UserError(f"{layout} root {root} has no split file {split_file.name}; list that split's "
                        f"image names in {split_file}, one per line, or use split 'train' for all images")
    stems = []
    for line in split_file.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        stem = Path(name).stem
        if stem not in available:
            raise UserError(f"split file {split_file} lists {name!r}, which has no image in the {layout} images folder; "
                            "remove the line or restore the image")
        stems.append(stem)
    if not stems:
        raise UserError(f"split file {split_file} lists no images")
    return sorted(set(stems))


def _is_palette_png(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
    except OSError:
        return False  # read_unchanged reports the missing or unreadable file by name
    return head[:8] == _PNG_SIGNATURE and len(head) == 26 and head[25] == _PNG_PALETTE


_DEFAULT_TRANSFORM = EvalTransform()


def flat_layout_samples(root: Path, image_dir: Path, label_dir: Path, split: str, *, name: str,
                        missing_labels_hint: str, require_labels: bool) -> tuple[list[Sample], bool]:
    """Samples of a layout with one images folder, one labels folder and optional `<split>.txt`.

    Shared by GTA5 and SYNTHIA; returns the samples and whether the labels folder exists.
    """
    images = {p.stem: p for p in image_dir.glob("*.png")}
    if not images:
        raise UserError(f"{name} images folder {image_dir} holds no .png images")
    stems = split_stems(root, split, images, name)
    has_labels = label_dir.is_dir()
    if require_labels and not has_labels:
        raise UserError(f"{name} labels folder {label_dir} does not exist; {missing_labels_hint}")
    samples = []
    for stem in stems:
        label = label_dir / f"{stem}.png" if has_labels else None
        if label is not None and not label.is_file():
            raise UserError(f"image {images[stem]} has no label {label}; restore it, or leave the image out of {split}.txt")
        samples.append(Sample(stem, images[stem], label))
    return samples, has_labels
