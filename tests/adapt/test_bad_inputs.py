"""Bad input to `train` and `eval`: one error line naming the culprit and the fix, exit 1, nothing half-written.

Families: dataset folders (missing, empty, unlabelled, corrupt, out-of-range ids, size mismatch),
config keys and values, files of the wrong kind where a checkpoint is expected, a full disk while
a checkpoint is written, and Ctrl-C during training.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import uda_adapt.adapt.checkpoint
from uda_adapt import adapt
from uda_adapt.adapt.checkpoint import load_checkpoint, save_checkpoint
from uda_adapt.cli.main import main
from uda_adapt.common.atomic import atomic_path
from uda_adapt.common.errors import UserError
from tests.adapt.fixtures import assert_one_error_line, make_folder_dataset
from tests.export.conftest import small_checkpoint

SIZE = (32, 64)
REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = ["data.crop_size=[32, 64]", "data.batch_size=2", "source.iterations=2", "logging.log_every=1",
              "logging.checkpoint_every=1", "logging.num_overlays=1"]


def sets(*overrides: str) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def leftovers(folder: Path) -> list[str]:
    """Temporaries of interrupted atomic writes anywhere under `folder`."""
    return sorted(p.name for p in folder.rglob(".*") if ".tmp" in p.name)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pt")


@pytest.fixture(scope="module")
def good_data(tmp_path_factory) -> Path:
    return make_folder_dataset(tmp_path_factory.mktemp("good"), num=2, size=SIZE)


# --- dataset folders ----------------------------------------------------------------------------

def _missing_root(root):
    shutil.rmtree(root)


def _empty_images(root):
    shutil.rmtree(root / "train" / "images")
    (root / "train" / "images").mkdir()


def _no_labels_folder(root):
    shutil.rmtree(root / "train" / "labels")


def _image_without_label(root):
    (root / "train" / "labels" / "train_0001.png").unlink()


def _corrupt_png(root):
    (root / "train" / "images" / "train_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)


def _corrupt_jpeg(root):
    (root / "train" / "images" / "train_0001.png").unlink()
    ok, jpeg = cv2.imencode(".jpg", np.full((*SIZE, 3), 90, np.uint8))
    (root / "train" / "images" / "train_0001.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])


def _label_out_of_range(root):
    cv2.imwrite(str(root / "train" / "labels" / "train_0001.png"), np.full(SIZE, 40, np.uint8))


def _size_mismatch(root):
    cv2.imwrite(str(root / "train" / "labels" / "train_0001.png"), np.zeros((SIZE[0] // 2, SIZE[1]), np.uint8))


@pytest.mark.parametrize("damage, words", [
    (_missing_root, ["dataset root", "does not exist", "expected the folder layout"]),
    (_empty_images, ["holds no .png or .jpg images"]),
    (_no_labels_folder, ["labels folder", "is missing or empty", "add <stem>.png train-id labels"]),
    (_image_without_label, ["train_0001.png has no label", "add it, or remove the image"]),
    (_corrupt_png, ["cannot decode image", "train_0001.png", "replace or remove it"]),
    (_corrupt_jpeg, ["cannot decode image", "train_0001.jpg", "replace or remove it"]),
    (_label_out_of_range, ["train_0001.png contains id(s) 40 outside 0-18", "convert the label to train ids"]),
    (_size_mismatch, ["train_0001.png is 64x16 but its image", "fix or remove the pair"]),
], ids=lambda v: getattr(v, "__name__", "")[1:])
def test_bad_dataset_in_eval(damage, words, ckpt, tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "data", num=2, size=SIZE)
    damage(root)
    out = tmp_path / "result.json"
    rc = main(["eval", str(ckpt), "--data", str(root), "--split", "train", "--json", str(out)])
    assert_one_error_line(rc, capsys.readouterr().err, *words)
    assert not out.exists() and leftovers(tmp_path) == []


def test_bad_dataset_in_train_writes_no_checkpoint(good_data, tmp_path, capsys):
    root = make_folder_dataset(tmp_path / "source", num=2, size=SIZE)
    _corrupt_png(root)
    run = tmp_path / "run"
    rc = main(["train", "--out", str(run), "--stage", "source",
               *sets(f"data.source.root={root}", f"data.target.root={good_data}", *TINY_TRAIN)])
    assert_one_error_line(rc, capsys.readouterr().err, "cannot decode image", "train_0001.png")
    assert not list(run.rglob("*.pt")) and leftovers(tmp_path) == []


# --- config keys and values -------------------------------------------------------------------

@pytest.mark.parametrize("override, words", [
    ("model.nmae=small", ["unknown config key 'model.nmae'", "valid keys under model: "]),
    ("sourse.iterations=3", ["unknown config key 'sourse'", "valid keys: "]),
    ("data.batch_size=two", ["'data.batch_size' must be an integer, got 'two'"]),
    ("self_train.pseudo.mode=best", ["'self_train.pseudo.mode' must be one of iast, fixed"]),
    ("source.optim.lr=-1", ["'source.optim.lr' must be greater than 0, got -1.0", "--set source.optim.lr=VALUE"]),
    ("data.batch_size=0", ["'data.batch_size' must be 1 or more, got 0"]),
    ("source.iterations=0", ["'source.iterations' must be 1 or more"]),
    ("self_train.rounds=0", ["'self_train.rounds' must be 1 or more"]),
    ("self_train.entropy_weight=-0.5", ["'self_train.entropy_weight' must be 0 or more"]),
    ("self_train.lambda_ct=-1", ["'self_train.lambda_ct' must be 0 or more"]),
    ("self_train.pseudo.beta=1.5", ["'self_train.pseudo.beta' must be in [0, 1]"]),
    ("self_train.pseudo.init_threshold=0", ["'self_train.pseudo.init_threshold' must be in (0, 1]"]),
    ("self_train.pseudo.alpha=[0.2, 0]", ["'self_train.pseudo.alpha' must be in (0, 1] (each value)"]),
    ("self_train.lrs=[1e-4, 1e-4, 1e-4, 1e-4]", ["'self_train.lrs' has 4 values for 3 rounds", "give 1 to 3"]),
    ("self_train.lrs=[]", ["'self_train.lrs' has 0 values"]),
    ("data.crop_size=[0, 64]", ["'data.crop_size' must be greater than 0 (each value)"]),
    ("data.scale_range=[1.5, 0.5]", ["'data.scale_range' is [1.5, 0.5]", "low <= high"]),
    ("data.jitter=1", ["'data.jitter' must be in [0, 1)"]),
    ("logging.checkpoint_every=0", ["'logging.checkpoint_every' must be 1 or more"]),
    ("correlation.optim.momentum=2", ["'correlation.optim.momentum' must be in [0, 1]"]),
    ("seed=-3", ["'seed' must be 0 or more"]),
    ("source.optim.lr=.nan", ["'source.optim.lr' must be a finite number"]),
])
def test_bad_config_stops_before_any_work(override, words, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--out", str(run), "--set", override])
    assert_one_error_line(rc, capsys.readouterr().err, *words)
    assert not run.exists()


def test_bad_value_in_a_config_file(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("source:\n  optim:\n    lr: -0.001\n")
    rc = main(["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert_one_error_line(rc, capsys.readouterr().err, "'source.optim.lr' must be greater than 0")


# --- a file of the wrong kind where a checkpoint is expected ------------------------------------

def _onnx(path, ckpt):
    # The head of a real ONNX ModelProto: ir_version 8, then producer_name "pytorch".
    path.write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x052.0.0" + bytes(200))


def _engine(path, ckpt):
    path.write_bytes(b"\x00" * 16 + b"ftrt" + os.urandom(200))


def _random(path, ckpt):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _empty(path, ckpt):
    path.write_bytes(b"")


def _truncated(path, ckpt):
    path.write_bytes(ckpt.read_bytes()[:2000])


def _zip(path, ckpt):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")


def _json(path, ckpt):
    path.write_text('{"classes": ["road"]}')


@pytest.mark.parametrize("make, words", [
    (_onnx, ["is an ONNX model, not a PyTorch checkpoint", "pass the .pt checkpoint it was exported from"]),
    (_engine, ["is a TensorRT engine, not a PyTorch checkpoint", "pass the .pt checkpoint it was built from"]),
    (_random, ["is not a PyTorch checkpoint (its content is not a format uda-adapt knows)", "written by `uda-adapt train`"]),
    (_empty, ["is an empty file", "copy the checkpoint again"]),
    (_truncated, ["is truncated", "copy it again"]),
    (_zip, ["is a zip archive, not a PyTorch checkpoint"]),
    (_json, ["is a JSON file, not a PyTorch checkpoint"]),
], ids=lambda v: getattr(v, "__name__", "")[1:])
def test_wrong_kind_of_file_given_to_eval(make, words, ckpt, good_data, tmp_path, capsys):
    path = tmp_path / "model.pt"
    make(path, ckpt)
    rc = main(["eval", str(path), "--data", str(good_data)])
    line = assert_one_error_line(rc, capsys.readouterr().err, str(path), *words)
    assert len(line) < 400
    assert not list(tmp_path.glob("*.json"))


# --- a full disk while a checkpoint is written --------------------------------------------------

def _fill_disk_after(nbytes):
    """atomic_write_bytes that writes `nbytes` of the file, then meets a full disk."""
    def write(path, data):
        with atomic_path(path) as tmp:
            tmp.write_bytes(bytes(data[:nbytes]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    return write


def test_disk_full_while_saving_keeps_the_previous_checkpoint(ckpt, tmp_path, monkeypatch):
    last = tmp_path / "last.pt"
    save_checkpoint(last, load_checkpoint(ckpt))
    before = last.read_bytes()
    monkeypatch.setattr(adapt.checkpoint, "atomic_write_bytes", _fill_disk_after(1000))
    newer = load_checkpoint(ckpt)
    newer.step = 7
    with pytest.raises(UserError, match=r"cannot write .*last\.pt: No space left on device; free some disk space"):
        save_checkpoint(last, newer)
    assert last.read_bytes() == before and load_checkpoint(last).step == 0
    assert leftovers(tmp_path) == []


def test_disk_full_during_training_is_one_line(good_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(adapt.checkpoint, "atomic_write_bytes", _fill_disk_after(1000))
    run = tmp_path / "run"
    rc = main(["train", "--out", str(run), "--stage", "source",
               *sets(f"data.source.root={good_data}", f"data.target.root={good_data}", *TINY_TRAIN)])
    assert_one_error_line(rc, capsys.readouterr().err, "last.pt", "No space left on device", "free some disk space")
    assert not list(run.rglob("*.pt")) and leftovers(tmp_path) == []


# --- Ctrl-C during training ---------------------------------------------------------------------

def test_ctrl_c_during_training_leaves_a_loadable_checkpoint(good_data, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "uda_adapt", "train", "--out", str(run), "--stage", "source",
            *sets(f"data.source.root={good_data}", f"data.target.root={good_data}", *TINY_TRAIN,
                  "source.iterations=100000")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # SIG_DFL: a test run from a background job inherits SIGINT ignored, and would pass it on.
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = run / "source" / "last.pt"
    try:
        deadline = time.monotonic() + 300   # a loaded 2-core machine is slow to import torch and start
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not last.exists():
            process.kill()
            pytest.fail(f"no checkpoint was written (exit {process.poll()}): {process.communicate(timeout=30)[1][-2000:]}")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == "uda-adapt: interrupted"
    ckpt = load_checkpoint(last)
    assert ckpt.step >= 1 and not ckpt.extra["complete"]
    assert leftovers(run) == []
