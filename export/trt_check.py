"""Will TensorRT parse this ONNX? A static answer, without TensorRT or a GPU.

Rules pinned from onnx-tensorrt's `operators.md` for each TensorRT major version:

- opset of the default domain: 9-20 for TensorRT 10.x (JetPack 6), up to 25 for 11.x;
- every op in the parser's supported set (the quantized-operator ops that ONNX Runtime's
  QOperator format emits, e.g. QLinearConv, are not: use Q/DQ);
- `Resize`: nearest or linear (no cubic), a coordinate transform TensorRT implements,
  no antialias, aspect ratio policy `stretch`;
- Q/DQ: int8 (or fp8) with zero point 0; `TopK` with K < 3840; pooling 2D/3D without dilations
  and without the MaxPool `Indices` output;
- no custom domains unless the plugin is declared.
It runs on every export; with `--trt` any finding refuses the export before a build is tried.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from uda_adapt.common.errors import UserError

TRT_OPSET_RANGE: dict[int, tuple[int, int]] = {10: (9, 20), 11: (9, 25)}

_SUPPORTED_TRT10 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or PRelu Pad
ParametricSoftplus Pow QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike
Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round ScaledTanh Scan
Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
Unsqueeze Upsample Where Xor
""".split())
# Opsets 21-25 add these; TensorRT 11's parser handles them.
_SUPPORTED_TRT11 = _SUPPORTED_TRT10 | frozenset("Attention RMSNormalization RotaryEmbedding Swish".split())
SUPPORTED_OPS: dict[int, frozenset[str]] = {10: _SUPPORTED_TRT10, 11: _SUPPORTED_TRT11}

RESIZE_MODES = ("nearest", "linear")
RESIZE_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
QDQ_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN)
TOPK_MAX_K = 3840
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing the target TensorRT would refuse: where, which op, and what is wrong."""

    node: str
    op_type: str
    message: str

    def __str__(self) -> str:
        where = f"{self.op_type} node {self.node!r}" if self.node else self.op_type or "model"
        return f"{where}: {self.message}"


def check_tensorrt_compat(model: onnx.ModelProto | str | os.PathLike, trt_major: int,
                          plugins: Iterable[str] = ()) -> list[Finding]:
    """Everything in `model` that TensorRT `trt_major`.x cannot parse; empty when it can.

    `plugins` names custom ops (as `domain::op` or `op`) the target has plugins for.
    """
    if trt_major not in TRT_OPSET_RANGE:
        raise UserError(f"no TensorRT compatibility rules for TensorRT {trt_major}; "
                        f"valid targets: {', '.join(map(str, TRT_OPSET_RANGE))}")
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    findings: list[Finding] = []
    low, high = TRT_OPSET_RANGE[trt_major]
    opset = next((op.version for op in model.opset_import if op.domain in _DEFAULT_DOMAINS), None)
    if opset is None or not low <= opset <= high:
        findings.append(Finding("", "", f"opset {opset} is outside {low}-{high}, what TensorRT {trt_major}.x parses; "
                                        f"export with --opset 17"))
    declared = set(plugins)
    initializers = _initializers(model.graph)
    consumed = _consumed_names(model.graph)
    for node in _walk(model.graph):
        if node.domain not in _DEFAULT_DOMAINS:
            if f"{node.domain}::{node.op_type}" not in declared and node.op_type not in declared:
                findings.append(Finding(node.name, node.op_type, f"custom domain {node.domain!r} needs a TensorRT "
                                                                 f"plugin; none is declared"))
            continue
        if node.op_type not in SUPPORTED_OPS[trt_major]:
            findings.append(Finding(node.name, node.op_type, f"not supported by TensorRT {trt_major}.x's ONNX parser"))
            continue
        findings.extend(_check_node(node, initializers, consumed))
    return findings


def format_findings(findings: list[Finding], limit: int = 3) -> str:
    """The first few findings on one line, with the count of the rest."""
    text = "; ".join(str(f) for f in findings[:limit])
    if len(findings) > limit:
        text += f"; and {len(findings) - limit} more"
    return text


def _check_node(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto], consumed: set[str]) -> Iterator[Finding]:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def finding(message: str) -> Finding:
        return Finding(node.name, node.op_type, message)

    if node.op_type in ("Resize", "Upsample"):
        mode = _text(attrs.get("mode", b"nearest"))
        if mode not in RESIZE_MODES:
            yield finding(f"mode {mode!r} is not supported (only {', '.join(RESIZE_MODES)}); use bilinear upsampling")
        transform = _text(attrs.get("coordinate_transformation_mode", b"half_pixel"))
        if transform not in RESIZE_COORDINATE_MODES:
            yield finding(f"coordinate_transformation_mode {transform!r} is not supported")
        if int(attrs.get("antialias", 0)) != 0:
            yield finding("antialias=1 is not supported")
        policy = _text(attrs.get("keep_aspect_ratio_policy", b"stretch"))
        if policy != "stretch":
            yield finding(f"keep_aspect_ratio_policy {policy!r} is not supported (only 'stretch')")
    elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        zero_point = initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None:
            if zero_point.data_type not in QDQ_TYPES:
                yield finding(f"zero point type {onnx.TensorProto.DataType.Name(zero_point.data_type)} is not "
                              "supported; quantize to signed int8 (symmetric)")
            elif np.any(numpy_helper.to_array(zero_point).astype(np.float32) != 0):
                yield finding("non-zero zero point; TensorRT needs symmetric quantization (zero point 0)")
    elif node.op_type == "TopK" and len(node.input) > 1 and node.input[1] in initializers:
        k = int(numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)[0])
        if k >= TOPK_MAX_K:
            yield finding(f"K={k} exceeds TensorRT's limit of {TOPK_MAX_K - 1}")
    elif node.op_type in ("AveragePool", "MaxPool"):
        kernel = attrs.get("kernel_shape", [])
        if len(kernel) not in (2, 3):
            yield finding(f"{len(kernel)}D pooling is not supported (only 2D and 3D)")
        if any(d != 1 for d in attrs.get("dilations", [])):
            yield finding("pooling with dilations is not supported")
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1] and node.output[1] in consumed:
            yield finding("the Indices output is not supported")


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _walk(sub)


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:  # Constant nodes hold zero points and K in some exporters' output
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    return tensors


def _consumed_names(graph: onnx.GraphProto) -> set[str]:
    names = {o.name for o in graph.output}
    for node in _walk(graph):
        names.update(node.input)
    return names


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
