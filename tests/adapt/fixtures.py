"""Tiny dataset trees, built on the fly in each supported layout.

Labels are blocky random regions; in the folder format each image is its label's palette colour
plus noise, so a small network can actually learn it.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX

# Cityscapes label ids that are ignored in evaluation, mixed into the raw label fixtures.
CITYSCAPES_IGNORED_IDS = (0, 1, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)
CITYSCAPES_EVAL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


@dataclass
class Tree:
    """A fixture tree: its root and the raw label ids written for each stem (per split)."""

    root: Path
    raw_labels: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> stem -> ids


def blocky_labels(rng: np.random.Generator, size: tuple[int, int], values: np.ndarray, block: int = 8) -> np.ndarray:
    """(H, W) map of random `values` in block x block regions."""
    h, w = size
    grid = rng.choice(values, size=(-(-h // block), -(-w // block)))
    return np.kron(grid, np.ones((block, block), grid.dtype))[:h, :w]


def make_folder_dataset(root: str | Path, *, num: int = 4, size: tuple[int, int] = (32, 64), classes: int = 19,
                        labelled_splits: tuple[str, ...] = ("train", "val"), seed: int = 0) -> Path:
    """ROOT/{train,val}/images/*.png (+ labels/*.png for `labelled_splits`); meta.json unless 19 classes."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    if classes == len(CITYSCAPES_CLASSES):
        palette = np.asarray(CITYSCAPES_PALETTE, np.int16)
    else:
        palette = rng.integers(0, 256, size=(classes, 3)).astype(np.int16)
        meta = {"classes": [f"class{i}" for i in range(classes)], "palette": palette.tolist()}
        root.mkdir(parents=True, exist_ok=True)
        (root / "meta.json").write_text(json.dumps(meta))
    values = np.append(np.arange(classes), IGNORE_INDEX).astype(np.uint8)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        if split in labelled_splits:
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for index in range(num):
            label = blocky_labels(rng, size, values)
            colours = np.where(label[..., None] == IGNORE_INDEX, 128, palette[np.minimum(label, classes - 1)])
            image = np.clip(colours + rng.integers(-20, 21, size=(*size, 3)), 0, 255).astype(np.uint8)
            stem = f"{split}_{index:04d}"
            cv2.imwrite(str(root / split / "images" / f"{stem}.png"), image[..., ::-1])
            if split in labelled_splits:
                cv2.imwrite(str(root / split / "labels" / f"{stem}.png"), label)
    return root


def make_cityscapes_tree(root: str | Path, *, splits: tuple[str, ...] = ("train", "val"),
                         cities: tuple[str, ...] = ("aachen", "bochum"), per_city: int = 2,
                         size: tuple[int, int] = (24, 48), seed: int = 0) -> Tree:
    """leftImg8bit/{split}/{city}/*_leftImg8bit.png + gtFine/{split}/{city}/*_gtFine_labelIds.png.

    The first label of each split holds every evaluated class (one pixel each at least), so a
    split-level score covers all 19 train ids.
    """
    tree = Tree(Path(root))
    rng = np.random.default_rng(seed)
    values = np.asarray(CITYSCAPES_EVAL_IDS + CITYSCAPES_IGNORED_IDS, np.uint8)
    for split in splits:
        tree.raw_labels[split] = {}
        for city in cities:
            for frame in range(per_city):
                stem = f"{city}_{frame:06d}_{19 + frame:06d}"
                label = blocky_labels(rng, size, values, block=4)
                if city == cities[0] and frame == 0:
                    label[0, : len(CITYSCAPES_EVAL_IDS)] = CITYSCAPES_EVAL_IDS
                _write(tree.root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _noise(rng, size))
                _write(tree.root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
                tree.raw_labels[split][stem] = label
    return tree


def make_gta5_tree(root: str | Path, *, num: int = 3, size: tuple[int, int] = (24, 40), seed: int = 0,
                   split_files: dict[str, list[str]] | None = None) -> Tree:
    """images/*.png + labels/*.png as GTA5 ships them: indexed-colour PNGs of Cityscapes label ids."""
    tree = Tree(Path(root), {"all": {}})
    rng = np.random.default_rng(seed)
    values = np.asarray(CITYSCAPES_EVAL_IDS + CITYSCAPES_IGNORED_IDS + (34,), np.uint8)
    (tree.root / "labels").mkdir(parents=True, exist_ok=True)
    for index in range(num):
        stem = f"{index + 1:05d}"
        label = blocky_labels(rng, size, values)
        _write(tree.root / "images" / f"{stem}.png", _noise(rng, size))
        indexed = Image.fromarray(label, mode="P")
        indexed.putpalette(rng.integers(0, 256, size=768).astype(np.uint8).tolist())
        indexed.save(tree.root / "labels" / f"{stem}.png")
        tree.raw_labels["all"][stem] = label
    for split, names in (split_files or {}).items():
        (tree.root / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return tree


def make_synthia_tree(root: str | Path, *, num: int = 3, size: tuple[int, int] = (24, 40), seed: int = 0) -> Tree:
    """RGB/*.png + GT/LABELS/*.png: 16-bit RGB PNGs, class id in the file's first channel."""
    tree = Tree(Path(root), {"all": {}})
    rng = np.random.default_rng(seed)
    for index in range(num):
        stem = f"{index:07d}"
        classes = blocky_labels(rng, size, np.arange(0, 23, dtype=np.uint16))
        instances = rng.integers(0, 3000, size=size).astype(np.uint16)
        _write(tree.root / "RGB" / f"{stem}.png", _noise(rng, size))
        write_png16_rgb(tree.root / "GT" / "LABELS" / f"{stem}.png",
                        np.stack([classes, instances, np.full(size, 7, np.uint16)], axis=-1))
        tree.raw_labels["all"][stem] = classes
    return tree


def write_png16_rgb(path: Path, channels: np.ndarray) -> None:
    """Write (H, W, 3) uint16 as a 16-bit RGB PNG with channels in file order, written by hand from
    the PNG spec so the test does not share OpenCV's channel-order convention with the loader."""
    h, w, _ = channels.shape
    rows = channels.astype(">u2")  # PNG stores 16-bit samples big-endian
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _noise(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write fixture {path}")


def assert_one_error_line(rc: int, err: str, *words: str) -> str:
    """A user error as the CLI must show it: exit 1, one `uda-adapt: error:` line, last, no traceback.

    Progress bars and notes may come before it; every word in `words` must be on the line (the
    culprit and the fix). Returns the line.
    """
    assert rc == 1, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and not re.search(r"\d+%\|", line)]
    errors = [line for line in lines if line.startswith("uda-adapt: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-2000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


class LabelMaps:
    """A dataset of label maps only, as `class_statistics` reads it (`load_label(i)`)."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def load_label(self, index):
        return self.labels[index]
