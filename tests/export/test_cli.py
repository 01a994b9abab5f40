"""`uda-adapt export` through the real entry point: exit codes and one-line errors."""

from __future__ import annotations

import re
import sys

from uda_adapt.cli.main import main


def _export(ckpt, out, *extra):
    return main(["export", str(ckpt), "--out", str(out), "--size", "64x128", "--parity-num", "1", *extra])


def test_export_prints_parity_and_exits_0(ckpt, tmp_path, capsys):
    assert _export(ckpt, tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert f"exported {tmp_path / 'out' / 'model.onnx'}" in captured.out
    assert re.search(r"parity: model.onnx \(fp32, 64x128\): pixel agreement \d+\.\d{3} % \(gate >= 99.9 %\) - pass",
                     captured.err)
    assert "synthetic" in captured.err  # no target data known: said, not skipped


def test_int8_without_calibration_is_one_line_exit_1(ckpt, tmp_path, capsys):
    assert _export(ckpt, tmp_path / "out", "--int8") == 1
    err = capsys.readouterr().err
    assert err.startswith("uda-adapt: error: --precision int8 needs calibration images") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_existing_export_without_force_exits_1(ckpt, tmp_path, capsys):
    assert _export(ckpt, tmp_path / "out") == 0
    assert _export(ckpt, tmp_path / "out") == 1
    assert "--force" in capsys.readouterr().err
    assert _export(ckpt, tmp_path / "out", "--force") == 0


def test_trt_without_tensorrt_exits_1_with_trtexec_line(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert _export(ckpt, tmp_path / "out", "--trt", "--fp16", "--dynamic") == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("uda-adapt: error: TensorRT is not installed")
    assert "trtexec --onnx=" in err and "--stronglyTyped" in err and "--optShapes=image:1x3x64x128" in err
    assert (tmp_path / "out" / "model.fp16.onnx").is_file() and (tmp_path / "out" / "model.json").is_file()


def test_conflicting_precisions_are_a_usage_error(ckpt, tmp_path, capsys):
    assert _export(ckpt, tmp_path / "out", "--fp16", "--precision", "int8") == 2
    assert "conflicting precisions" in capsys.readouterr().err
