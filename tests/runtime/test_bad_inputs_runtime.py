"""Bad input to `uda-adapt run`: one error line naming the culprit and the fix, exit 1, no partial video.

Families: a model file of the wrong kind or damaged, a source that cannot open or ends early,
an output that cannot be written, a full disk while writing the video, and Ctrl-C mid-video
(the mp4 is finalised with the frames written so far).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import read_all_frames, street_frame

from uda_adapt.cli.main import main
from tests.adapt.fixtures import assert_one_error_line
from tests.export.conftest import small_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _run(*args):
    return main(["run", *map(str, args)])


def _videos(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".mp4", ".avi"))


def _checkpoint_named_onnx(folder, small_onnx):
    path = folder / "model.onnx"
    small_checkpoint(folder / "real.pt")
    shutil.copy(folder / "real.pt", path)
    shutil.copy(Path(small_onnx).with_suffix(".json"), folder / "model.json")
    return path


def _onnx_named_engine(folder, small_onnx):
    shutil.copy(small_onnx, folder / "model.engine")
    shutil.copy(Path(small_onnx).with_suffix(".json"), folder / "model.json")
    return folder / "model.engine"


def _random_onnx(folder, small_onnx):
    (folder / "model.onnx").write_bytes(np.random.default_rng(2).bytes(3000))
    shutil.copy(Path(small_onnx).with_suffix(".json"), folder / "model.json")
    return folder / "model.onnx"


def _truncated_onnx(folder, small_onnx):
    (folder / "model.onnx").write_bytes(Path(small_onnx).read_bytes()[:4000])
    shutil.copy(Path(small_onnx).with_suffix(".json"), folder / "model.json")
    return folder / "model.onnx"


@pytest.mark.parametrize("make, words", [
    (_checkpoint_named_onnx, ["is a PyTorch checkpoint, not an ONNX model", "uda-adapt export CKPT --out DIR"]),
    (_onnx_named_engine, ["is an ONNX model, not a TensorRT engine", "give it an .onnx name"]),
    (_random_onnx, ["is not an ONNX model", "re-export it"]),
    (_truncated_onnx, ["onnxruntime cannot load", "damaged or cut short", "export it again"]),
], ids=lambda v: getattr(v, "__name__", "")[1:])
def test_model_of_the_wrong_kind_or_damaged(make, words, small_onnx, clip_mp4, tmp_path, capsys):
    model = make(tmp_path, small_onnx)
    rc = _run(model, clip_mp4, tmp_path / "out.mp4")
    assert_one_error_line(rc, capsys.readouterr().err, str(model), *words)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("source, words", [
    ("missing.mp4", ["input", "missing.mp4 does not exist"]),
    ("junk.mp4", ["cannot open input", "junk.mp4", "re-encode it"]),
])
def test_source_that_cannot_open(source, words, small_onnx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("junk.mp4").write_bytes(np.random.default_rng(3).bytes(5000))
    rc = _run(small_onnx, source, "out.mp4")
    assert_one_error_line(rc, capsys.readouterr().err, *words)
    assert _videos(tmp_path) == ["junk.mp4"] and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_source_that_ends_early_gives_the_frames_it_had(small_onnx, tmp_path, capsys):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 72))
    for i in range(20):
        writer.write(street_frame(i))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])   # the file stops half-way
    assert _run(small_onnx, cut, tmp_path / "out.mp4") == 0
    written = len(read_all_frames(tmp_path / "out.mp4"))
    assert 0 < written < 20 and written == len(read_all_frames(cut))


def test_output_that_cannot_be_written(small_onnx, clip_mp4, tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    rc = _run(small_onnx, clip_mp4, tmp_path / "blocker" / "out.mp4")
    assert_one_error_line(rc, capsys.readouterr().err, "cannot create output directory", "choose another")


@pytest.mark.timeout(180)
def test_a_video_cut_short_by_the_file_system_is_an_error_and_not_kept(small_onnx, clip_mp4, tmp_path):
    # A real short write: the child may write at most FILE_LIMIT bytes per file (RLIMIT_FSIZE,
    # with SIGXFSZ ignored so the write fails with EFBIG, as a full disk fails with ENOSPC).
    # OpenCV's writer reports neither; only the sink's check of the finished file can notice.
    file_limit = 16 * 1024

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    out = tmp_path / "out" / "out.mp4"
    args = [sys.executable, "-m", "uda_adapt", "run", small_onnx, clip_mp4, str(out), "--input-loop", "4", "--codec", "mp4v"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=150, preexec_fn=limit_file_size)
    assert_one_error_line(result.returncode, result.stderr, "cannot write video", "out.mp4", "cut short", "free some disk space")
    assert os.listdir(out.parent) == []          # neither a truncated video nor its temporary

    # The same run without the limit keeps the video: the check does not refuse whole files.
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(read_all_frames(out)) == 5 * 30


def test_ctrl_c_mid_video_finalises_the_mp4(small_onnx, clip_mp4, tmp_path):
    out = tmp_path / "out.mp4"
    args = [sys.executable, "-m", "uda_adapt", "run", small_onnx, clip_mp4, str(out), "--input-rate", "10", "--no-legend"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # SIG_DFL: a test run from a background job inherits SIGINT ignored, and would pass it on.
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        # The sink's temporary appears with the first frame; then let a few more through.
        while not [p for p in tmp_path.iterdir() if ".tmp" in p.name] and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()[-2000:]
            time.sleep(0.02)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "uda-adapt: interrupted"
    frames = read_all_frames(out)
    assert 0 < len(frames) < 30 and frames[0].shape == (72, 128, 3)
    assert os.listdir(tmp_path) == ["out.mp4"]
