"""The export manifest: `model.json` beside `model.onnx` / `*.engine`.

Everything a runtime needs to use the model without the training code: classes, palette,
input normalisation and layout, output kind, shapes and the versions and hashes that let a
runtime refuse an engine built for another TensorRT or GPU. The same fields are mirrored
into the ONNX `metadata_props` (values JSON-encoded) so a bare `.onnx` is self-describing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.errors import UserError
from uda_adapt.common.preprocess import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD

# 2: the input size moved to `input.size` (1 had `input.shape` and `resize.size`).
SCHEMA_VERSION = 2
MANIFEST_NAME = "model.json"
PRECISIONS = ("fp32", "fp16", "int8")


@dataclasses.dataclass
class InputSpec:
    """How a decoded frame becomes the network input; `common.preprocess.prepare_input` applies it."""

    name: str = "image"
    layout: str = "NCHW"
    dtype: str = "float32"
    color_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1.0 / 255.0                      # applied before mean/std
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # (H, W) the network is fed: the export size, the one place the manifest stores it. A
    # static export's input tensor is (1, 3, H, W); a dynamic one's range is `dynamic_shapes`.
    size: tuple[int, int] = DEFAULT_INPUT_SIZE
    resize: Literal["stretch"] = "stretch"          # frame -> size without keeping the aspect ratio

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))


@dataclasses.dataclass
class OutputSpec:
    name: str = "mask"
    kind: Literal["mask", "logits"] = "mask"
    dtype: str = "int32"                            # mask: int32 (B, H, W); logits: float32 (B, C, H, W)
    upsampled: bool = True                          # True: at input resolution


@dataclasses.dataclass
class EngineSpec:
    """Filled in only when a TensorRT engine was built (or a trtexec one registered)."""

    file: str
    precision: Literal["fp32", "fp16", "int8"]
    trt_version: str
    gpu_name: str                                   # the CUDA device name ("Orin" on every Jetson Orin)
    compute_capability: str                         # e.g. "8.7"
    min_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    calibration: dict[str, Any] | None = None
    dla_core: int | None = None                     # built for this DLA core (GPU fallback on)
    built_at: str = ""
    # The board (Jetson device tree) or GPU model it was built on; "" in entries from before it was recorded.
    device_model: str = ""
    registered_from: str | None = None              # an engine built elsewhere (trtexec), copied in under this name
    # How TensorRT built it (common.tensorrt_build.BuildPlan.record): typing, the ONNX read, builder flags.
    build: dict[str, Any] | None = None


@dataclasses.dataclass
class Manifest:
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    input: InputSpec
    output: OutputSpec
    ignore_index: int = 255
    model_name: str = ""
    onnx_file: str = "model.onnx"
    onnx_sha256: str = ""
    opset: int = 17
    dynamic: bool = False
    # Only when dynamic: {"min": [B, 3, H, W], "opt": [...], "max": [...]}, the range the
    # export was checked for and a TensorRT optimization profile is built with.
    dynamic_shapes: dict[str, list[int]] | None = None
    exporter: dict[str, str] = dataclasses.field(default_factory=dict)   # tool versions
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)  # stage, step, source file
    engines: list[EngineSpec] = dataclasses.field(default_factory=list)
    # Precision-baked ONNX files for strongly typed TensorRT builds:
    # {"fp16": {"file": "model.fp16.onnx", "sha256": "..."}, "int8": {..., "calibration": {...}}}
    variants: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    parity: dict[str, Any] = dataclasses.field(default_factory=dict)  # summary of report/parity.json
    # Graphs that take pixels and normalise inside (export/pixel_input.py), by name ("uint8-nhwc",
    # "deepstream"): {"file", "input": {name, dtype, layout, shape, ...}, "output", "pixel_agreement", ...}
    pixel_inputs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    export_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # export.config.ExportConfig, as given
    schema_version: int = SCHEMA_VERSION
    task: str = "semantic-segmentation"
    uda_adapt_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> Manifest:
        try:
            values = _upgrade(dict(data))
            values["input"] = InputSpec(**_tupled(values["input"]))
            values["output"] = OutputSpec(**values["output"])
            values["engines"] = [EngineSpec(**_tupled(e)) for e in values.get("engines", [])]
            values["classes"] = tuple(values["classes"])
            values["palette"] = tuple(tuple(int(c) for c in rgb) for rgb in values["palette"])
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in values.items() if k in known})
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{source} is not a valid uda-adapt model manifest ({type(exc).__name__}: {exc}); re-export the model") from exc


# Fields that describe files next to the ONNX rather than the ONNX itself; they stay out of
# its metadata_props (the ONNX cannot contain its own hash).
_BUNDLE_ONLY_FIELDS = ("onnx_sha256", "engines", "variants", "parity", "pixel_inputs")


def metadata_props(manifest: Manifest) -> dict[str, str]:
    """The manifest as ONNX `metadata_props`: one key per field, values JSON-encoded."""
    data = manifest.to_dict()
    return {key: json.dumps(value) for key, value in data.items() if key not in _BUNDLE_ONLY_FIELDS}


def manifest_from_metadata(props: dict[str, str], source: str = "ONNX metadata") -> Manifest:
    """Rebuild a manifest from `metadata_props` (e.g. ORT's `get_modelmeta().custom_metadata_map`)."""
    known = {f.name for f in dataclasses.fields(Manifest)}
    try:
        data = {key: json.loads(value) for key, value in props.items() if key in known}
    except json.JSONDecodeError as exc:
        raise UserError(f"{source} holds a value that is not JSON ({exc}); re-export the model") from exc
    return Manifest.from_dict(data, source=source)


def _upgrade(values: dict[str, Any]) -> dict[str, Any]:
    """A schema 1 manifest in the current layout: the size from `input.shape`, else `resize.size`."""
    if int(values.get("schema_version", 1)) >= 2:
        return values
    spec = dict(values["input"])
    shape = spec.pop("shape", None)
    resize = values.pop("resize", None) or {}
    if isinstance(shape, (list, tuple)) and len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
        spec["size"] = shape[2:]
    elif isinstance(resize.get("size"), (list, tuple)):
        spec["size"] = resize["size"]
    spec["resize"] = resize.get("mode", "stretch")
    return {**values, "input": spec, "schema_version": SCHEMA_VERSION}


def _tupled(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}


def write_manifest(path: str | os.PathLike, manifest: Manifest) -> None:
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2) + "\n")


def read_manifest(path: str | os.PathLike) -> Manifest:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"model manifest {file} does not exist; export the model with `uda-adapt export`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read model manifest {file}: {exc}") from exc
    return Manifest.from_dict(data, source=str(file))


def manifest_for(model_path: str | os.PathLike) -> Path:
    """Where the manifest of an exported `.onnx` or `.engine` lives: `model.json` beside it."""
    return Path(model_path).with_name(MANIFEST_NAME)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
