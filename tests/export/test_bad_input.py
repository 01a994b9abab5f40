"""Bad input: one clear UserError, and nothing half-written left behind."""

from __future__ import annotations

import json

import pytest
import torch

import uda_adapt.export.api
from uda_adapt import export
from uda_adapt.common.errors import UserError
from uda_adapt.export.api import export_model
from uda_adapt.export.config import ExportConfig
from uda_adapt.common.manifest import read_manifest
from uda_adapt.export.trt_check import SUPPORTED_OPS


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_foreign_checkpoint(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(UserError, match="not a uda-adapt checkpoint"):
        export_model(foreign, tmp_path / "out", ExportConfig(size=(64, 128)))
    assert not (tmp_path / "out").exists()


def test_truncated_and_missing_checkpoint(ckpt, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(UserError, match=r"truncated\.pt is truncated"):
        export_model(truncated, tmp_path / "out", ExportConfig(size=(64, 128)))
    with pytest.raises(UserError, match="does not exist"):
        export_model(tmp_path / "missing.pt", tmp_path / "out", ExportConfig(size=(64, 128)))
    assert not (tmp_path / "out").exists()


def test_existing_export_needs_force(ckpt, tmp_path):
    out = tmp_path / "out"
    export_model(ckpt, out, ExportConfig(size=(64, 128), parity_num=1))
    with pytest.raises(UserError, match="already holds an export; pass --force"):
        export_model(ckpt, out, ExportConfig(size=(96, 160), parity_num=1))
    assert read_manifest(out / "model.json").input.size == (64, 128)
    export_model(ckpt, out, ExportConfig(size=(96, 160), parity_num=1), force=True)
    assert read_manifest(out / "model.json").input.size == (96, 160)
    assert _leftovers(tmp_path) == []


def test_force_never_replaces_a_foreign_directory(ckpt, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="holds no uda-adapt export"):
        export_model(ckpt, tmp_path / "docs", ExportConfig(size=(64, 128)), force=True)
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"


def test_unwritable_output(ckpt, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    with pytest.raises(UserError, match="cannot create output directory"):
        export_model(ckpt, blocker / "out", ExportConfig(size=(64, 128)))
    with pytest.raises(UserError, match="is a file"):
        export_model(ckpt, blocker, ExportConfig(size=(64, 128)))


@pytest.mark.parametrize("kwargs, words", [
    ({"dynamic": True, "min_shape": "1x3x128x256"}, "min <= opt <= max"),
    ({"dynamic": True, "min_shape": (1, 3, 96, 160), "opt_shape": (1, 3, 128, 256)}, "outside the dynamic range"),
    ({"dynamic": True, "min_shape": "1x3x64"}, "not an image shape"),
    ({"min_shape": "1x3x32x64"}, "need --dynamic"),
    ({"size": (0, 128)}, "positive height and width"),
    ({"precision": "bf16"}, "valid: fp32, fp16, int8"),
    ({"output": "probs"}, "valid: mask, logits"),
    ({"opset": 9}, "--opset 9 is outside"),
])
def test_bad_options_fail_before_any_work(ckpt, tmp_path, kwargs, words):
    kwargs = {"size": (64, 128), **kwargs}
    with pytest.raises(UserError, match=words):
        export_model(ckpt, tmp_path / "out", ExportConfig(**kwargs))
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_failure_midway_leaves_nothing(ckpt, tmp_path):
    with pytest.raises(UserError, match="dataset root"):
        export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_data=tmp_path / "no-data"))
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_failing_parity_gate_says_by_how_much(ckpt, target_data, tmp_path, monkeypatch):
    def shifted_reference(wrapper, samples):
        return [(mask + 1) % 19 for mask in real_reference(wrapper, samples)]

    real_reference = export.api.torch_reference
    monkeypatch.setattr(export.api, "torch_reference", shifted_reference)
    with pytest.raises(UserError) as caught:
        export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_data=target_data, parity_num=2))
    message = str(caught.value)
    assert message.startswith("parity gate failed: model.onnx (fp32, 64x128) agrees with PyTorch on 0.000 % of pixels")
    assert "99.900 points below the 99.9 % gate" in message and "\n" not in message
    report = json.loads((tmp_path / "out" / "report" / "parity.json").read_text())
    assert report["passed"] is False and report["checks"][0]["passed"] is False
    assert read_manifest(tmp_path / "out" / "model.json").parity["passed"] is False


def test_static_trt_check_refuses_trt_builds_and_warns_otherwise(ckpt, tmp_path, monkeypatch):
    # A target parser without ArgMax stands in for any unsupported op.
    monkeypatch.setitem(SUPPORTED_OPS, 10, SUPPORTED_OPS[10] - {"ArgMax"})
    with pytest.raises(UserError, match="TensorRT 10.x cannot parse: ArgMax node"):
        export_model(ckpt, tmp_path / "trt", ExportConfig(size=(64, 128), trt=True, trt_target=10, parity_num=1))
    assert not (tmp_path / "trt").exists()

    messages = []
    export_model(ckpt, tmp_path / "onnx", ExportConfig(size=(64, 128), trt_target=10, parity_num=1), log=messages.append)
    assert any(m.startswith("warning: TensorRT 10.x could not parse") for m in messages)
    report = json.loads((tmp_path / "onnx" / "report" / "trt_check.json").read_text())
    assert report["passed"] is False and report["files"]["model.onnx"][0]["op_type"] == "ArgMax"
