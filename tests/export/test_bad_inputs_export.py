"""Bad input to `uda-adapt export`: one error line naming the culprit and the fix, exit 1, no bundle left behind."""

from __future__ import annotations

import errno
import os
import sys

import numpy as np
import pytest

import uda_adapt.export.api
from uda_adapt import export
from uda_adapt.cli.main import main
from uda_adapt.common.atomic import atomic_path
from tests.adapt.fixtures import assert_one_error_line
from tests.export.fake_tensorrt import make_fake_tensorrt


def _export(ckpt, out, *extra):
    return main(["export", str(ckpt), "--out", str(out), "--size", "64x128", "--parity-num", "1", *extra])


def _no_bundle(tmp_path):
    """Nothing of an export under tmp_path: no out/, no staging folder, no temporaries."""
    return not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _onnx_bytes(path, ckpt, tmp_path):
    assert _export(ckpt, tmp_path / "first") == 0
    path.write_bytes((tmp_path / "first" / "model.onnx").read_bytes())


def _engine_bytes(path, ckpt, tmp_path):
    path.write_bytes(b"\x00" * 16 + b"ftrt" + os.urandom(100))


def _random_bytes(path, ckpt, tmp_path):
    path.write_bytes(np.random.default_rng(1).bytes(2048))


def _truncated(path, ckpt, tmp_path):
    path.write_bytes(ckpt.read_bytes()[:1500])


@pytest.mark.parametrize("make, words", [
    (_onnx_bytes, ["is an ONNX model, not a PyTorch checkpoint", "pass the .pt checkpoint it was exported from"]),
    (_engine_bytes, ["is a TensorRT engine, not a PyTorch checkpoint"]),
    (_random_bytes, ["is not a PyTorch checkpoint", "written by `uda-adapt train`"]),
    (_truncated, ["is truncated", "copy it again"]),
], ids=lambda v: getattr(v, "__name__", "")[1:])
def test_wrong_kind_of_file_where_a_checkpoint_is_expected(make, words, ckpt, tmp_path, capsys):
    path = tmp_path / "given.pt"
    make(path, ckpt, tmp_path)
    capsys.readouterr()
    assert_one_error_line(_export(path, tmp_path / "out"), capsys.readouterr().err, str(path), *words)
    assert _no_bundle(tmp_path)


def test_int8_without_calibration_data(ckpt, tmp_path, capsys):
    rc = _export(ckpt, tmp_path / "out", "--precision", "int8")
    assert_one_error_line(rc, capsys.readouterr().err, "--precision int8 needs calibration images", "--calib-data")
    assert _no_bundle(tmp_path)


def test_int8_with_an_empty_calibration_folder(ckpt, tmp_path, capsys):
    (tmp_path / "calib").mkdir()
    rc = _export(ckpt, tmp_path / "out", "--int8", "--calib-data", str(tmp_path / "calib"))
    assert_one_error_line(rc, capsys.readouterr().err, str(tmp_path / "calib"), "holds no images")
    assert not (tmp_path / "out").exists()


def test_corrupt_parity_image(ckpt, target_data, tmp_path, capsys):
    data = tmp_path / "data"
    for split in ("val",):
        (data / split / "images").mkdir(parents=True)
        (data / split / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rc = _export(ckpt, tmp_path / "out", "--data", str(data))
    assert_one_error_line(rc, capsys.readouterr().err, "cannot decode image", "a.png", "replace or remove it")
    assert _no_bundle(tmp_path)


def test_output_under_a_file(ckpt, tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    rc = _export(ckpt, tmp_path / "blocker" / "out")
    assert_one_error_line(rc, capsys.readouterr().err, "cannot create output directory", "choose another --out")


def test_disk_full_while_writing_the_bundle(ckpt, tmp_path, monkeypatch, capsys):
    def full_disk(path, text):
        with atomic_path(path) as tmp:
            tmp.write_text(text[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export.api, "atomic_write_text", full_disk)
    rc = _export(ckpt, tmp_path / "out")
    assert_one_error_line(rc, capsys.readouterr().err, "No space left on device", "free some disk space")
    assert _no_bundle(tmp_path)


def test_engine_build_for_a_tensorrt_without_a_gpu(ckpt, tmp_path, monkeypatch, capsys):
    # A TensorRT whose builder cannot reach a GPU: the ONNX bundle stays, the error says where to build.
    trt = make_fake_tensorrt("10.3.0.26", builder_error=TypeError("factory function returned nullptr"))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(export.api, "detect_gpu", lambda: pytest.importorskip("tests.export.test_tensorrt_build").ORIN)
    rc = _export(ckpt, tmp_path / "out", "--trt")
    line = assert_one_error_line(rc, capsys.readouterr().err)
    assert "trtexec" in line or "GPU" in line
