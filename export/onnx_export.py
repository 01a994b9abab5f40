"""PyTorch -> ONNX: the deployable graph, checked and labelled.

The exported graph takes a normalised float32 RGB image "image" (B, 3, H, W) and returns either
the class mask "mask" int32 (B, H, W), with the upsampling and the argmax fused in, or the
upsampled logits "logits" float32 (B, C, H, W). A runtime only normalises and reads the answer.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from uda_adapt.common.errors import UserError
from uda_adapt.export.config import EXPORTERS, OUTPUT_KINDS

INPUT_NAME = "image"
# The TorchScript exporter stops at opset 20; 13 is the first with per-channel Q/DQ (int8).
OPSET_RANGE = {"legacy": (13, 20), "dynamo": (13, 23)}


class DeployWrapper(nn.Module):
    """Normalised (B, 3, H, W) -> int32 mask (B, H, W) or float32 logits (B, C, H, W) at input size."""

    def __init__(self, model: nn.Module, output: str = "mask") -> None:
        super().__init__()
        if output not in OUTPUT_KINDS:
            raise UserError(f"unknown output kind {output!r}; valid kinds: {', '.join(OUTPUT_KINDS)}")
        self.model = model
        self.output = output

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Always interpolate: upsample_logits skips equal sizes, and a traced graph would freeze that test.
        logits = F.interpolate(self.model(image), size=image.shape[-2:], mode="bilinear", align_corners=False)
        if self.output == "logits":
            return logits
        # int32, not ArgMax's int64: TensorRT computes indices in int32 and half the bytes cross to the host.
        return logits.argmax(dim=1).to(torch.int32)


def check_opset(opset: int, exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise UserError(f"unknown exporter {exporter!r}; valid exporters: {', '.join(EXPORTERS)}")
    low, high = OPSET_RANGE[exporter]
    if not low <= opset <= high:
        raise UserError(f"--opset {opset} is outside {low}-{high}, the range the {exporter} exporter supports here; "
                        "use --opset 17 (inside TensorRT 10 and 11's ranges)")


def export_onnx(model: nn.Module, path: str | os.PathLike, *, imgsz: tuple[int, int], dynamic: bool = False,
                output: str = "mask", opset: int = 17, exporter: str = "legacy") -> None:
    """Export `model` (logits at its output stride) wrapped in `DeployWrapper` to `path`.

    With `dynamic`, batch, height and width are symbolic; `imgsz` is then only the tracing size.
    """
    check_opset(opset, exporter)
    export_wrapper(DeployWrapper(model, output).eval(), torch.zeros(1, 3, *imgsz), path, dynamic=dynamic, output=output,
                   opset=opset, exporter=exporter)


# Which axes of an NCHW or NHWC image input are the batch, height and width.
IMAGE_AXES = {"NCHW": {0: "batch", 2: "height", 3: "width"}, "NHWC": {0: "batch", 1: "height", 2: "width"}}


def export_wrapper(wrapper: nn.Module, example: torch.Tensor, path: str | os.PathLike, *, dynamic: bool = False,
                   output: str = "mask", opset: int = 17, exporter: str = "legacy", input_name: str = INPUT_NAME,
                   layout: str = "NCHW", output_name: str | None = None) -> None:
    """Export a deploy wrapper (image in, `output` kind out) traced on `example`; dynamic: batch, height, width."""
    check_opset(opset, exporter)
    names = (input_name, output_name or output, IMAGE_AXES[layout])
    try:
        with torch.inference_mode(False), torch.no_grad():  # callers may sit in inference mode; tracing cannot
            if exporter == "legacy":
                _export_legacy(wrapper, example, path, dynamic, output, opset, names)
            else:
                _export_dynamo(wrapper, example, path, dynamic, output, opset, names)
    except UserError:
        raise
    except Exception as exc:  # the exporters raise many types; the first line says which op failed
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot export the model to ONNX opset {opset} with the {exporter} exporter: "
                        f"{reason[:300]}; try another --opset or --exporter") from exc


def _export_legacy(wrapper: nn.Module, example: torch.Tensor, path: str | os.PathLike, dynamic: bool,
                   output: str, opset: int, names: tuple[str, str, dict[int, str]]) -> None:
    input_name, output_name, input_axes = names
    dynamic_axes = None
    if dynamic:
        out_axes = {0: "batch", 1: "height", 2: "width"} if output == "mask" else {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {input_name: input_axes, output_name: out_axes}
    with warnings.catch_warnings():
        # The deprecation notice of the TorchScript exporter; it is still the reliable one for TensorRT.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        torch.onnx.export(wrapper, (example,), str(path), input_names=[input_name], output_names=[output_name],
                          opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)


def _export_dynamo(wrapper: nn.Module, example: torch.Tensor, path: str | os.PathLike, dynamic: bool,
                   output: str, opset: int, names: tuple[str, str, dict[int, str]]) -> None:
    input_name, output_name, input_axes = names
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError:
        raise UserError("the dynamo exporter needs onnxscript: pip install onnxscript, or use --exporter legacy") from None
    dynamic_shapes = None
    if dynamic:
        dim = torch.export.Dim.DYNAMIC
        dynamic_shapes = {"image": {axis: dim for axis in input_axes}}   # keyed by forward's argument name
    # external_data=False: one self-contained file (the model is far below 2 GB), so TensorRT's
    # parser and copies of the bundle never lose the weights.
    torch.onnx.export(wrapper, (example,), str(path), input_names=[input_name], output_names=[output_name],
                      opset_version=opset, dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False,
                      optimize=True, verbose=False)
    written = next(op.version for op in onnx.load(str(path), load_external_data=False).opset_import if op.domain in ("", "ai.onnx"))
    if written != opset:  # the dynamo exporter falls back to its own opset when it cannot convert
        raise UserError(f"the dynamo exporter could not write opset {opset} (it wrote {written}); "
                        f"use --opset {written} or --exporter legacy")
    if dynamic:
        _name_dynamic_dims(Path(path), output, input_axes)


def _name_dynamic_dims(path: Path, output: str, input_axes: dict[int, str]) -> None:
    """Give the dynamo exporter's generated dim names (s0, s1...) the names the legacy one uses."""
    model = onnx.load(str(path))
    for dim_index, dim in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        if dim_index in input_axes:
            dim.dim_param = input_axes[dim_index]
    out_names = {0: "batch", 1: "height", 2: "width"} if output == "mask" else {0: "batch", 2: "height", 3: "width"}
    for dim_index, dim in enumerate(model.graph.output[0].type.tensor_type.shape.dim):
        if dim_index in out_names:
            dim.dim_param = out_names[dim_index]
    onnx.save(model, str(path))


def check_onnx(path: str | os.PathLike) -> None:
    """onnx.checker with full shape inference; a failure is a UserError naming the file."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{Path(path).name} fails the ONNX checker: {first[:300]}; "
                        "export with another --opset or --exporter") from exc


def set_metadata(path: str | os.PathLike, props: dict[str, str]) -> None:
    """Replace the ONNX file's `metadata_props` with `props`, in place."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


def simplify_onnx(path: str | os.PathLike) -> tuple[int, int]:
    """Fold constants and drop no-op nodes with ONNX Runtime's basic (portable) graph rewrites.

    The rewritten graph replaces `path` only when it has fewer nodes; returns the node counts
    (before, after). Only standard-domain rewrites run at this level, so the result stays
    readable by TensorRT's parser; opset imports ORT adds for its own domains are dropped.
    """
    import onnxruntime as ort

    file = Path(path)
    before = len(onnx.load(str(file)).graph.node)
    candidate = file.with_name(f".{file.stem}.simplified.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(candidate)
    try:
        ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        simplified = onnx.load(str(candidate))
    finally:
        candidate.unlink(missing_ok=True)
    used = {node.domain for node in simplified.graph.node} | {"", "ai.onnx"}
    kept = [op for op in simplified.opset_import if op.domain in used]
    del simplified.opset_import[:]
    simplified.opset_import.extend(kept)
    after = len(simplified.graph.node)
    if after < before:
        onnx.save(simplified, str(file))
        return before, after
    return before, before
