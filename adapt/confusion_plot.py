"""The confusion matrix as a picture: rows are labels, columns predictions, each row normalised.

Drawn with OpenCV (part of the training install) rather than matplotlib. A cell's shade is the
share of the row's labelled pixels predicted as that column, so a good model shows a bright
diagonal; the share is written in cells of 1 % or more. Rows without labelled pixels stay grey.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from uda_adapt.common.atomic import atomic_path
from uda_adapt.common.errors import UserError

CELL = 30            # pixels per cell: "100" fits at the font size below
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """(C, C) counts -> shares of each row (NaN rows: no labelled pixel of that class)."""
    counts = np.asarray(matrix, np.float64)
    totals = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def draw_confusion(matrix: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """BGR uint8 picture of the row-normalised matrix with class names (rows) and ids (columns)."""
    shares = row_normalised(matrix)
    n = len(classes)
    if shares.shape != (n, n):
        raise ValueError(f"a {shares.shape} matrix for {n} classes")
    names = [f"{i} {name}" for i, name in enumerate(classes)]
    left = 12 + max(cv2.getTextSize(name, _FONT, 0.45, 1)[0][0] for name in names)
    top, title = 40, "label (row) -> prediction (column), % of the row"
    width = max(left + n * CELL + 10, 16 + cv2.getTextSize(title, _FONT, 0.45, 1)[0][0])
    image = np.full((top + n * CELL + 10, width, 3), 255, np.uint8)
    cv2.putText(image, title, (8, 14), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    # Shades from the Viridis-like map OpenCV ships; NaN rows grey.
    levels = np.nan_to_num(shares, nan=0.0)
    colours = cv2.applyColorMap((255 * levels).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    for i in range(n):
        y = top + i * CELL
        cv2.putText(image, names[i], (6, y + CELL // 2 + 5), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(n):
            x = left + j * CELL
            colour = (200, 200, 200) if np.isnan(shares[i, j]) else tuple(int(c) for c in colours[i, j])
            cv2.rectangle(image, (x, y), (x + CELL - 1, y + CELL - 1), colour, thickness=-1)
            if not np.isnan(shares[i, j]) and shares[i, j] >= 0.01:
                text = f"{round(100 * shares[i, j])}"
                ink = (0, 0, 0) if levels[i, j] > 0.6 else (255, 255, 255)
                cv2.putText(image, text, (x + 2, y + CELL // 2 + 5), _FONT, 0.35, ink, 1, cv2.LINE_AA)
    for j in range(n):
        cv2.putText(image, str(j), (left + j * CELL + 6, top - 6), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def write_confusion_png(path: str | os.PathLike, matrix: np.ndarray, classes: Sequence[str]) -> None:
    """Draw the matrix and write it atomically as a PNG."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), draw_confusion(matrix, classes)):
            raise UserError(f"cannot write the confusion matrix picture {path}; use a .png path in a writable folder")
