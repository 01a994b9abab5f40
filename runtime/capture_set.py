"""`uda-adapt data capture`: an unlabelled target set from a camera, stream or file.

    source (runtime.sources, read on runtime.capture's thread: a lost camera or stream
    reconnects as in `uda-adapt run`) -> every Nth frame / one per SECONDS -> resize ->
    blur / duplicate filter -> ROOT/train/images/cap_NNNNNN.jpg or ROOT/val/images/...

Torch-free: it runs on the device, with the same sources as `uda-adapt run`. Names continue
from the highest number already in ROOT, and every image already there (cap_ or not) joins the
duplicate filter and sets the size of new frames, so a rerun adds to the set without mixing
sizes. Several captures may write into one ROOT at once: each name is claimed under a lock on
ROOT and created exclusively, never replacing an image. Each image is written whole (temporary,
fsync, link, fsync of the folder), so Ctrl-C, SIGTERM or a SIGKILL leaves a valid set, and a power
cut loses at most the image being written; a later run removes the temporaries a killed one left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from uda_adapt.common.atomic import atomic_create_bytes, atomic_write_text, ensure_writable_dir, remove_stale_temporaries
from uda_adapt.common.errors import UserError
from uda_adapt.runtime.capture import Backoff, CaptureThread, EndOfStream, Log, log_to_stderr
from uda_adapt.runtime.frame_filters import DEFAULT_MIN_CHANGE, DEFAULT_MIN_SHARPNESS, FilterCounts, FrameFilter
from uda_adapt.runtime.sources import open_source
from uda_adapt.runtime.uri import IMAGE_SUFFIXES, CaptureOptions, parse_input

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
    backoff: Backoff = Backoff()          # reconnects of a lost camera or stream, as `uda-adapt run`


@dataclasses.dataclass
class CaptureResult:
    counts: FilterCounts
    train: int = 0                 # new images in train/ and val/
    val: int = 0
    interrupted: bool = False
    first_name: str | None = None

    def line(self) -> str:
        return f"{self.counts.line()}  (train +{self.train}, val +{self.val})"


class CaptureFailed(UserError):
    """A capture that ended on an error after keeping `result` (every kept image is whole on disk)."""

    def __init__(self, message: str, result: CaptureResult) -> None:
        super().__init__(message)
        self.result = result


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
    if config.backoff.give_up_after is not None and config.backoff.give_up_after < 0:
        raise UserError(f"--give-up-after must be 0 or more seconds, got {config.backoff.give_up_after:g}")


def meta_like(out: Path, like: Path) -> dict | None:
    """The classes and palette ROOT takes from SOURCE_ROOT/meta.json (None: Cityscapes 19, the default); checked, not written."""
    if not like.is_dir():
        raise UserError(f"--like {like} is not a directory; give the source dataset root (the folder with meta.json)")
    source_meta = like / "meta.json"
    mine = out / "meta.json"
    if not source_meta.is_file():
        if mine.is_file():
            raise UserError(f"{mine} lists classes but --like {like} has no meta.json (Cityscapes 19); remove {mine} or fix --like")
        return None
    meta = json.loads(source_meta.read_text())
    if mine.is_file() and json.loads(mine.read_text()).get("classes") != meta.get("classes"):
        raise UserError(f"{mine} has other classes than {source_meta}; capture into another --out")
    return {"classes": meta["classes"], "palette": meta.get("palette")}


def write_meta_like(out: Path, like: Path) -> None:
    """Give the set the source's classes: copy SOURCE_ROOT/meta.json (none there: Cityscapes 19, the default)."""
    meta = meta_like(out, like)
    if meta is not None:
        atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")


def existing_images(out: Path) -> list[Path]:
    """The set's numbered captures (cap_NNNNNN.*), both splits."""
    return sorted(p for split in SPLITS for p in (out / split / "images").glob(f"{PREFIX}_*") if _NAME.match(p.name))


def all_images(out: Path) -> list[Path]:
    """Every image of the set, captured or not (temporaries, hidden, are not images)."""
    return sorted(p for split in SPLITS for p in (out / split / "images").glob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


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


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` (flock on the directory itself), between processes on this machine."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                 # closing releases the lock


def write_new_image(out: Path, split: str, number: int, data: bytes) -> tuple[str, int]:
    """Store `data` under the first free cap_ number >= `number`; (name, number used).

    Free in both splits, claimed under the lock on ROOT that every capture takes, and created
    exclusively besides (a writer that does not lock still cannot be overwritten).
    """
    with locked(out):
        while True:
            name = f"{PREFIX}_{number:06d}{SUFFIX}"
            if not any((out / s / "images" / name).exists() for s in SPLITS):
                try:
                    atomic_create_bytes(out / split / "images" / name, data)
                    return name, number
                except FileExistsError:
                    pass
            number += 1


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:                   # deepest first
        for empty in (folder / "train" / "images", folder / "train", folder / "val" / "images", folder / "val", folder):
            with contextlib.suppress(OSError):   # missing, or not empty: left alone
                empty.rmdir()


def capture_set(config: CaptureConfig, progress: Callable[[FilterCounts], None] | None = None,
                log: Log = log_to_stderr, stop: threading.Event | None = None) -> CaptureResult:
    """Capture until the source ends, `max_images` are kept, `stop` is set or Ctrl-C; returns the counts.

    `stop` ends the capture between two frames (the CLI sets it on SIGINT and SIGTERM), so the
    summary counts exactly the images on disk; a KeyboardInterrupt may land mid-write and leave
    the count one short. A failure after the source opened raises `CaptureFailed`, which carries
    what was kept.
    """
    stop = stop or threading.Event()
    check_config(config)
    uri = parse_input(config.input)
    created = _missing_folders(Path(config.out))
    out = ensure_writable_dir(config.out)
    result = None
    try:
        meta = meta_like(out, config.like) if config.like is not None else None
        for split in SPLITS:
            remove_stale_temporaries(out / split / "images")
        frame_filter = FrameFilter(config.min_change, config.min_sharpness)
        size = config.size
        for path in all_images(out):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                frame_filter.remember(image)
                # Adding to a set: new frames take its size, so that it never mixes sizes (batches need one).
                size = size or image.shape[:2]
        number, index = next_number(existing_images(out)), len(all_images(out))
        with contextlib.ExitStack() as stack:
            source = open_source(uri, config.capture)
            stack.callback(source.close)       # the capture thread closes it too; this covers a failure before it starts
            result = CaptureResult(frame_filter.counts)
            if meta is not None:
                atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
            _capture_frames(config, uri.live, source.fps or 30.0, out, frame_filter, size, number, index, result, progress,
                            stack.enter_context(CaptureThread(source, latest=uri.live, stride=config.stride,
                                                              backoff=config.backoff, log=log)), stop)
            result.interrupted = stop.is_set()
    except KeyboardInterrupt:
        if result is None:
            raise
        result.interrupted = True              # every kept image is already whole on disk
    except UserError as exc:
        if result is None:
            raise
        raise CaptureFailed(str(exc), result) from exc
    finally:
        if result is None or result.train + result.val == 0:
            _remove_if_empty(created)          # a failed first capture leaves no empty ROOT behind
    return result


def _capture_frames(config: CaptureConfig, live: bool, fps: float, out: Path, frame_filter: FrameFilter,
                    size: tuple[int, int] | None, number: int, index: int, result: CaptureResult,
                    progress: Callable[[FilterCounts], None] | None, capture: CaptureThread, stop: threading.Event) -> None:
    """The loop: take frames from the capture thread, keep the ones the filters and --every let through."""
    last_kept_s, started = -math.inf, time.monotonic()
    while not stop.is_set() and (config.max_images is None or result.train + result.val < config.max_images):
        try:
            frame = capture.get(timeout=0.1)
        except EndOfStream:
            return
        if frame is None:
            continue
        image = frame.image
        # Files: the frame's own time; cameras and streams: the clock.
        now = time.monotonic() - started if live else frame.seq * config.stride / fps
        if config.every_s is not None and now - last_kept_s < config.every_s:
            continue
        if size is not None and image.shape[:2] != tuple(size):
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        if frame_filter.check(image) == "kept":
            split = "val" if goes_to_val(index, config.val_fraction) else "train"
            try:
                name, number = write_new_image(out, split, number, encode_jpeg(image))
            except BaseException:
                frame_filter.counts.kept -= 1    # the filter let it through, but it is not in the set
                raise
            result.first_name = result.first_name or name
            setattr(result, split, getattr(result, split) + 1)
            number, index, last_kept_s = number + 1, index + 1, now
        if progress is not None:
            progress(frame_filter.counts)
