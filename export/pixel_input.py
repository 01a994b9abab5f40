"""Graphs that take pixels and normalise them inside: for DeepStream, Isaac ROS and lean hosts.

`model.onnx` takes a normalised float32 NCHW tensor, so the host converts, scales and
normalises every frame and sends 4 bytes a value to the GPU. The graphs here do that work
themselves, on the accelerator:

    model.uint8-nhwc.onnx / model.uint8-nchw.onnx   "pixels" uint8 RGB at the export size (a
                                                    quarter of the bytes) -> the same output as model.onnx
    deepstream/model.onnx                           "pixels" float32 NCHW RGB 0..255 (what nvinfer feeds with
                                                    net-scale-factor 1, offsets 0) -> "probabilities" (B, C, H, W)

nvinfer normalises with one scale for all channels (y = net-scale-factor * (x - offset[c]), per
https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html), which
cannot express per-channel ImageNet std; hence the normalisation in the graph. Its segmentation
parser takes per-class scores and thresholds the best one, hence softmax probabilities.

Each graph is checked against `model.onnx` in ONNX Runtime on the parity pictures (the same
frames, one side normalised on the host): the masks must agree as closely as the fp32 gate asks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uda_adapt.common.gates import GATES
from uda_adapt.common.manifest import InputSpec, sha256_file
from uda_adapt.export.onnx_export import DeployWrapper, check_onnx, export_wrapper

PIXELS_NAME = "pixels"
PROBABILITIES_NAME = "probabilities"


class PixelWrapper(nn.Module):
    """RGB pixels (uint8 or float 0..255) in `layout` -> the deploy wrapper's output; `probabilities`
    replaces logits by their softmax over classes."""

    def __init__(self, deploy: DeployWrapper, spec: InputSpec, layout: str = "NCHW", probabilities: bool = False) -> None:
        super().__init__()
        self.deploy, self.layout, self.probabilities = deploy, layout, probabilities
        # The host contract of `common.preprocess.prepare_input`: x * scale, then (x - mean) / std.
        self.register_buffer("scale", torch.tensor(float(spec.scale)))
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:     # named `image`, as the exporters' dynamic axes are
        x = image.float()
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        x = (x * self.scale - self.mean) / self.std
        out = self.deploy(x)
        return torch.softmax(out, dim=1) if self.probabilities else out


@dataclasses.dataclass
class PixelGraph:
    """One written graph and its check against model.onnx."""

    file: str
    input: dict[str, Any]
    output: dict[str, Any]
    pixel_agreement: float
    min_agreement: float
    sha256: str = ""

    @property
    def passed(self) -> bool:
        return self.pixel_agreement >= self.min_agreement

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


def export_pixel_graph(deploy: DeployWrapper, spec: InputSpec, path: Path, *, dtype: str, layout: str, output: str,
                       dynamic: bool, opset: int, exporter: str) -> None:
    """Write the pixel-input graph of `deploy` to `path`; `output` "probabilities" adds the softmax."""
    probabilities = output == PROBABILITIES_NAME
    wrapper = PixelWrapper(DeployWrapper(deploy.model, "logits" if probabilities else deploy.output), spec,
                           layout, probabilities).eval()
    height, width = spec.size
    shape = (1, height, width, 3) if layout == "NHWC" else (1, 3, height, width)
    example = torch.zeros(shape, dtype=torch.uint8 if dtype == "uint8" else torch.float32)
    export_wrapper(wrapper, example, path, dynamic=dynamic, output="logits" if probabilities else deploy.output,
                   opset=opset, exporter=exporter, input_name=PIXELS_NAME, layout=layout, output_name=output)
    check_onnx(path)


def check_pixel_graph(path: Path, reference_onnx: Path, images: list[np.ndarray], normalised: list[np.ndarray], *,
                      dtype: str, layout: str) -> float:
    """Pixel agreement of `path`'s masks on RGB `images` with `reference_onnx`'s on the same frames `normalised`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    ours = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    theirs = ort.InferenceSession(str(reference_onnx), options, providers=["CPUExecutionProvider"])
    agree = total = 0
    for rgb, x in zip(images, normalised):
        pixels = rgb[None] if layout == "NHWC" else rgb.transpose(2, 0, 1)[None]
        pixels = np.ascontiguousarray(pixels, np.uint8 if dtype == "uint8" else np.float32)
        mine = _as_mask(ours.run(None, {ours.get_inputs()[0].name: pixels})[0])
        reference = _as_mask(theirs.run(None, {theirs.get_inputs()[0].name: x})[0])
        agree += int((mine == reference).sum())
        total += reference.size
    return agree / max(total, 1)


def write_pixel_graph(deploy: DeployWrapper, spec: InputSpec, folder: Path, name: str, reference_onnx: Path,
                      images: list[np.ndarray], normalised: list[np.ndarray], *, dtype: str, layout: str, output: str,
                      dynamic: bool, opset: int, exporter: str) -> PixelGraph:
    """Export one pixel graph into `folder/name`, check it, and describe it for model.json."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    export_pixel_graph(deploy, spec, path, dtype=dtype, layout=layout, output=output, dynamic=dynamic, opset=opset,
                       exporter=exporter)
    agreement = check_pixel_graph(path, reference_onnx, images, normalised, dtype=dtype, layout=layout)
    height, width = spec.size
    shape = [1, height, width, 3] if layout == "NHWC" else [1, 3, height, width]
    out_dtype = "float32" if output == PROBABILITIES_NAME or deploy.output == "logits" else "int32"
    return PixelGraph(file=name, input={"name": PIXELS_NAME, "dtype": dtype, "layout": layout, "shape": shape,
                                        "color_order": spec.color_order, "range": "0..255"},
                      output={"name": output, "dtype": out_dtype}, pixel_agreement=agreement,
                      min_agreement=GATES["fp32"].min_agreement, sha256=sha256_file(path))


def _as_mask(output: np.ndarray) -> np.ndarray:
    """(1, H, W) int ids, or (1, C, H, W) scores -> their argmax."""
    return output.argmax(1) if output.ndim == 4 else output
