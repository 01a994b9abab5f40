"""The static TensorRT check: what it accepts, and models it must reject."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from uda_adapt.common.errors import UserError
from uda_adapt.export.trt_check import check_tensorrt_compat, format_findings


def _model(nodes, initializers=(), opset=17, inputs=None, outputs=None, domains=()):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=imports)


def _resize(**attrs):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", **attrs)
    return _model([node], [scales])


def test_exported_small_model_passes_for_trt10_and_trt11(ckpt, tmp_path):
    from uda_adapt.export.api import export_model
    from uda_adapt.export.config import ExportConfig

    export_model(ckpt, tmp_path / "out", ExportConfig(size=(64, 128), dynamic=True, parity_num=1))
    for major in (10, 11):
        assert check_tensorrt_compat(tmp_path / "out" / "model.onnx", major) == []


def test_linear_resize_passes_cubic_is_rejected():
    assert check_tensorrt_compat(_resize(mode="linear"), 10) == []
    findings = check_tensorrt_compat(_resize(mode="cubic"), 10)
    assert len(findings) == 1 and "cubic" in findings[0].message and findings[0].node == "up"


@pytest.mark.parametrize("attrs, words", [
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
    ({"mode": "linear", "antialias": 1}, "antialias"),
    ({"mode": "linear", "keep_aspect_ratio_policy": "not_larger"}, "not_larger"),
])
def test_resize_attributes_trt_lacks(attrs, words):
    model = _resize(**attrs)
    model.opset_import[0].version = 18  # antialias / keep_aspect_ratio_policy exist from opset 18
    assert words in format_findings(check_tensorrt_compat(model, 10))


def test_opset_range_per_major():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], opset=22)
    assert "opset 22 is outside 9-20" in format_findings(check_tensorrt_compat(model, 10))
    assert check_tensorrt_compat(model, 11) == []


def test_qoperator_quantization_is_rejected():
    names = ["x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"]
    node = helper.make_node("QLinearConv", ["x", *names], ["y"], name="qconv")
    findings = check_tensorrt_compat(_model([node]), 10)
    assert [f.op_type for f in findings] == ["QLinearConv"] and "not supported" in findings[0].message


def test_qdq_zero_points_must_be_zero_and_signed():
    def qdq(zero_point):
        scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
        zp = numpy_helper.from_array(zero_point, "zp")
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
                 helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")]
        return _model(nodes, [scale, zp])

    assert check_tensorrt_compat(qdq(np.array(0, np.int8)), 10) == []
    assert "non-zero zero point" in format_findings(check_tensorrt_compat(qdq(np.array(3, np.int8)), 10))
    assert "UINT8" in format_findings(check_tensorrt_compat(qdq(np.array(128, np.uint8)), 10))


def test_custom_domain_needs_a_declared_plugin():
    node = helper.make_node("MyNms", ["x"], ["y"], name="nms", domain="com.example")
    model = _model([node], domains=["com.example"])
    assert "plugin" in format_findings(check_tensorrt_compat(model, 10))
    assert check_tensorrt_compat(model, 10, plugins=["com.example::MyNms"]) == []


def test_pooling_and_topk_limits():
    pool = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2], dilations=[2, 2])
    consumer = helper.make_node("Identity", ["idx"], ["idx_out"])
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("idx_out", TensorProto.INT64, None)]
    text = format_findings(check_tensorrt_compat(_model([pool, consumer], outputs=outputs), 10))
    assert "dilations" in text and "Indices" in text

    k = numpy_helper.from_array(np.array([4096], np.int64), "k")
    topk = helper.make_node("TopK", ["x", "k"], ["y", "i"], name="topk")
    assert "K=4096" in format_findings(check_tensorrt_compat(_model([topk], [k]), 10))


def test_nodes_inside_subgraphs_are_checked():
    body = helper.make_graph([helper.make_node("Unique", ["x"], ["u"], name="inner")], "body", [],
                             [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=body, else_branch=body)
    findings = check_tensorrt_compat(_model([node], [cond]), 10)
    assert {f.op_type for f in findings} == {"Unique"}


def test_unknown_target_is_a_user_error():
    with pytest.raises(UserError, match="valid targets: 10, 11"):
        check_tensorrt_compat(onnx.ModelProto(), 9)
