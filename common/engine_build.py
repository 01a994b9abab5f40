"""A TensorRT engine for this device from an export bundle: `uda-adapt build BUNDLE`, and `run BUNDLE`'s first run.

No checkpoint and no torch: the bundle's ONNX (the precision-baked variant for strongly
typed builds) and its manifest are all a build needs. Each engine is named for its TensorRT
version, GPU, board, precision and DLA core, so engines for several devices sit side by side
in one bundle, each with its entry in model.json; `uda-adapt run BUNDLE` picks the one that
matches the device it runs on. An engine built elsewhere (trtexec) is registered the same way
(`register_engine`), after TensorRT here has loaded it.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from pathlib import Path

from uda_adapt.common.atomic import atomic_write_bytes
from uda_adapt.common.engines import engine_file_name, timing_cache_name
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import (
    MANIFEST_NAME,
    PRECISIONS,
    EngineSpec,
    Manifest,
    read_manifest,
    sha256_file,
    write_manifest,
)
from uda_adapt.common.tensorrt_build import (
    DLA_BOARDS,
    build_engine,
    build_plan,
    detect_gpu,
    dla_cores,
    import_tensorrt,
)
from uda_adapt.common.trt_calibration import CalibrationSource

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    precision: str | None = None          # None: the bundle's baked variant (int8, else fp16), else fp32
    dla_core: int | None = None           # a DLA core (AGX Orin, Orin NX), GPU fallback on
    workspace_gib: float = 4.0            # builder workspace pool
    timing_cache: str | None = None       # None: BUNDLE/timing.trt<ver>.sm<cc>.<device>.cache
    legacy_precision_flags: bool = False  # TensorRT 10.x FP16/INT8 flags on the fp32 ONNX
    calib_data: str | None = None         # legacy int8 only: target images for the entropy calibrator
    calib_num: int = 512
    device: int = 0                       # GPU index

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in PRECISIONS:
            raise UserError(f"unknown --precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.workspace_gib <= 0:
            raise UserError(f"--workspace must be positive (GiB), got {self.workspace_gib}")
        if self.dla_core is not None and self.dla_core < 0:
            raise UserError(f"--dla-core must be 0 or more, got {self.dla_core}")


def default_precision(manifest: Manifest) -> str:
    """The bundle's precision-baked variant (int8, else fp16), else fp32."""
    return next((p for p in ("int8", "fp16") if p in manifest.variants), "fp32")


def build_from_bundle(bundle: str | Path, config: BuildConfig = BuildConfig(), log: Log | None = None,
                      calibration_reader: CalibrationSource | None = None) -> EngineSpec:
    """Build an engine for this device into `bundle` and record it in its model.json.

    `calibration_reader` feeds the legacy int8 calibrator (`--legacy-precision-flags`), which
    reads images; `export.build` makes it from `config.calib_data`.
    """
    log = log or (lambda message: None)
    folder = Path(bundle)
    manifest = read_manifest(folder / MANIFEST_NAME)
    precision = config.precision or default_precision(manifest)
    shapes = ({key: tuple(int(d) for d in value) for key, value in manifest.dynamic_shapes.items()}
              if manifest.dynamic and manifest.dynamic_shapes else None)
    trt, gpu = import_tensorrt(), detect_gpu(config.device)
    plan = build_plan(trt, precision, legacy_precision_flags=config.legacy_precision_flags, dla_core=config.dla_core)
    onnx_path = _onnx_for(folder, manifest, plan.onnx)
    here = gpu.for_tensorrt(str(trt.__version__))
    name = engine_file_name(here, precision, config.dla_core)
    log(f"building {name} from {onnx_path.name} with TensorRT {trt.__version__} for {here.model} (sm{gpu.cc}), "
        f"{'strongly' if plan.strongly_typed else 'weakly'} typed: {plan.why}")
    spec = build_engine(
        trt, gpu, onnx_path, folder, precision=precision, input_name=manifest.input.name, shapes=shapes,
        workspace_gib=config.workspace_gib,
        timing_cache=Path(config.timing_cache) if config.timing_cache else folder / timing_cache_name(here),
        legacy_precision_flags=config.legacy_precision_flags, calibration_reader=calibration_reader,
        calibration=manifest.variants.get(precision, {}).get("calibration"), dla_core=config.dla_core)
    _record(folder, spec)
    return spec


def register_engine(bundle: str | Path, engine: str | Path, config: BuildConfig = BuildConfig(),
                    log: Log | None = None) -> EngineSpec:
    """Copy an engine built elsewhere (trtexec) into `bundle` under this device's name, and record it.

    TensorRT here must load it (a plan from another TensorRT or GPU does not), and its input
    must be the manifest's; its precision is `config.precision` or the bundle's baked variant
    (what the documented trtexec line builds from), its DLA core `config.dla_core`.
    """
    log = log or (lambda message: None)
    folder, source = Path(bundle), Path(engine)
    manifest = read_manifest(folder / MANIFEST_NAME)
    if not source.is_file():
        raise UserError(f"engine {source} does not exist; pass the file trtexec wrote (--saveEngine)")
    precision = config.precision or default_precision(manifest)
    trt, gpu = import_tensorrt(), detect_gpu(config.device)
    here = gpu.for_tensorrt(str(trt.__version__), dla_cores(trt))
    if config.dla_core is not None and config.dla_core >= here.dla_cores:
        raise UserError(f"--dla-core {config.dla_core}: this device has {here.dla_cores} DLA cores ({DLA_BOARDS}); "
                        "drop --dla-core")
    plan = source.read_bytes()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if config.dla_core is not None:
        runtime.DLA_core = config.dla_core          # a DLA plan loads on the core it is given (trtexec --useDLACore)
    loaded = runtime.deserialize_cuda_engine(plan)
    if loaded is None:
        raise UserError(f"TensorRT {trt.__version__} cannot load {source}: it was built with another TensorRT version "
                        f"or for another GPU; build one here with `uda-adapt build {folder}`")
    shapes = _input_shapes(trt, loaded, manifest.input.name, source)
    spec = EngineSpec(
        file=engine_file_name(here, precision, config.dla_core), precision=precision,
        trt_version=str(trt.__version__), gpu_name=gpu.name, compute_capability=gpu.cc,
        min_shape=shapes[0], opt_shape=shapes[1], max_shape=shapes[2],
        calibration=manifest.variants.get(precision, {}).get("calibration") if precision == "int8" else None,
        dla_core=config.dla_core, device_model=here.model, registered_from=source.name,
        built_at=datetime.datetime.fromtimestamp(source.stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    if source.resolve() != (folder / spec.file).resolve():
        atomic_write_bytes(folder / spec.file, plan)
    log(f"registered {source.name} as {spec.file} ({precision}, TensorRT {trt.__version__}, {here.model})")
    _record(folder, spec)
    return spec


def _record(folder: Path, spec: EngineSpec) -> None:
    """Add `spec` to the bundle's model.json; engines for other devices stay, this device's is replaced."""
    manifest = read_manifest(folder / MANIFEST_NAME)
    manifest.engines = [e for e in manifest.engines if e.file != spec.file] + [spec]
    write_manifest(folder / MANIFEST_NAME, manifest)


def _input_shapes(trt, engine, name: str, source: Path) -> tuple[tuple[int, ...] | None, ...]:
    """(min, opt, max) of a dynamic engine's input profile 0; Nones for a static engine. Checks the input's name."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    if inputs != [name]:
        raise UserError(f"{source} has inputs {inputs}, the bundle's model takes one named {name!r}; build it from "
                        "the bundle's ONNX")
    if -1 not in tuple(engine.get_tensor_shape(name)):
        return None, None, None
    return tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))


def _onnx_for(folder: Path, manifest: Manifest, source: str) -> Path:
    """The ONNX a build reads (`source`: "fp32" or a baked precision), checked against the export's hash."""
    if source == "fp32":
        path, expected = folder / manifest.onnx_file, manifest.onnx_sha256
    elif source in manifest.variants:
        variant = manifest.variants[source]
        path, expected = folder / variant["file"], variant.get("sha256", "")
    else:
        raise UserError(f"{folder} has no {source} ONNX (it has {', '.join(['fp32', *manifest.variants])}); export "
                        f"with --precision {source}, or on TensorRT 10 add --legacy-precision-flags")
    if not path.is_file():
        raise UserError(f"{path} is missing from the bundle; copy the whole export directory to the device")
    if expected and sha256_file(path) != expected:
        raise UserError(f"{path.name} does not match the hash in {MANIFEST_NAME} (changed or damaged in transit); "
                        "copy the export directory again")
    return path
