"""What an export is: its size and dynamic range, its parity data, and its manifest.

Validated here once, before any work, so a bad option fails in a second rather than after the
export and the calibration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from uda_adapt.common import __version__
from uda_adapt.adapt.checkpoint import Checkpoint
from uda_adapt.adapt.classes import IGNORE_INDEX
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import InputSpec, Manifest, OutputSpec, sha256_file
from uda_adapt.common.preprocess import DEFAULT_INPUT_SIZE
from uda_adapt.export.config import ExportConfig, parse_shape
from uda_adapt.export.onnx_export import INPUT_NAME


def training_size(config: dict[str, Any]) -> tuple[tuple[int, int], str]:
    """The export size a checkpoint implies, and where it came from (for the log).

    The size the network saw whole target images at: `data.eval_size`, else the target's
    `base_size` (its training resize); else `DEFAULT_INPUT_SIZE`, Cityscapes at half resolution.
    """
    data = config.get("data") if isinstance(config, dict) else None
    data = data if isinstance(data, dict) else {}
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    for where, value in (("data.eval_size", data.get("eval_size")), ("data.target.base_size", target.get("base_size"))):
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
            return (int(value[0]), int(value[1])), f"the checkpoint's {where}"
    return DEFAULT_INPUT_SIZE, "the default (the checkpoint records no evaluation size)"


def resolve_shapes(config: ExportConfig) -> dict[str, tuple[int, ...]] | None:
    """The dynamic range {"min", "opt", "max"} (defaults: half, export and double size), or None when static."""
    given = {"--min-shape": config.min_shape, "--opt-shape": config.opt_shape, "--max-shape": config.max_shape}
    size = config.size
    if not config.dynamic:
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise UserError(f"{', '.join(named)} need --dynamic; a static export has the one shape --size")
        return None
    height, width = size
    defaults = {"--min-shape": (1, 3, max(1, height // 2), max(1, width // 2)), "--opt-shape": (1, 3, height, width),
                "--max-shape": (1, 3, 2 * height, 2 * width)}
    low, opt, high = (parse_shape(value, name) if value is not None else defaults[name] for name, value in given.items())
    if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
        raise UserError(f"the dynamic range must satisfy min <= opt <= max in every dimension; got "
                        f"{_text(low)} / {_text(opt)} / {_text(high)}")
    checked = (1, 3, height, width)
    if not all(a <= b <= c for a, b, c in zip(low, checked, high)):
        raise UserError(f"--size {height}x{width} (checked at batch 1) lies outside the dynamic range "
                        f"{_text(low)} .. {_text(high)}; widen the range or change --size")
    return {"min": low, "opt": opt, "max": high}


def parity_data_source(parity_data: str | os.PathLike | None, parity_kind: str,
                       config: dict[str, Any]) -> tuple[str | None, str, str, str]:
    """(root or None for synthetic, dataset kind, split, note) for the parity gate.

    `--data` wins; else the target dataset of the checkpoint's training config, if it is here.
    """
    if parity_data is not None:
        return str(parity_data), parity_kind, "val", ""
    data = config.get("data") if isinstance(config, dict) else None
    target = data.get("target") if isinstance(data, dict) else None
    if not isinstance(target, dict) or not target.get("root"):
        return None, parity_kind, "val", "the checkpoint names no target dataset; pass --data ROOT to check on real images"
    root = str(target["root"])
    if not Path(root).is_dir():
        return None, parity_kind, "val", (f"the checkpoint's target dataset {root} is not on this machine; "
                                          "pass --data ROOT to check on real images")
    return root, str(target.get("kind", "folder")), str(target.get("val_split", "val")), ""


def input_spec(ckpt: Checkpoint, size: tuple[int, int]) -> InputSpec:
    """The input contract of an export: the checkpoint's normalisation at the export size."""
    return InputSpec(name=INPUT_NAME, mean=ckpt.mean, std=ckpt.std, size=size)


def new_manifest(ckpt: Checkpoint, ckpt_path: Path, spec: InputSpec, shapes: dict[str, tuple[int, ...]] | None,
                 config: ExportConfig, nodes: tuple[int, int] | None) -> Manifest:
    """The manifest of a fresh export (hashes, variants, parity and engines are added later)."""
    dynamic = shapes is not None
    output, opset, exporter = config.output, config.opset, config.exporter
    simplified = "off" if nodes is None else (f"{nodes[0]} -> {nodes[1]} nodes" if nodes[1] < nodes[0] else "no gain")
    return Manifest(
        classes=ckpt.classes,
        palette=ckpt.palette,
        input=spec,
        output=OutputSpec(name=output, kind=output, dtype="int32" if output == "mask" else "float32", upsampled=True),
        ignore_index=IGNORE_INDEX,
        model_name=ckpt.model_name,
        opset=opset,
        dynamic=dynamic,
        dynamic_shapes={k: list(v) for k, v in shapes.items()} if dynamic else None,
        exporter={"exporter": exporter, "torch": torch.__version__, "onnx": onnx.__version__,
                  "onnxruntime": onnxruntime.__version__, "opset": str(opset), "simplified": simplified},
        checkpoint={"file": ckpt_path.name, "sha256": sha256_file(ckpt_path), "stage": ckpt.stage,
                    "step": ckpt.step, "config": ckpt.config},
        uda_adapt_version=__version__,
        export_config=config.to_dict(),
    )


def _text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)
