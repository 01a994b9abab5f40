"""`export --deepstream`: the bundle's `deepstream/` folder, ready for Gst-nvinfer.

    deepstream/
      config_infer_primary.txt   nvinfer [property] group: network-type 2 (segmentation)
      model.onnx                 pixels float32 NCHW RGB 0..255 -> softmax probabilities (export/pixel_input.py)
      labels.txt                 one class name per line, line i = class id i

The keys and their meanings follow the Gst-nvinfer configuration reference
(https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html,
"Gst-nvinfer File Configuration Specifications"). nvinfer builds and caches its own TensorRT
engine from the ONNX on first use; paths in the file are relative to it, so the folder can be
copied anywhere. Written and parsed here; not run under DeepStream (docs/export.md says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.class_files import LABELS_FILE, format_labels
from uda_adapt.export.pixel_input import PIXELS_NAME, PROBABILITIES_NAME

DEEPSTREAM_DIR = "deepstream"
CONFIG_FILE = "config_infer_primary.txt"
MODEL_FILE = "model.onnx"
# nvinfer's network-mode: 0 FP32, 1 INT8, 2 FP16 (INT8 would need nvinfer's own calibration table).
NETWORK_MODES = {"fp32": 0, "fp16": 2}


def nvinfer_config(*, classes: Sequence[str], size: tuple[int, int], precision: str, color_order: str = "RGB") -> str:
    """The text of an nvinfer config for the deepstream/ graph at `size` (H, W)."""
    height, width = size
    lines = [
        "# Gst-nvinfer config written by `uda-adapt export --deepstream`.",
        "# The graph normalises itself: nvinfer only scales the frame to the network size and hands over RGB 0..255.",
        "[property]",
        "gpu-id=0",
        f"onnx-file={MODEL_FILE}",
        f"labelfile-path={LABELS_FILE}",
        "batch-size=1",
        "# 0 FP32, 2 FP16",
        f"network-mode={NETWORK_MODES[precision]}",
        "# 2: semantic segmentation",
        "network-type=2",
        f"num-detected-classes={len(classes)}",
        "process-mode=1",
        "gie-unique-id=1",
        "# y = net-scale-factor * (x - offset): identity; the graph applies the per-channel mean and std",
        "net-scale-factor=1.0",
        "offsets=0;0;0",
        f"# 0 RGB, 1 BGR: the channel order the network was trained on ({color_order})",
        f"model-color-format={0 if color_order.upper() == 'RGB' else 1}",
        "# stretched to the network size (the aspect ratio not kept), bilinear: as uda-adapt run does",
        "maintain-aspect-ratio=0",
        "scaling-filter=1",
        f"infer-dims=3;{height};{width}",
        f"# input {PIXELS_NAME}, output {PROBABILITIES_NAME} (1, {len(classes)}, {height}, {width}): each pixel takes",
        "# its most probable class (every probability exceeds a threshold of 0)",
        f"output-blob-names={PROBABILITIES_NAME}",
        "segmentation-threshold=0.0",
    ]
    return "\n".join(lines) + "\n"


def write_deepstream_files(folder: Path, *, classes: Sequence[str], size: tuple[int, int], precision: str,
                           color_order: str = "RGB") -> Path:
    """Write the config and labels into `folder` (the graph is written by export/pixel_input.py); returns the config."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / LABELS_FILE, format_labels(classes))
    config = folder / CONFIG_FILE
    atomic_write_text(config, nvinfer_config(classes=classes, size=size, precision=precision, color_order=color_order))
    return config


def read_nvinfer_config(path: str | Path) -> dict[str, str]:
    """The [property] keys of an nvinfer config (a GLib key file: `key=value`, `#` comments)."""
    values: dict[str, str] = {}
    group = None
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
            continue
        if group == "property" and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values
