"""`uda-adapt build BUNDLE`: a TensorRT engine from an export bundle, on the device.

No checkpoint and no torch: the bundle's ONNX (the precision-baked variant for strongly
typed builds) and its manifest are all a build needs. Each engine is named for its TensorRT
version, GPU, precision and DLA core, so engines for several devices sit side by side in
one bundle, each with its entry in model.json; `uda-adapt run BUNDLE` picks the one that
matches the device it runs on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from common.engines import engine_file_name
from common.errors import UserError
from common.manifest import MANIFEST_NAME, EngineSpec, Manifest, read_manifest, sha256_file, write_manifest
from export.config import PRECISIONS
from export.tensorrt_build import build_engine, detect_gpu, import_tensorrt


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    precision: str | None = None          # None: the bundle's baked variant (int8, else fp16), else fp32
    dla_core: int | None = None           # Orin NX/AGX DLA core, GPU fallback on (TensorRT 10.x)
    workspace_gib: float = 4.0            # builder workspace pool
    timing_cache: str | None = None       # None: BUNDLE/timing.cache
    legacy_precision_flags: bool = False  # TensorRT 10.x FP16/INT8 flags on the fp32 ONNX
    calib_data: str | None = None         # legacy int8 only: target images for the entropy calibrator
    calib_num: int = 512
    device: int = 0                       # GPU index

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise UserError(f"unknown --precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.workspace_gib <= 0:
            raise UserError(f"--workspace must be positive (GiB), got {self.workspace_gib}")


def build_from_bundle(bundle: str | Path, config: BuildConfig = BuildConfig(),
                      log: Callable[[str], None] | None = None) -> EngineSpec:
    """Build an engine for this device into `bundle` and record it in its model.json."""
    log = log or (lambda message: None)
    folder = Path(bundle)
    manifest = read_manifest(folder / MANIFEST_NAME)
    precision = config.precision or next((p for p in ("int8", "fp16") if p in manifest.variants), "fp32")
    onnx_path = _onnx_for(folder, manifest, precision, config.legacy_precision_flags)
    reader = None
    if config.legacy_precision_flags and precision == "int8":
        from export.precision import ImageCalibrationReader, calibration_files

        reader = ImageCalibrationReader(calibration_files(config.calib_data, config.calib_num), manifest.input)
    shapes = ({key: tuple(int(d) for d in value) for key, value in manifest.dynamic_shapes.items()}
              if manifest.dynamic and manifest.dynamic_shapes else None)
    trt, gpu = import_tensorrt(), detect_gpu(config.device)
    name = engine_file_name(str(trt.__version__), gpu.compute_capability, precision, config.dla_core)
    log(f"building {name} from {onnx_path.name} with TensorRT {trt.__version__} for {gpu.name} (sm{gpu.cc})")
    spec = build_engine(
        trt, gpu, onnx_path, folder, precision=precision, input_name=manifest.input.name, shapes=shapes,
        workspace_gib=config.workspace_gib,
        timing_cache=Path(config.timing_cache) if config.timing_cache else folder / "timing.cache",
        legacy_precision_flags=config.legacy_precision_flags, calibration_reader=reader,
        calibration=manifest.variants.get(precision, {}).get("calibration"), dla_core=config.dla_core)
    # Engines for other devices stay; one built here again replaces its own entry.
    manifest.engines = [e for e in manifest.engines if e.file != spec.file] + [spec]
    write_manifest(folder / MANIFEST_NAME, manifest)
    return spec


def _onnx_for(folder: Path, manifest: Manifest, precision: str, legacy_flags: bool) -> Path:
    """The ONNX a build reads, checked against the hash the export recorded."""
    if legacy_flags or precision == "fp32":
        path, expected = folder / manifest.onnx_file, manifest.onnx_sha256
    elif precision in manifest.variants:
        variant = manifest.variants[precision]
        path, expected = folder / variant["file"], variant.get("sha256", "")
    else:
        raise UserError(f"{folder} has no {precision} ONNX (it has {', '.join(['fp32', *manifest.variants])}); export "
                        f"with --precision {precision}, or on TensorRT 10 add --legacy-precision-flags")
    if not path.is_file():
        raise UserError(f"{path} is missing from the bundle; copy the whole export directory to the device")
    if expected and sha256_file(path) != expected:
        raise UserError(f"{path.name} does not match the hash in {MANIFEST_NAME} (changed or damaged in transit); "
                        "copy the export directory again")
    return path
