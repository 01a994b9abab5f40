"""`uda-adapt data capture`: kept count, duplicates and blurred frames dropped, resume, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from uda_adapt.cli.main import main
from uda_adapt.runtime.capture_set import CaptureConfig, capture_set, goes_to_val

REPO = Path(__file__).resolve().parents[2]
SIZE = (64, 128)


def blocky_frame(seed: int, size=SIZE) -> np.ndarray:
    """A sharp BGR frame of random coloured 8x8 blocks: every seed looks different."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3)).astype(np.uint8)
    return np.kron(grid, np.ones((8, 8, 1), np.uint8))


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    assert path.stat().st_size > 0
    return path


@pytest.fixture
def clip(tmp_path) -> Path:
    """6 distinct frames, the 6th repeated 4 times, 2 blurred frames, 4 more distinct frames."""
    distinct = [blocky_frame(i) for i in range(10)]
    blurred = [cv2.GaussianBlur(blocky_frame(100 + i), (0, 0), 6) for i in range(2)]
    frames = distinct[:6] + [distinct[5]] * 4 + blurred + distinct[6:]
    return write_clip(tmp_path / "clip.avi", frames)


def images_in(root: Path, split: str = "train") -> list[Path]:
    folder = root / split / "images"
    # Hidden files are the temporaries of writes in progress, not images of the set.
    return sorted(p for p in folder.glob("*.jpg") if not p.name.startswith(".")) if folder.is_dir() else []


def test_capture_keeps_distinct_frames_and_counts_what_it_drops(tmp_path, clip):
    result = capture_set(CaptureConfig(input=str(clip), out=tmp_path / "set"))
    counts = result.counts
    assert (counts.seen, counts.kept, counts.duplicate, counts.blurred) == (16, 10, 4, 2)
    assert len(images_in(tmp_path / "set")) == 10 and result.train == 10 and result.val == 0
    assert not (tmp_path / "set" / "val").exists()


def test_val_fraction_max_and_size(tmp_path, clip):
    result = capture_set(CaptureConfig(input=str(clip), out=tmp_path / "set", val_fraction=0.25, max_images=8, size=(32, 48)))
    assert (result.train, result.val) == (6, 2)
    image = cv2.imread(str(images_in(tmp_path / "set", "val")[0]))
    assert image.shape == (32, 48, 3)
    assert sum(goes_to_val(i, 0.1) for i in range(100)) == 10


def test_stride_and_every(tmp_path, clip):
    strided = capture_set(CaptureConfig(input=str(clip), out=tmp_path / "a", stride=4, min_change=0, min_sharpness=0))
    assert strided.counts.seen == 4                     # frames 0, 4, 8, 12 of 16
    every = capture_set(CaptureConfig(input=str(clip), out=tmp_path / "b", every_s=0.5, min_change=0, min_sharpness=0))
    assert every.counts.kept == 4                       # 1.6 s of video at 10 FPS, one per 0.5 s


def test_rerun_appends_without_clashes_or_duplicates(tmp_path, clip):
    root = tmp_path / "set"
    first = capture_set(CaptureConfig(input=str(clip), out=root))
    assert first.counts.kept == 10
    again = capture_set(CaptureConfig(input=str(clip), out=root))
    assert again.counts.kept == 0 and again.counts.duplicate == 14      # all already in the set
    other = write_clip(tmp_path / "other.avi", [blocky_frame(500 + i) for i in range(3)])
    more = capture_set(CaptureConfig(input=str(other), out=root))
    assert more.counts.kept == 3 and more.first_name == "cap_000010.jpg"
    assert len(images_in(root)) == 13
    bigger = write_clip(tmp_path / "bigger.avi", [blocky_frame(900, (128, 256))] * 2)
    capture_set(CaptureConfig(input=str(bigger), out=root))
    assert cv2.imread(str(root / "train" / "images" / "cap_000013.jpg")).shape[:2] == SIZE   # the set's size kept


def test_like_copies_the_source_classes(tmp_path, clip):
    source = tmp_path / "source"
    source.mkdir()
    (source / "meta.json").write_text(json.dumps({"classes": ["road", "car"], "palette": [[1, 2, 3], [4, 5, 6]]}))
    capture_set(CaptureConfig(input=str(clip), out=tmp_path / "set", like=source, max_images=2))
    assert json.loads((tmp_path / "set" / "meta.json").read_text())["classes"] == ["road", "car"]


def test_cli_prints_counts_and_rejects_both_every_and_stride(tmp_path, clip, capsys):
    assert main(["data", "capture", str(clip), "--out", str(tmp_path / "set"), "--max", "3"]) == 0
    captured = capsys.readouterr()
    assert "kept 3" in captured.err and "3 train and 0 val images added" in captured.out
    assert main(["data", "capture", str(clip), "--out", str(tmp_path / "x"), "--every", "1", "--stride", "2"]) == 1
    assert "give --every or --stride, not both" in capsys.readouterr().err


def test_ctrl_c_keeps_what_was_written(tmp_path):
    clip = write_clip(tmp_path / "long.avi", [blocky_frame(i, (32, 64)) for i in range(1500)])
    root = tmp_path / "set"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # SIG_DFL: a test run from a background job inherits SIGINT ignored, and would pass it on.
    process = subprocess.Popen([sys.executable, "-m", "uda_adapt", "data", "capture", str(clip), "--out", str(root)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while len(images_in(root)) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "capture finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    kept = images_in(root)
    assert 5 <= len(kept) < 1500
    assert all(cv2.imread(str(p)) is not None for p in kept)           # every file whole
    assert not [p for p in (root / "train" / "images").iterdir() if p.name.startswith(".")]   # no temporaries
    assert "(interrupted)" in err
