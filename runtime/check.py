"""`uda-adapt check BUNDLE`: does the TensorRT engine segment like the ONNX, on this device?

The export's parity gate compares ONNX Runtime with PyTorch on the CPU; it never sees an
engine. This check runs the engine and the fp32 ONNX (ONNX Runtime on its CUDA provider, else
the CPU: never its TensorRT provider, which would build a second engine, minutes on an Orin,
and share any TensorRT bug with the engine under test) on the pictures the
export kept (parity/*.png, at the export size), through the same input contract, and gates
the pixel agreement of the masks with the engine precision's tolerance from
`common.gates` (the shape of Polygraphy's framework comparison). The result is saved as
report/engine_check.<engine>.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from uda_adapt.common.atomic import atomic_write_text
from uda_adapt.common.errors import UserError
from uda_adapt.common.gates import GATES
from uda_adapt.common.manifest import MANIFEST_NAME, read_manifest
from uda_adapt.common.preprocess import prepare_input
from uda_adapt.runtime.backends import open_backend
from uda_adapt.runtime.backends.base import Backend
from uda_adapt.runtime.capture import Log, log_to_stderr

Opener = Callable[..., Backend]


def check_engine(bundle: str | Path, engine: str | Path | None = None, *, device: int = 0,
                 log: Log = log_to_stderr, opener: Opener = open_backend) -> dict[str, Any]:
    """Compare `engine` (default: the bundle's engine for this device) with the bundle's ONNX."""
    from uda_adapt.runtime.bundle import model_in_bundle

    folder = Path(bundle)
    manifest = read_manifest(folder / MANIFEST_NAME)
    # Never built here: `check` judges an engine that exists (`uda-adapt build` makes one).
    engine_path = Path(engine) if engine is not None else model_in_bundle(folder, "trt", device, log, build=False)
    spec = next((e for e in manifest.engines if e.file == engine_path.name), None)
    precision = spec.precision if spec is not None else "fp32"
    images = [folder / name for name in manifest.parity.get("images", [])] or sorted((folder / "parity").glob("*.png"))
    if not images:
        raise UserError(f"{folder} keeps no parity pictures (parity/*.png); re-export it with this version of uda-adapt")
    gate = GATES[precision]
    reference = opener(folder / manifest.onnx_file, "ort", device=device, log=log, providers=reference_providers())
    try:
        candidate = opener(engine_path, "trt", device=device, log=log)
        try:
            agree = total = 0
            per_image = []
            for path in images:
                frame = cv2.imread(str(path))
                if frame is None:
                    raise UserError(f"cannot read parity picture {path}; re-export the bundle")
                x = prepare_input(frame, manifest.input)
                want, got = reference.infer(x), candidate.infer(x.copy())
                if got.shape != want.shape:
                    raise UserError(f"{engine_path.name} outputs {got.shape} where the ONNX gives {want.shape}; rebuild it")
                same = int((got == want).sum())
                per_image.append({"image": path.name, "pixel_agreement": same / want.size})
                agree, total = agree + same, total + want.size
        finally:
            candidate.close()
    finally:
        reference.close()
    agreement = agree / total
    report = {
        "engine": engine_path.name, "precision": precision,
        "reference": f"{manifest.onnx_file} (ONNX Runtime on {', '.join(reference.providers)}, fp32)",
        "n_images": len(images), "pixel_agreement": agreement, "min_agreement": gate.min_agreement,
        "passed": agreement >= gate.min_agreement, "images": per_image,
    }
    (folder / "report").mkdir(exist_ok=True)
    atomic_write_text(folder / "report" / f"engine_check.{engine_path.stem}.json", json.dumps(report, indent=2) + "\n")
    log(f"check: {engine_path.name} agrees with {manifest.onnx_file} on {100 * agreement:.3f} % of pixels "
        f"({len(images)} pictures; {precision} gate {100 * gate.min_agreement:.1f} %)")
    if not report["passed"]:
        raise UserError(f"{engine_path.name} agrees with the ONNX on {100 * agreement:.2f} % of pixels, below the "
                        f"{precision} gate of {100 * gate.min_agreement:.1f} %; rebuild it (another --precision, or "
                        f"without --dla-core) and see report/engine_check.{engine_path.stem}.json")
    return report


def reference_providers() -> list[str]:
    """ONNX Runtime's CUDA provider where this onnxruntime has it, else the CPU; never TensorRT's."""
    import onnxruntime

    from uda_adapt.runtime.backends.onnxruntime_backend import CPU_EP, CUDA_EP

    return [CUDA_EP] if CUDA_EP in onnxruntime.get_available_providers() else [CPU_EP]
