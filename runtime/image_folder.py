"""Image folders and globs as a frame source: each image a frame, in sorted file order."""

from __future__ import annotations

import glob
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.errors import UserError
from uda_adapt.runtime.frame_fit import fit_frame
from uda_adapt.runtime.uri import IMAGE_SUFFIXES, CaptureOptions, InputURI


class ImageFolderSource:
    """The images of a folder or glob, in sorted order; an undecodable file is a corrupt frame."""

    live = False

    def __init__(self, uri: InputURI, options: CaptureOptions) -> None:
        self.name = uri.original
        self.fps = options.rate
        self._uri, self._options = uri, options
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        location = self._uri.location
        path = Path(location)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():
            files = [path]
        else:
            files = [Path(p) for p in glob.glob(location) if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise UserError(f"input {self.name}: no images found ({', '.join(IMAGE_SUFFIXES)})")
        self._files, self._next = sorted(files), 0

    @property
    def frame_count(self) -> int | None:
        return len(self._files) or None

    def frame_name(self) -> str | None:
        """The stem of the file read last (names saved masks)."""
        return self._files[self._next - 1].stem if 0 < self._next <= len(self._files) else None

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._next >= len(self._files):
            return False, None
        file = self._files[self._next]
        self._next += 1
        data = np.fromfile(file, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        return True, (None if image is None else fit_frame(image, self._options, self._uri))

    def skip(self) -> bool:
        self._next += 1
        return self._next <= len(self._files)

    def close(self) -> None:
        self._next = 0
