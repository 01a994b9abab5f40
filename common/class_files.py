"""`labels.txt` and `colors.txt`: a model's class names and colours as plain text, segNet-style.

The same files jetson-inference's segNet takes (`--labels`, `--colors`): one class name per
line; one colour per line as `R G B` (0..255; a fourth alpha value is accepted and ignored).
Line i is class id i. Export writes both into the bundle (and DeepStream's nvinfer reads the
labels); `run --labels/--colors` replaces the manifest's names and colours with them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from uda_adapt.common.errors import UserError

LABELS_FILE = "labels.txt"
COLORS_FILE = "colors.txt"


def format_labels(classes: Sequence[str]) -> str:
    return "".join(f"{name}\n" for name in classes)


def format_colors(palette: Sequence[Sequence[int]]) -> str:
    return "".join(f"{int(r)} {int(g)} {int(b)}\n" for r, g, b in palette)


def _lines(path: str | os.PathLike, option: str) -> list[str]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{option} {file} does not exist; give a text file with one line per class") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{option} {file} cannot be read ({exc}); give a UTF-8 text file with one line per class") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_labels(path: str | os.PathLike, num_classes: int, option: str = "--labels") -> tuple[str, ...]:
    """Class names, one per line; exactly `num_classes` of them (the model's output ids)."""
    names = tuple(_lines(path, option))
    if len(names) != num_classes:
        raise UserError(f"{option} {path} names {len(names)} classes but the model predicts {num_classes}; "
                        f"give one name per line, {num_classes} lines")
    return names


def read_colors(path: str | os.PathLike, num_classes: int, option: str = "--colors") -> tuple[tuple[int, int, int], ...]:
    """Colours `R G B` (or `R G B A`, or comma-separated), one per line; exactly `num_classes` of them."""
    colours = []
    for number, line in enumerate(_lines(path, option), 1):
        fields = line.replace(",", " ").split()
        try:
            values = [int(v) for v in fields]
        except ValueError:
            values = []
        if len(values) not in (3, 4) or not all(0 <= v <= 255 for v in values):
            raise UserError(f"{option} {path}: line {number} {line!r} is not a colour; write `R G B` with values 0..255")
        colours.append((values[0], values[1], values[2]))
    if len(colours) != num_classes:
        raise UserError(f"{option} {path} has {len(colours)} colours but the model predicts {num_classes} classes; "
                        f"give one `R G B` line per class")
    return tuple(colours)
