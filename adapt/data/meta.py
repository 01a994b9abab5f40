"""A dataset's class names and colours, read from the optional `ROOT/meta.json`.

Without a meta.json a dataset uses the Cityscapes 19 classes, so Cityscapes-style data needs no
extra file. The file looks like::

    {"classes": ["background", "lane", "car"], "palette": [[0, 0, 0], [255, 255, 0], [0, 0, 142]]}

`palette` is optional; without it colours come from a fixed, well-spread colour map.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.adapt.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX
from uda_adapt.common.errors import UserError

META_FILE = "meta.json"
META_KEYS = ("classes", "palette")

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetMeta:
    """Class names in train-id order and one RGB colour per class."""

    classes: tuple[str, ...] = CITYSCAPES_CLASSES
    palette: tuple[Colour, ...] = CITYSCAPES_PALETTE

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "palette": [list(c) for c in self.palette]}


def read_meta(root: str | os.PathLike) -> DatasetMeta:
    """Read `root/meta.json`, or return the Cityscapes 19 classes when there is none."""
    file = Path(root) / META_FILE
    if not file.is_file():
        return DatasetMeta()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{file} is not readable JSON ({exc}); fix it or delete it to use the Cityscapes 19 classes") from exc
    return parse_meta(data, str(file))


def write_meta(root: str | os.PathLike, meta: DatasetMeta) -> Path:
    """Write `root/meta.json` atomically; returns its path."""
    file = Path(root) / META_FILE
    atomic_write_text(file, json.dumps(meta.to_dict(), indent=2) + "\n")
    return file


def parse_meta(data: Any, source: str) -> DatasetMeta:
    """Validate a meta.json mapping; `source` names the file in errors."""
    if not isinstance(data, dict):
        raise UserError(f"{source} must hold a JSON object with keys {', '.join(META_KEYS)}")
    unknown = sorted(set(data) - set(META_KEYS))
    if unknown:
        raise UserError(f"{source} has unknown key {unknown[0]!r}; valid keys: {', '.join(META_KEYS)}")
    if "classes" not in data:
        raise UserError(f"{source} needs a 'classes' list of class names in train-id order")
    classes = data["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c.strip() for c in classes):
        raise UserError(f"{source}: 'classes' must be a non-empty list of non-empty class names")
    if len(set(classes)) != len(classes):
        duplicate = next(c for c in classes if classes.count(c) > 1)
        raise UserError(f"{source}: class name {duplicate!r} appears twice in 'classes'; names must be unique")
    if len(classes) > IGNORE_INDEX:
        raise UserError(f"{source} lists {len(classes)} classes; at most {IGNORE_INDEX} fit in uint8 labels ({IGNORE_INDEX} = ignore)")
    if "palette" not in data:
        return DatasetMeta(tuple(classes), default_palette(len(classes)))
    palette = data["palette"]
    if not isinstance(palette, list) or len(palette) != len(classes):
        count = len(palette) if isinstance(palette, list) else "no list of"
        raise UserError(f"{source}: 'palette' has {count} colours for {len(classes)} classes; give one [r, g, b] per class")
    colours = []
    for index, colour in enumerate(palette):
        if not (isinstance(colour, list) and len(colour) == 3 and all(_is_byte(v) for v in colour)):
            raise UserError(f"{source}: palette entry {index} ({classes[index]!r}) is {colour!r}; use [r, g, b] with integers 0-255")
        colours.append((colour[0], colour[1], colour[2]))
    return DatasetMeta(tuple(classes), tuple(colours))


def default_palette(num_classes: int) -> tuple[Colour, ...]:
    """The PASCAL VOC bit-interleaved colour map: distinct, stable colours for any class count."""
    colours = []
    for index in range(num_classes):
        r = g = b = 0
        value = index + 1  # skip black so no class looks like an unlabelled border
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def _is_byte(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255
