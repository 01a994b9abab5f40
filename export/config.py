"""`ExportConfig`: every choice an export makes, in one typed place, saved in `model.json`.

Torch-free, so the command line can offer the choices without importing the export stack.
Validated once, before any work: a bad value fails in a second, not after the export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import PRECISIONS  # noqa: F401  (the CLI's --precision choices, named here with the rest)

OUTPUT_KINDS = ("mask", "logits")
EXPORTERS = ("legacy", "dynamo")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
TRT_TARGETS = (10, 11)
# Layouts of `model.json`'s extra graph that takes pixels and normalises them itself (--pixel-input).
PIXEL_INPUTS = ("uint8-nchw", "uint8-nhwc")
DATA_KINDS = ("folder", "cityscapes", "gta5", "synthia")   # adapt.data.open_dataset's kinds (--data-kind)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    # --- the ONNX ---
    size: tuple[int, int] | None = None              # (H, W) export and parity size (the opt size when dynamic);
                                                     # None: the size the checkpoint evaluated at (`spec.training_size`)
    dynamic: bool = False                            # symbolic batch, height and width
    output: str = "mask"                             # mask: int32 ids, argmax in the graph; logits: float32
    opset: int = 17                                  # inside TensorRT 10's (9-20) and 11's ranges
    exporter: str = "legacy"                         # TorchScript exporter; dynamo has open shape issues
    simplify: bool = True                            # constant folding, kept only when the graph shrinks
    pixel_input: str | None = None                   # also model.<layout>.onnx: uint8 pixels in, normalisation inside
    deepstream: bool = False                         # also deepstream/: an nvinfer config (network-type 2) and its graph
    # --- precision ---
    precision: str = "fp32"
    calib_data: str | None = None                    # folder of target images; required for int8
    calib_num: int = 512                             # ModelOpt suggests ~500 calibration images
    calib_method: str = "minmax"
    # --- parity gate ---
    parity_data: str | None = None                   # None: the checkpoint's target dataset, if present
    parity_kind: str = "folder"
    parity_num: int = 20                             # val images compared
    # --- TensorRT ---
    trt: bool = False                                # also build an engine (needs TensorRT and a GPU)
    workspace_gib: float = 4.0                       # builder workspace pool; Orin Nano has 8 GB shared
    timing_cache: str | None = None                  # None: BUNDLE/timing.<trt>.<sm>.<device>.cache, one per device
    min_shape: tuple[int, ...] | None = None         # dynamic range; None: half / exact / twice `size`
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    legacy_precision_flags: bool = False             # TensorRT 10 FP16/INT8 builder flags instead of a baked ONNX
    trt_target: int | None = None                    # TensorRT major the static check targets; None: installed, else 10
    dla_core: int | None = None                      # AGX Orin / Orin NX (8GB: one core): this DLA core, GPU fallback on

    def __post_init__(self) -> None:
        if self.size is not None:
            size = tuple(int(v) for v in self.size)
            if len(size) != 2 or min(size) <= 0:
                raise UserError(f"--size takes a positive height and width like 512x1024; got {self.size}")
            object.__setattr__(self, "size", size)
        for name in ("calib_data", "parity_data", "timing_cache"):   # paths as text: the config goes into JSON
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        for name in ("min_shape", "opt_shape", "max_shape"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_shape(value, "--" + name.replace("_", "-")))
        _choice("--precision", self.precision, PRECISIONS)
        _choice("--output", self.output, OUTPUT_KINDS)
        _choice("--exporter", self.exporter, EXPORTERS)
        _choice("--calib-method", self.calib_method, CALIBRATION_METHODS)
        _choice("--data-kind", self.parity_kind, DATA_KINDS)
        if self.pixel_input is not None:
            _choice("--pixel-input", self.pixel_input, PIXEL_INPUTS)
        if self.deepstream and self.dynamic:
            raise UserError("--deepstream writes a fixed-size nvinfer config; drop --dynamic (or export twice)")
        if self.deepstream and self.precision == "int8":
            raise UserError("--deepstream builds fp32 or fp16 in nvinfer (its int8 needs its own calibration table); "
                            "export with --precision fp16 or fp32 for DeepStream")
        if self.trt_target is not None:
            _choice("--trt-target", self.trt_target, TRT_TARGETS)
        if self.calib_num < 1:
            raise UserError(f"--calib-num must be at least 1, got {self.calib_num}")
        if self.parity_num < 1:
            raise UserError(f"--parity-num must be at least 1, got {self.parity_num}")
        if self.workspace_gib <= 0:
            raise UserError(f"--workspace must be positive (GiB), got {self.workspace_gib}")
        if self.dla_core is not None and self.dla_core < 0:
            raise UserError(f"--dla-core must be 0 or more, got {self.dla_core}")
        if self.dla_core is not None and self.precision == "fp32":
            raise UserError("the DLA runs fp16 or int8 only; add --precision fp16 (or int8 with --calib-data)")

    def with_size(self, size: tuple[int, int]) -> ExportConfig:
        """The same choices at `size` (the checkpoint's, once it is known)."""
        return dataclasses.replace(self, size=size)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def parse_shape(text: str | Sequence[int], option: str) -> tuple[int, ...]:
    """`1x3x512x1024` (or a sequence of ints) -> (1, 3, 512, 1024), checked as an NCHW image shape."""
    try:
        dims = tuple(int(v) for v in (text.lower().split("x") if isinstance(text, str) else text))
    except ValueError:
        dims = ()
    if len(dims) != 4 or dims[1] != 3 or any(d <= 0 for d in dims):
        raise UserError(f"{option} {text!r} is not an image shape like 1x3x512x1024 (batch x 3 x height x width)")
    return dims


def _choice(option: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        raise UserError(f"unknown {option} {value!r}; valid: {', '.join(map(str, valid))}")
