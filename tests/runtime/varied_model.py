"""A small network whose masks change with the picture, exported as the runtime sees it (model.onnx + model.json).

The runtime conftest's network keeps default BatchNorm statistics and paints almost every
pixel one class, so a backend that ignored its input would still "match" it. This one has
statistics measured on random images (as tests/export/conftest.py does): several classes
per frame, and different masks for different frames.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from uda_adapt.adapt.checkpoint import build_model, load_checkpoint
from uda_adapt.common.manifest import InputSpec, Manifest, OutputSpec, manifest_for, write_manifest
from uda_adapt.export.onnx_export import export_onnx
from tests.export.conftest import small_checkpoint

SIZE = (64, 128)


def export_varied_model(directory: Path, size: tuple[int, int] = SIZE) -> tuple[Path, Path]:
    """(model.onnx, the checkpoint it came from) in `directory`, with model.json beside the ONNX."""
    ckpt_path = small_checkpoint(directory / "small.pt")
    ckpt = load_checkpoint(ckpt_path)
    onnx_path = directory / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(build_model(ckpt), onnx_path, imgsz=size)
    manifest = Manifest(classes=ckpt.classes, palette=ckpt.palette,
                        input=InputSpec(mean=ckpt.mean, std=ckpt.std, size=size), output=OutputSpec(), model_name="small")
    write_manifest(manifest_for(onnx_path), manifest)
    return onnx_path, ckpt_path
