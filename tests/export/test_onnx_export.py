"""ONNX export of the small model: checker, ONNX Runtime parity, dynamic shapes, metadata."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from uda_adapt.adapt.checkpoint import build_model, load_checkpoint, save_checkpoint
from uda_adapt.common.errors import UserError
from uda_adapt.export.api import export_model
from uda_adapt.export.config import ExportConfig
from uda_adapt.common.manifest import manifest_from_metadata, metadata_props, read_manifest, sha256_file
from uda_adapt.export.onnx_export import DeployWrapper, check_onnx, export_onnx
from tests.export.conftest import small_checkpoint


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_same_mask_up_to_ties(mask, model, x, tie=1e-3):
    """ONNX Runtime's mask equals PyTorch's argmax, except where PyTorch's two best classes are a near tie.

    Which way a near tie falls depends on the CPU's float kernels, so a fixed share of agreeing
    pixels would be a statement about the machine; a disagreement away from a tie is a real bug.
    """
    with torch.no_grad():
        logits = DeployWrapper(model, "logits")(torch.from_numpy(x))
    top2 = logits.topk(2, dim=1).values
    gap = (top2[:, 0] - top2[:, 1]).numpy()
    expected = logits.argmax(1).numpy()
    assert mask.shape == expected.shape
    differ = mask != expected
    assert (gap[differ] < tie).all(), f"{int((differ & (gap >= tie)).sum())} pixels differ without a tie"


@pytest.mark.parametrize("imgsz", [(64, 128), (96, 160)])
def test_export_passes_checker_and_matches_pytorch(ckpt, target_data, tmp_path, imgsz):
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=imgsz, parity_data=target_data, parity_num=3))
    onnx_path = tmp_path / "out" / "model.onnx"
    onnx.checker.check_model(str(onnx_path), full_check=True)

    [check] = result.parity_checks
    assert check.passed and check.min_agreement == 0.999 and check.miou_delta is not None
    report = json.loads((tmp_path / "out" / "report" / "parity.json").read_text())
    assert report["passed"] and report["data"]["kind"] == "folder" and report["data"]["n_images"] == 3

    x = np.random.default_rng(1).standard_normal((1, 3, *imgsz)).astype(np.float32)
    mask = _session(onnx_path).run(None, {"image": x})[0]
    assert mask.dtype == np.int32 and mask.shape == (1, *imgsz)
    assert_same_mask_up_to_ties(mask, build_model(load_checkpoint(ckpt)), x)


def test_dynamic_export_runs_at_other_sizes_and_batches(ckpt, target_data, tmp_path):
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), dynamic=True, parity_data=target_data, parity_num=2))
    assert result.manifest.dynamic and result.manifest.input.size == (64, 128)
    assert result.manifest.dynamic_shapes == {"min": [1, 3, 32, 64], "opt": [1, 3, 64, 128], "max": [1, 3, 128, 256]}
    # The gate also checked both ends of the range.
    assert [c.imgsz for c in result.parity_checks] == [(64, 128), (32, 64), (128, 256)]
    assert all(c.passed for c in result.parity_checks)
    session = _session(tmp_path / "out" / "model.onnx")
    model = build_model(load_checkpoint(ckpt))
    for shape in [(1, 3, 64, 128), (2, 3, 96, 160), (1, 3, 40, 72)]:
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        mask = session.run(None, {"image": x})[0]
        assert mask.shape == (shape[0], *shape[2:])
        assert_same_mask_up_to_ties(mask, model, x)


def test_logits_output(ckpt, tmp_path):
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), output="logits", parity_num=2))
    assert result.manifest.output.kind == "logits" and result.manifest.output.dtype == "float32"
    x = np.zeros((1, 3, 64, 128), np.float32)
    logits = _session(tmp_path / "out" / "model.onnx").run(None, {"image": x})[0]
    assert logits.shape == (1, 19, 64, 128) and logits.dtype == np.float32
    [check] = result.parity_checks
    assert check.max_abs_logit_diff is not None and check.max_abs_logit_diff < 1e-3


def test_metadata_round_trip(ckpt, tmp_path):
    export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_num=1))
    manifest = read_manifest(tmp_path / "out" / "model.json")
    assert manifest.onnx_sha256 == sha256_file(tmp_path / "out" / "model.onnx")
    assert manifest.exporter["torch"] == torch.__version__ and manifest.exporter["onnx"] == onnx.__version__

    props = _session(tmp_path / "out" / "model.onnx").get_modelmeta().custom_metadata_map
    assert json.loads(props["classes"])[0] == "road" and json.loads(props["ignore_index"]) == 255
    assert json.loads(props["input"])["color_order"] == "RGB"
    assert json.loads(props["input"])["size"] == [64, 128] and "export_config" in props
    from_onnx = manifest_from_metadata(props)
    assert from_onnx.classes == manifest.classes and from_onnx.palette == manifest.palette
    assert from_onnx.input == manifest.input and from_onnx.output == manifest.output
    assert metadata_props(from_onnx) == metadata_props(manifest)


def test_synthetic_parity_is_reported_when_no_data_is_known(ckpt, tmp_path):
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_num=2))
    report = json.loads((tmp_path / "out" / "report" / "parity.json").read_text())
    assert report["data"]["kind"] == "synthetic" and "--data" in report["data"]["note"]
    assert result.parity_checks[0].miou_delta is None and report["passed"]


def test_parity_data_comes_from_the_checkpoint_config(target_data, tmp_path):
    path = tmp_path / "configured.pt"
    save_checkpoint(path, dataclasses.replace(load_checkpoint(small_checkpoint(path)), config={
        "data": {"target": {"kind": "folder", "root": str(target_data), "val_split": "val"}}}))
    export_model(path, tmp_path / "out", ExportConfig(size=(64, 128), parity_num=2))
    report = json.loads((tmp_path / "out" / "report" / "parity.json").read_text())
    assert report["data"] == {"kind": "folder", "root": str(target_data), "split": "val", "n_images": 2, "labelled": True}

    save_checkpoint(path, dataclasses.replace(load_checkpoint(path), config={
        "data": {"target": {"kind": "folder", "root": str(tmp_path / "elsewhere")}}}))
    export_model(path, tmp_path / "out2", ExportConfig(size=(64, 128), parity_num=1))
    report = json.loads((tmp_path / "out2" / "report" / "parity.json").read_text())
    assert report["data"]["kind"] == "synthetic" and "not on this machine" in report["data"]["note"]


def test_checker_failure_is_a_user_error(tmp_path):
    node = onnx.helper.make_node("Relu", ["missing"], ["y"])
    graph = onnx.helper.make_graph([node], "broken", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    path = tmp_path / "broken.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(UserError, match="fails the ONNX checker"):
        check_onnx(path)


def test_opset_outside_the_exporter_range_is_refused(ckpt, tmp_path):
    with pytest.raises(UserError, match="--opset 21"):
        export_onnx(build_model(load_checkpoint(ckpt)), tmp_path / "m.onnx", imgsz=(64, 128), opset=21)


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="the dynamo exporter needs onnxscript")
def test_dynamo_exporter(ckpt, target_data, tmp_path):
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), exporter="dynamo", opset=18, parity_data=target_data, parity_num=2))
    assert result.parity_checks[0].passed
    assert not list((tmp_path / "out").glob("*.data")), "weights must stay inside model.onnx"
