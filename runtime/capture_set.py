"""`uda-adapt data capture`: an unlabelled target set from a camera, stream or file.

    source (runtime.sources) -> every Nth frame / one per SECONDS -> resize -> blur / duplicate
    filter -> ROOT/train/images/cap_NNNNNN.jpg or ROOT/val/images/... (atomic writes)

Torch-free: it runs on the device, with the same sources as `uda-adapt run`. Names continue
from the highest number already in ROOT, and the frames already there join the duplicate
filter, so a rerun adds to the set. Every image is written atomically as it is kept, so Ctrl-C
(or a pulled plug) leaves a valid folder with everything captured so far.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.atomic import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.frame_filters import DEFAULT_MIN_CHANGE, DEFAULT_MIN_SHARPNESS, FilterCounts, FrameFilter
from uda_adapt.runtime.sources import open_source
from uda_adapt.runtime.uri import CaptureOptions, parse_input

PREFIX = "cap"
SUFFIX = ".jpg"
JPEG_QUALITY = 95
SPLITS = ("train", "val")
_NAME = re.compile(rf"{PREFIX}_(\d+)\.")


@dataclasses.dataclass(frozen=True)
class CaptureConfig:
    input: str
    out: Path
    every_s: float | None = None          # keep at most one frame per this many seconds of video
    stride: int = 1                       # consider every Nth frame only
    max_images: int | None = None         # stop after this many new images
    size: tuple[int, int] | None = None   # (H, W) to store; None: the existing set's, else as captured
    val_fraction: float = 0.0             # this share of kept images goes to val/ (unlabelled)
    like: Path | None = None              # a source dataset root whose meta.json (classes) the set takes
    min_change: float = DEFAULT_MIN_CHANGE
    min_sharpness: float = DEFAULT_MIN_SHARPNESS
    capture: CaptureOptions = CaptureOptions()


@dataclasses.dataclass
class CaptureResult:
    counts: FilterCounts
    train: int = 0                 # new images in train/ and val/
    val: int = 0
    interrupted: bool = False
    first_name: str | None = None

    def line(self) -> str:
        return f"{self.counts.line()}  (train +{self.train}, val +{self.val})"


def check_config(config: CaptureConfig) -> None:
    if config.stride < 1:
        raise UserError(f"--stride must be 1 or more, got {config.stride}")
    if config.every_s is not None and config.every_s <= 0:
        raise UserError(f"--every must be a positive number of seconds, got {config.every_s:g}")
    if config.every_s is not None and config.stride != 1:
        raise UserError("give --every or --stride, not both")
    if not 0.0 <= config.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {config.val_fraction:g}")
    if config.max_images is not None and config.max_images < 1:
        raise UserError(f"--max must be 1 or more, got {config.max_images}")


def write_meta_like(out: Path, like: Path) -> None:
    """Give the set the source's classes: copy SOURCE_ROOT/meta.json (none there: Cityscapes 19, the default)."""
    if not like.is_dir():
        raise UserError(f"--like {like} is not a directory; give the source dataset root (the folder with meta.json)")
    source_meta = like / "meta.json"
    mine = out / "meta.json"
    if not source_meta.is_file():
        if mine.is_file():
            raise UserError(f"{mine} lists classes but --like {like} has no meta.json (Cityscapes 19); remove {mine} or fix --like")
        return
    meta = json.loads(source_meta.read_text())
    if mine.is_file() and json.loads(mine.read_text()).get("classes") != meta.get("classes"):
        raise UserError(f"{mine} has other classes than {source_meta}; capture into another --out")
    atomic_write_text(mine, json.dumps({"classes": meta["classes"], "palette": meta.get("palette")}, indent=2) + "\n")


def existing_images(out: Path) -> list[Path]:
    return sorted(p for split in SPLITS for p in (out / split / "images").glob(f"{PREFIX}_*") if _NAME.match(p.name))


def next_number(images: list[Path]) -> int:
    numbers = [int(_NAME.match(p.name).group(1)) for p in images]
    return max(numbers, default=-1) + 1


def goes_to_val(index: int, fraction: float) -> bool:
    """Image `index` (0, 1, 2, ... over the whole set) goes to val: exactly `fraction` of them, spread evenly."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(SUFFIX, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise UserError("OpenCV could not encode a frame as JPEG")
    return data.tobytes()


def capture_set(config: CaptureConfig, progress: Callable[[FilterCounts], None] | None = None) -> CaptureResult:
    """Capture until the source ends, `max_images` are kept, or Ctrl-C; returns the counts."""
    check_config(config)
    uri = parse_input(config.input)
    out = ensure_writable_dir(config.out)
    if config.like is not None:
        write_meta_like(out, config.like)
    already = existing_images(out)
    number, index = next_number(already), len(already)
    frame_filter = FrameFilter(config.min_change, config.min_sharpness)
    size = config.size
    for path in already:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            frame_filter.remember(image)
            # Adding to a set: new frames take its size, so that it never mixes sizes (batches need one).
            size = size or image.shape[:2]

    result = CaptureResult(frame_filter.counts)
    source = open_source(uri, config.capture)
    fps = source.fps or 30.0
    frame_index, last_kept_s, started = -1, -math.inf, time.monotonic()
    try:
        while config.max_images is None or result.train + result.val < config.max_images:
            frame_index += 1
            if frame_index % config.stride:
                if not source.skip():
                    break
                continue
            ok, image = source.read()
            if not ok:
                break
            if image is None or image.ndim != 3:
                continue                       # a corrupt frame: nothing to keep
            # Files: the frame's own time; cameras and streams: the clock.
            now = time.monotonic() - started if uri.live else frame_index / fps
            if config.every_s is not None and now - last_kept_s < config.every_s:
                continue
            if size is not None and image.shape[:2] != tuple(size):
                image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            if frame_filter.check(image) == "kept":
                split = "val" if goes_to_val(index, config.val_fraction) else "train"
                name = f"{PREFIX}_{number:06d}{SUFFIX}"
                atomic_write_bytes(out / split / "images" / name, encode_jpeg(image))
                result.first_name = result.first_name or name
                setattr(result, split, getattr(result, split) + 1)
                number, index, last_kept_s = number + 1, index + 1, now
            if progress is not None:
                progress(frame_filter.counts)
    except KeyboardInterrupt:
        result.interrupted = True              # every kept image is already whole on disk
    finally:
        source.close()
    return result
