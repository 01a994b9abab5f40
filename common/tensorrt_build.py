"""ONNX -> TensorRT engine with the Python API, on TensorRT 10.x (JetPack 6) and 11.x.

Here in common/ (torch-free, TensorRT imported lazily) because three callers build engines:
`uda-adapt export --trt`, `uda-adapt build BUNDLE` and `uda-adapt run BUNDLE` on its first run
on a device. Version differences are found by asking the module what it has (`hasattr`),
never by parsing version numbers alone:
- networks are strongly typed (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`, 10.0+): the
  precision comes from the ONNX (model.fp16.onnx, model.int8.onnx with Q/DQ);
- `EXPLICIT_BATCH` is never passed (0 is explicit batch on 10.x; the flag is gone in 11);
- the legacy FP16/INT8 builder flags and the entropy calibrator are used only with
  `--legacy-precision-flags`, and only where `BuilderFlag.FP16` exists (10.x).
The engine file is a plain TensorRT plan (no header) named for the device
(`common.engines.engine_file_name`); the manifest records how it was built.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from uda_adapt.common.atomic import atomic_write_bytes
from uda_adapt.common.cuda import open_cuda
from uda_adapt.common.engines import Device, device_model_name, engine_file_name
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import EngineSpec, InputSpec

ENTROPY_CALIBRATOR = "IInt8EntropyCalibrator2"
INSTALL_TENSORRT = ("on Jetson it comes with JetPack (python3-libnvinfer, seen from a venv made with "
                    "--system-site-packages); on x86 `pip install tensorrt-cu12 cuda-python`")


class TensorRTUnavailable(UserError):
    """TensorRT or a CUDA GPU is missing here; the ONNX bundle is still usable elsewhere."""


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    name: str                               # the CUDA device name ("Orin" on every Jetson Orin)
    compute_capability: tuple[int, int]
    device: int = 0
    model: str = ""                         # the board or GPU model (common.engines.device_model_name)

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    def for_tensorrt(self, trt_version: str, dla_cores: int = 0) -> Device:
        return Device(trt_version, self.cc, self.model or self.name, dla_cores)


class CalibrationSource(Protocol):
    """What the legacy calibrator reads (export.precision.ImageCalibrationReader): (1, 3, H, W) batches."""

    input_name: str
    files: list[Path]
    spec: InputSpec
    size: tuple[int, int]

    def get_next(self) -> dict[str, np.ndarray] | None: ...


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but its CUDA libraries are not
        raise TensorRTUnavailable(f"TensorRT is not installed (import tensorrt failed: {exc}); {INSTALL_TENSORRT}") from exc
    return tensorrt


def detect_gpu(device: int = 0) -> GpuInfo:
    """The CUDA device the engine is built for, through cuda-python or torch (`common.cuda`)."""
    try:
        cuda = open_cuda(device)
    except UserError as exc:
        raise TensorRTUnavailable(str(exc)) from exc
    try:
        major, minor = (int(v) for v in cuda.compute_capability().split("."))
        name = cuda.name()
        return GpuInfo(name, (major, minor), device, device_model_name(name))
    finally:
        cuda.close()


def dla_cores(trt: ModuleType) -> int:
    """DLA cores TensorRT sees here (IRuntime.num_DLA_cores): 2 on Orin NX/AGX, 0 elsewhere."""
    try:
        return int(getattr(trt.Runtime(trt.Logger(trt.Logger.WARNING)), "num_DLA_cores", 0))
    except (AttributeError, TypeError, RuntimeError):
        return 0


def build_engine(trt: ModuleType, gpu: GpuInfo, onnx_path: Path, out_dir: Path, *, precision: str,
                 input_name: str, shapes: dict[str, tuple[int, ...]] | None = None, workspace_gib: float = 4.0,
                 timing_cache: Path | None = None, legacy_precision_flags: bool = False,
                 calibration_reader: CalibrationSource | None = None, calibration: dict[str, Any] | None = None,
                 dla_core: int | None = None) -> EngineSpec:
    """Build an engine from `onnx_path` into `out_dir`; returns its manifest entry.

    Strongly typed: `onnx_path` must already carry the precision (model.<precision>.onnx), and
    `calibration` is the record of how its Q/DQ scales were found. With `legacy_precision_flags`
    (TensorRT 10.x only) it is the fp32 ONNX, precision comes from builder flags, and int8
    calibrates here with `calibration_reader`; the entry then records that calibration.
    With `dla_core` (Orin NX/AGX, TensorRT 10.x) layers run on that DLA core, and those the
    DLA cannot run fall back to the GPU.
    """
    version = str(trt.__version__)
    if int(version.split(".")[0]) < 10 or not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise UserError(f"TensorRT {version} is too old; uda-adapt builds engines with TensorRT 10 or newer")
    if legacy_precision_flags and not hasattr(trt.BuilderFlag, "FP16"):
        raise UserError(f"TensorRT {version} has no FP16/INT8 builder flags (removed in 11); drop "
                        "--legacy-precision-flags: the precision comes from the exported ONNX")
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:  # "factory function returned nullptr" without a usable GPU
        raise TensorRTUnavailable(f"TensorRT cannot use the GPU ({exc})") from exc
    device = gpu.for_tensorrt(version, int(getattr(builder, "num_DLA_cores", 0)))
    flags = 0 if legacy_precision_flags else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT {version} cannot parse {onnx_path.name}: {errors[:400]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    previous = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(previous)
    # set_timing_cache returns False (and builds without the cache) when the file came from
    # another TensorRT or GPU; the default cache is named for the device, so this is a --timing-cache.
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise UserError(f"the timing cache {timing_cache} was written by another TensorRT version or GPU; delete it "
                        "or pass --timing-cache with a new path")
    if dla_core is not None:
        _use_dla(trt, device, config, dla_core, precision)
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])
        config.add_optimization_profile(profile)
    record = dict(calibration or {}) if precision == "int8" and not legacy_precision_flags else {}
    if legacy_precision_flags and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 too: layers TensorRT cannot quantize fall back to fp16
    if legacy_precision_flags and precision == "int8":
        record = _calibrate_with_entropy(trt, builder, config, calibration_reader, out_dir, version, input_name,
                                         shapes, gpu.device)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT {version} failed to build an engine from {onnx_path.name}; see its log above")
    engine_file = out_dir / engine_file_name(device, precision, dla_core)
    atomic_write_bytes(engine_file, bytes(plan))
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    if legacy_precision_flags:
        record["legacy_precision_flags"] = True
    return EngineSpec(
        file=engine_file.name, precision=precision, trt_version=version, gpu_name=gpu.name,
        compute_capability=gpu.cc,
        min_shape=shapes["min"] if shapes else None, opt_shape=shapes["opt"] if shapes else None,
        max_shape=shapes["max"] if shapes else None,
        calibration=record or None, dla_core=dla_core,
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device_model=device.model,
    )


def _use_dla(trt: ModuleType, device: Device, config: Any, core: int, precision: str) -> None:
    """Default every layer to DLA `core`, with GPU fallback for layers the DLA cannot run."""
    version = str(trt.__version__)
    if not hasattr(trt, "DeviceType") or not hasattr(trt.DeviceType, "DLA") or int(version.split(".")[0]) >= 11:
        raise UserError(f"TensorRT {version} builds no DLA engines on Jetson (10.x, as in JetPack 6, does); "
                        "drop --dla-core")
    cores = device.dla_cores
    if core >= cores:
        raise UserError(f"--dla-core {core}: this device has {cores} DLA core{'s' if cores != 1 else ''} "
                        f"(Orin NX and AGX have 2, Orin Nano none); drop --dla-core or use 0..{cores - 1}")
    if precision == "fp32":
        raise UserError("the DLA runs fp16 or int8 only; add --precision fp16 (or int8 with --calib-data)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _calibrate_with_entropy(trt: ModuleType, builder: Any, config: Any, reader: CalibrationSource | None,
                            out_dir: Path, version: str, input_name: str,
                            shapes: dict[str, tuple[int, ...]] | None, device: int) -> dict[str, Any]:
    """Legacy int8: the INT8 flag, an entropy calibrator and, for dynamic shapes, a fixed calibration profile.

    TensorRT calibrates at the calibration profile's OPT shape, and the calibrator hands it
    one (1, 3, H, W) image at a time: with the build profile (whose OPT may be 2x3x...) TensorRT
    would read past the end of the batch buffer. So calibration gets its own profile, pinned
    to (1, 3, H, W). Returns the engine's calibration record: what actually ran.
    """
    if reader is None:
        raise UserError("--precision int8 needs calibration images: add --calib-data DIR")
    shape = (1, 3, *(int(d) for d in reader.size))
    if shapes is not None:
        low, high = shapes["min"], shapes["max"]
        if any(s < lo or s > hi for s, lo, hi in zip(shape, low, high)):
            raise UserError(f"calibration images are fed at {'x'.join(map(str, shape))}, outside the dynamic range "
                            f"{'x'.join(map(str, low))} .. {'x'.join(map(str, high))}; export with a range that holds --size")
        calibration_profile = builder.create_optimization_profile()
        calibration_profile.set_shape(input_name, min=shape, opt=shape, max=shape)
        config.set_calibration_profile(calibration_profile)
    config.set_flag(trt.BuilderFlag.INT8)
    cache_path = out_dir / calibration_cache_name(reader, version, shape)
    config.int8_calibrator = _entropy_calibrator(trt, reader, cache_path, shape, device)
    return {"calibrator": ENTROPY_CALIBRATOR, "n_images": len(reader.files), "batch_shape": list(shape),
            "calib_data": _common_folder(reader.files), "cache": cache_path.name}


def calibration_cache_name(reader: CalibrationSource, trt_version: str, shape: tuple[int, ...]) -> str:
    """calib.<key>.cache, the key a hash of what the scales depend on.

    The images (--calib-data and --calib-num pick them; a changed file changes its size or
    time), the input contract they are prepared with, the batch shape and the TensorRT
    version: a change to any of them calibrates again instead of reusing stale scales.
    """
    images = []
    for path in reader.files:
        stat = Path(path).stat()
        images.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    what = {"images": images, "input": dataclasses.asdict(reader.spec), "shape": list(shape), "tensorrt": trt_version}
    key = hashlib.sha256(json.dumps(what, sort_keys=True, default=list).encode()).hexdigest()[:16]
    return f"calib.{key}.cache"


def _common_folder(files: list[Path]) -> str:
    return os.path.commonpath([str(Path(f).resolve().parent) for f in files]) if files else ""


def _entropy_calibrator(trt: ModuleType, reader: CalibrationSource, cache_path: Path, shape: tuple[int, ...],
                        device: int = 0) -> Any:
    """A TensorRT 10.x IInt8EntropyCalibrator2 fed by `reader`, one (1, 3, H, W) image per batch.

    `get_batch` must return *device* pointers: each batch is copied into one device buffer
    through `common.cuda` (cuda-python, or torch's CUDA), so a CPU-only torch (JetPack's usual
    case) works too. The buffer holds exactly `shape`, the calibration profile's shape.
    """
    nbytes = int(np.prod(shape)) * np.dtype(np.float32).itemsize

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cuda: Any = None
            self.buffer = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            feed = reader.get_next()
            if feed is None:
                self.close()
                return None
            batch = np.ascontiguousarray(feed[reader.input_name], dtype=np.float32)
            if batch.shape != shape:   # TensorRT reads `nbytes` from the pointer, whatever we copied
                raise UserError(f"a calibration batch is {batch.shape}, the calibration profile {shape}; "
                                "report this with the export's model.json")
            if self.cuda is None:
                self.cuda = open_cuda(device)
                self.buffer = self.cuda.device_buffer(nbytes)
            self.cuda.use_on_this_thread()     # TensorRT may call back on its own thread
            self.cuda.upload(self.buffer, batch.view(np.uint8).reshape(-1))
            # TensorRT reads the buffer after this returns: the copy must have landed.
            self.cuda.synchronize()
            return [int(self.buffer)]

        def close(self) -> None:
            if self.cuda is not None:
                self.cuda.close()
                self.cuda = None

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def trtexec_command(onnx_file: str | os.PathLike, engine_file: str | os.PathLike, *, input_name: str,
                    shapes: dict[str, tuple[int, ...]] | None = None, workspace_gib: float = 4.0,
                    timing_cache: str | os.PathLike | None = None, dla_core: int | None = None) -> str:
    """The trtexec (TensorRT 10/11 syntax) line that builds the same engine on the device.

    Always from the precision-baked ONNX with --stronglyTyped: trtexec 11 has no --fp16/--int8,
    and on 10.x a legacy --int8 build without a calibrator would use made-up scales.
    """
    parts = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}", "--stronglyTyped",
             f"--memPoolSize=workspace:{int(round(workspace_gib * 1024))}M"]
    if shapes is not None:
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            parts.append(f"{flag}={input_name}:{'x'.join(str(d) for d in shapes[key])}")
    if timing_cache is not None:
        parts.append(f"--timingCacheFile={timing_cache}")
    if dla_core is not None:
        parts += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    return " ".join(parts)
