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


# --- captures under real conditions ------------------------------------------------------------------
def test_a_name_another_capture_took_meanwhile_is_never_replaced(tmp_path, clip):
    """Another capture into ROOT writes cap_000001 after this one picked its numbers; it must survive."""
    root = tmp_path / "set"
    foreign = cv2.imencode(".jpg", blocky_frame(777))[1].tobytes()

    def other_capture_writes(counts) -> None:
        target = root / "train" / "images" / "cap_000001.jpg"
        if counts.kept == 1 and not target.exists():
            target.write_bytes(foreign)

    result = capture_set(CaptureConfig(input=str(clip), out=root), other_capture_writes)
    assert result.counts.kept == 10
    assert (root / "train" / "images" / "cap_000001.jpg").read_bytes() == foreign
    assert len(images_in(root)) == 11


def test_two_capture_processes_into_one_root_keep_every_image(tmp_path):
    clips = [write_clip(tmp_path / f"clip{k}.avi", [blocky_frame(1000 * k + i) for i in range(40)]) for k in (1, 2)]
    root = tmp_path / "set"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "uda_adapt", "data", "capture", str(c), "--out", str(root)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in clips]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    added = [int(out.split(": ")[-1].split()[0]) for out, _ in outputs]
    assert added == [40, 40]
    assert len(images_in(root)) == 80


def _live_capture(monkeypatch, source, **config):
    import uda_adapt.runtime.capture_set as capture_set_module

    def open_source(uri, options):
        source.open()
        return source

    monkeypatch.setattr(capture_set_module, "open_source", open_source)
    return CaptureConfig(input="rtsp://cam.local/stream", **config)


def test_a_lost_stream_reconnects_and_the_capture_goes_on(tmp_path, monkeypatch):
    from conftest import FakeSource

    from uda_adapt.runtime.capture import Backoff

    frames = [blocky_frame(i) for i in range(3)] + ["lost"] + [blocky_frame(10 + i) for i in range(2)]
    source = FakeSource(frames, live=True, fail_opens=2, interval=0.02)     # paced like a camera: nothing dropped
    messages = []
    config = _live_capture(monkeypatch, source, out=tmp_path / "set", max_images=5, backoff=Backoff(0.01, 0.02, give_up_after=20))
    result = capture_set(config, log=messages.append)
    assert result.train == 5 and len(images_in(tmp_path / "set")) == 5
    assert source.opens == 1 + 3 and any("reconnected" in m for m in messages)   # 2 failed reopens, then back


def test_a_stream_that_stays_lost_ends_with_an_error_and_what_was_kept(tmp_path, monkeypatch, capsys):
    from conftest import FakeSource

    import uda_adapt.runtime.capture_set as capture_set_module
    from uda_adapt.runtime.capture import Backoff

    source = FakeSource([blocky_frame(1), blocky_frame(2), "lost"], live=True, fail_opens=10_000, interval=0.02)
    config = _live_capture(monkeypatch, source, out=tmp_path / "set", backoff=Backoff(0.01, 0.02, give_up_after=0.1))
    with pytest.raises(capture_set_module.CaptureFailed, match="did not come back within 0.1 s") as failed:
        capture_set(config, log=lambda m: None)
    assert failed.value.result.train == 2
    source = FakeSource([blocky_frame(3), "lost"], live=True, fail_opens=10_000, interval=0.02)
    monkeypatch.setattr(capture_set_module, "open_source", lambda uri, options: source)
    code = main(["data", "capture", "rtsp://cam.local/stream", "--out", str(tmp_path / "cli"), "--give-up-after", "0.1"])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 train and 0 val images added before the error" in captured.out
    assert captured.err.strip().splitlines()[-1].endswith("did not come back within 0.1 s; check the camera and the network, then run again")


def test_a_full_disk_ends_the_status_line_and_says_what_was_kept(tmp_path, clip, monkeypatch, capsys):
    import errno

    import uda_adapt.common.atomic as atomic

    real_link, links = os.link, []

    def link_until_full(src, dst):
        if len(links) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        links.append(dst)
        return real_link(src, dst)

    monkeypatch.setattr(atomic.os, "link", link_until_full)
    assert main(["data", "capture", str(clip), "--out", str(tmp_path / "set")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[-2].startswith("capture: seen ") and "kept 4 " in lines[-2] and "(train +4, val +0)" in lines[-2]
    assert lines[-1].startswith("uda-adapt: error: cannot write ") and "No space left on device" in lines[-1]
    assert "4 train and 0 val images added before the error" in captured.out
    assert len(images_in(tmp_path / "set")) == 4


def test_off_a_terminal_the_status_is_plain_lines(tmp_path, clip, capsys):
    assert main(["data", "capture", str(clip), "--out", str(tmp_path / "set")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    assert err.splitlines()[-1].startswith("capture: seen 16  kept 10")


def test_sigterm_is_ctrl_c_with_the_summary(tmp_path):
    clip = write_clip(tmp_path / "long.avi", [blocky_frame(i, (32, 64)) for i in range(1500)])
    root = tmp_path / "set"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "uda_adapt", "data", "capture", str(clip), "--out", str(root)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(images_in(root)) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "capture finished before it could be stopped"
    process.terminate()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    kept = len(images_in(root))
    assert f"{kept} train and 0 val images added" in out and "(interrupted)" in err


def test_the_set_s_size_comes_from_any_image_in_it(tmp_path, clip):
    images = tmp_path / "set" / "train" / "images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "street_0001.png"), blocky_frame(5000, (32, 48)))
    capture_set(CaptureConfig(input=str(clip), out=tmp_path / "set", max_images=2))
    assert {cv2.imread(str(p)).shape[:2] for p in images_in(tmp_path / "set")} == {(32, 48)}


def test_a_failed_capture_leaves_no_empty_folder(tmp_path):
    from uda_adapt.common.errors import UserError

    root = tmp_path / "new" / "set"
    with pytest.raises(UserError, match="does not exist"):
        capture_set(CaptureConfig(input=str(tmp_path / "missing.mp4"), out=root))
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(UserError):
        capture_set(CaptureConfig(input=str(tmp_path / "missing.mp4"), out=kept))
    assert kept.is_dir()                     # a folder the user made stays


def test_temporaries_a_killed_capture_left_are_removed(tmp_path, clip):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    images = tmp_path / "set" / "train" / "images"
    images.mkdir(parents=True)
    stale = images / f".cap_000000.{dead.pid}-0a1b2c.tmp.jpg"
    stale.write_bytes(b"half a jpeg")
    capture_set(CaptureConfig(input=str(clip), out=tmp_path / "set", max_images=1))
    assert not stale.exists()


def test_on_a_terminal_a_log_line_first_ends_the_status_line():
    import io

    from uda_adapt.cli.status_line import StatusLine

    stream = io.StringIO()
    status = StatusLine("capture", stream, tty=True)
    status.show("kept 1")
    status.log("input lost; reconnecting in 0.5 s")
    status.finish("kept 40")
    assert stream.getvalue() == ("\r\x1b[Kcapture: kept 1" "\r\x1b[Kuda-adapt: input lost; reconnecting in 0.5 s\n"
                                 "capture: kept 40\n")
