"""Precision-baked ONNX: fp16 and int8 Q/DQ run in ONNX Runtime and stay close to fp32."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from common.errors import UserError
from export.api import export_model
from export.config import ExportConfig
from common.manifest import InputSpec
from export.parity import GATES, Gate, ParityCheck
from export.precision import calibration_files, quantize_int8
from export.trt_check import check_tensorrt_compat


def test_fp16_variant(ckpt, target_data, tmp_path, reduced_precision_gates_open):
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), precision="fp16", parity_data=target_data, parity_num=3))
    variant = tmp_path / "out" / "model.fp16.onnx"
    model = onnx.load(str(variant))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert check_tensorrt_compat(model, 10) == []
    fp32, fp16 = result.parity_checks
    assert (fp16.file, fp16.precision, fp16.min_agreement) == ("model.fp16.onnx", "fp16", 0.0)
    assert 0.0 <= fp16.pixel_agreement <= 1.0 and fp16.passed
    assert result.manifest.variants["fp16"]["file"] == "model.fp16.onnx"
    props = {p.key: p.value for p in model.metadata_props}
    assert props["precision"] == '"fp16"' and "classes" in props


def test_int8_qdq_variant(ckpt, target_data, tmp_path):
    export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), parity_num=1))
    int8_path = tmp_path / "model.int8.onnx"
    record = quantize_int8(tmp_path / "out" / "model.onnx", int8_path, calibration_files(target_data, 4),
                           spec=InputSpec(size=(64, 128)))
    assert record["n_images"] == 4 and record["format"] == "QDQ"
    model = onnx.load(str(int8_path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "QLinearConv" not in ops
    initializers = {t.name: t for t in model.graph.initializer}
    zero_points = [initializers[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(zp.data_type == onnx.TensorProto.INT8 for zp in zero_points)
    assert all(not numpy_helper.to_array(zp).any() for zp in zero_points)  # symmetric: what TensorRT requires
    # Resize and ArgMax stay float: nothing quantizes their outputs.
    float_outputs = {o for n in model.graph.node if n.op_type in ("Resize", "ArgMax") for o in n.output}
    assert not float_outputs & {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert check_tensorrt_compat(model, 10) == [] and check_tensorrt_compat(model, 11) == []

    session = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
    mask = session.run(None, {"image": np.zeros((1, 3, 64, 128), np.float32)})[0]
    assert mask.shape == (1, 64, 128) and mask.dtype == np.int32


def test_int8_export_is_recorded(ckpt, target_data, tmp_path, reduced_precision_gates_open):
    result = export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), precision="int8", calib_data=target_data / "train" / "images", calib_num=3, parity_data=target_data, parity_num=3))
    int8 = result.parity_checks[1]
    assert (int8.file, int8.precision, int8.min_agreement, int8.max_miou_drop) == ("model.int8.onnx", "int8", 0.0, 100.0)
    assert int8.miou_delta is not None and 0.0 <= int8.pixel_agreement <= 1.0
    variant = result.manifest.variants["int8"]
    assert variant["file"] == "model.int8.onnx" and variant["calibration"]["n_images"] == 3
    recorded = result.manifest.parity["checks"][1]
    assert recorded["pixel_agreement"] == int8.pixel_agreement and recorded["passed"] is True
    report = json.loads((tmp_path / "out" / "report" / "parity.json").read_text())
    assert report["checks"][1]["min_agreement"] == 0.0 and report["passed"] is True


def test_int8_export_below_its_gate_is_kept_and_refused(ckpt, target_data, tmp_path, monkeypatch):
    # A gate no agreement can reach: the outcome is the same on every CPU.
    monkeypatch.setitem(GATES, "int8", Gate(1.01, 1.0))
    with pytest.raises(UserError, match=r"parity gate failed: model.int8.onnx \(int8, 64x128\) agrees with PyTorch"):
        export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), precision="int8", calib_data=target_data / "train" / "images", calib_num=3, parity_data=target_data, parity_num=1))
    manifest = json.loads((tmp_path / "out" / "model.json").read_text())
    assert manifest["parity"]["passed"] is False and "int8" in manifest["variants"]


def test_default_gates():
    assert GATES == {"fp32": Gate(0.999, None), "fp16": Gate(0.995, None), "int8": Gate(0.98, 1.0)}


@pytest.mark.parametrize("agreement, delta, passed", [
    (0.98, -1.0, True),      # both exactly at the gate
    (0.9799, 0.0, False),    # agreement short
    (0.99, -1.01, False),    # too many mIoU points lost
    (0.99, None, True),      # unlabelled data: agreement only
    (0.99, +3.0, True),      # a gain is never a failure
])
def test_int8_gate_logic(agreement, delta, passed):
    gate = Gate(0.98, 1.0)
    mious = {} if delta is None else {"miou_torch": 50.0, "miou_onnx": 50.0 + delta, "miou_delta": delta,
                                      "max_miou_drop": gate.max_miou_drop}
    check = ParityCheck("model.int8.onnx", "int8", (64, 128), agreement, gate.min_agreement, **mious)
    assert check.passed is passed
    assert (check.failure() == "") is passed
    assert check.summary().endswith(" - pass" if passed else " - FAIL")


def test_gate_failure_says_by_how_much():
    short = ParityCheck("model.int8.onnx", "int8", (64, 128), 0.452, 0.98)
    assert short.failure() == ("model.int8.onnx (int8, 64x128) agrees with PyTorch on 45.200 % of pixels, "
                               "52.800 points below the 98.0 % gate")
    lossy = ParityCheck("model.int8.onnx", "int8", (64, 128), 0.99, 0.98, miou_delta=-2.5, max_miou_drop=1.0)
    assert lossy.failure() == "model.int8.onnx (int8, 64x128) loses 2.50 mIoU points against PyTorch, more than the 1.0 allowed"


def test_int8_without_calibration_data_is_refused(ckpt, tmp_path):
    with pytest.raises(UserError, match="--calib-data"):
        export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), precision="int8"))
    assert not (tmp_path / "out").exists()


def test_int8_with_an_empty_or_missing_folder_is_refused(ckpt, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="holds no images"):
        export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), precision="int8", calib_data=tmp_path / "empty"))
    with pytest.raises(UserError, match="does not exist"):
        calibration_files(tmp_path / "nowhere", 10)
    assert not (tmp_path / "out").exists()


def test_calibration_files_are_spread_over_the_folder(target_data):
    files = calibration_files(target_data, 2)
    assert len(files) == 2 and files[0] != files[1]


@pytest.mark.parametrize("output", ["mask", "logits"])
def test_fp16_keeps_the_upsampled_logits_float32(ckpt, tmp_path, output):
    """Resize -> ArgMax (or -> the logits output) in float32: no Cast to fp16 between them."""
    from adapt.checkpoint import build_model, load_checkpoint
    from export.onnx_export import export_onnx
    from export.precision import convert_fp16

    fp32_path, fp16_path = tmp_path / "model.onnx", tmp_path / "model.fp16.onnx"
    export_onnx(build_model(load_checkpoint(ckpt)), fp32_path, imgsz=(64, 128), output=output)
    convert_fp16(fp32_path, fp16_path)
    graph = onnx.load(str(fp16_path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    end = next(n.input[0] for n in graph.node if n.op_type == "ArgMax") if output == "mask" else graph.output[0].name
    path, name = [], end
    while producers[name].op_type != "Resize":
        node = producers[name]
        path.append((node.op_type, [a.i for a in node.attribute if a.name == "to"]))
        name = node.input[0]
    assert all(op == "Identity" for op, _ in path), path       # no Cast(fp16) -> Cast(fp32) round trip
    onnx.checker.check_model(onnx.load(str(fp16_path)), full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 128)).astype(np.float32)
    out = ort.InferenceSession(str(fp16_path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert out.dtype == (np.int32 if output == "mask" else np.float32)
