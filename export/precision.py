"""Precision baked into the ONNX, for strongly typed TensorRT builds.

TensorRT 11 has no FP16/INT8 builder flags: a network runs in the precision its ONNX states.
- fp16: weights and activations converted to float16 with Casts at the edges; the inputs and
  outputs keep their types, and Resize/ArgMax/Softmax stay float32 (upsampled logits decide
  the mask, and half precision ties would flip pixels there).
- int8: Q/DQ pairs from static calibration on target images, per-channel symmetric int8
  weights and symmetric int8 activations (zero point 0, which TensorRT requires). Resize,
  Softmax and ArgMax stay unquantized.
Both files run in ONNX Runtime too, which is how the parity gate checks them without a GPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx

from uda_adapt.common.errors import UserError
from uda_adapt.adapt.images import read_rgb
from uda_adapt.common.manifest import InputSpec
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.export.config import CALIBRATION_METHODS
from uda_adapt.export.preprocess import list_images, spread_indices

FP32_OPS = ("Resize", "Upsample", "ArgMax", "Softmax")
# Fewer calibration images than this give unstable activation ranges (ModelOpt suggests ~500).
RECOMMENDED_CALIB_IMAGES = 300


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write a float16 copy of the ONNX at `src` to `dst` (float32 I/O kept)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True,
                                         op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS))
    keep_float32_after_blocked_ops(converted.graph)
    # The converter appends the input Casts at the end of the node list; ONNX requires topological order.
    sort_topologically(converted.graph)
    onnx.save(converted, str(dst))


def keep_float32_after_blocked_ops(graph: onnx.GraphProto) -> int:
    """Remove the float32 -> float16 -> float32 round trips the converter leaves after blocked ops.

    `convert_float_to_float16` keeps Resize/ArgMax in float32 but still casts between them:
    Resize(fp32) -> Cast(fp16) -> Cast(fp32) -> ArgMax, which rounds the upsampled logits to
    half precision right before the argmax (ties flip pixels: what FP32_OPS is there to
    prevent). Each such second Cast becomes an Identity of the float32 tensor; the first Cast
    goes when nothing else reads it. Returns the number of round trips removed.
    """
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    removed, drop = 0, []
    for cast in graph.node:
        if cast.op_type != "Cast" or _cast_to(cast) != onnx.TensorProto.FLOAT16:
            continue
        source = producers.get(cast.input[0])
        if source is None or source.op_type not in FP32_OPS:
            continue
        readers = consumers.get(cast.output[0], [])
        back = [n for n in readers if n.op_type == "Cast" and _cast_to(n) == onnx.TensorProto.FLOAT]
        for node in back:
            node.op_type = "Identity"
            del node.attribute[:]
            node.input[0] = cast.input[0]
            removed += 1
        if len(back) == len(readers) and cast.output[0] not in graph_outputs:
            drop.append(cast)
    for cast in drop:
        graph.node.remove(cast)
        for info in [v for v in graph.value_info if v.name == cast.output[0]]:
            graph.value_info.remove(info)
    return removed


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder `graph.node` in place so every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise UserError(f"the converted graph has a cycle or a dangling input at node {pending[0].name!r}; "
                            "export with --precision fp32 and report this model")
        for node in ready:
            available.update(node.output)
            ordered.append(node)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    del graph.node[:]
    graph.node.extend(ordered)


class ImageCalibrationReader:
    """onnxruntime CalibrationDataReader over target images at the export size."""

    def __init__(self, files: Sequence[Path], spec: InputSpec, size: tuple[int, int] | None = None) -> None:
        self.files = list(files)
        self.input_name = spec.name
        self.spec, self.size = spec, size or spec.size
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.files):
            return None
        rgb = read_rgb(self.files[self._next])
        self._next += 1
        # The device's own preprocessing, so the ranges are those of the inputs it will see.
        return {self.input_name: prepare_input(rgb, self.spec, self.size, frame_order="RGB")}

    def rewind(self) -> None:
        self._next = 0


def calibration_files(calib_data: str | os.PathLike | None, calib_num: int) -> list[Path]:
    """Up to `calib_num` images spread over `calib_data`; refuses missing, empty or no data."""
    if calib_data is None:
        raise UserError("--precision int8 needs calibration images: add --calib-data DIR with a few hundred "
                        "target-domain images (a random calibration would ruin the accuracy)")
    if calib_num < 1:
        raise UserError(f"--calib-num must be at least 1, got {calib_num}")
    files = list_images(calib_data, "calibration (--calib-data)")
    return [files[i] for i in spread_indices(len(files), calib_num)]


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, files: Sequence[Path], *, spec: InputSpec,
                  method: str = "minmax") -> dict[str, object]:
    """Write a Q/DQ int8 copy of `src` to `dst`, calibrated on `files`; returns the calibration record."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r}; valid methods: {', '.join(CALIBRATION_METHODS)}")
    model = onnx.load(str(src))
    op_types = sorted({n.op_type for n in model.graph.node} - set(FP32_OPS))
    reader = ImageCalibrationReader(files, spec)
    # The quantizer logs generic advice on the root logger and prints histogram progress on stdout.
    with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(src), str(dst), reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            # Symmetric: TensorRT only takes zero point 0. Bias stays float: TensorRT folds the
            # DQ -> Conv pattern itself and has no int32 dequantization for a quantized bias.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            calibration_providers=["CPUExecutionProvider"],
        )
    return {"method": method, "n_images": len(files), "format": "QDQ", "activations": "int8 symmetric",
            "weights": "int8 per-channel symmetric", "excluded_ops": list(FP32_OPS)}


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
