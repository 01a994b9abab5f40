"""ONNX -> TensorRT engine with the Python API, on TensorRT 10.x (JetPack 6) and 11.x.

Here in common/ (torch-free, TensorRT imported lazily) because three callers build engines:
`uda-adapt export --trt`, `uda-adapt build BUNDLE` and `uda-adapt run BUNDLE` on its first run
on a device. Version differences are found by asking the module what it has (`hasattr`),
never by parsing version numbers alone:
- networks are strongly typed (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`, 10.0+): the
  precision comes from the ONNX (model.fp16.onnx, model.int8.onnx with Q/DQ);
- `EXPLICIT_BATCH` is never passed (0 is explicit batch on 10.x; the flag is gone in 11);
- where `BuilderFlag.FP16` exists (10.x) three builds are weakly typed instead (`build_plan`):
  `--legacy-precision-flags` (the fp32 ONNX, the entropy calibrator for int8), int8 (the Q/DQ
  ONNX with FP16 too, so unquantized layers run in fp16, not the fp32 strong typing keeps) and
  DLA builds (strongly typed DLA is documented only from TensorRT 11). Weakly typed fp16 builds
  pin the layers `export.precision` keeps in fp32 (Resize, ArgMax's TopK, Softmax) to fp32.
The engine file is a plain TensorRT plan (no header) named for the device
(`common.engines.engine_file_name`); the manifest records how it was built (`EngineSpec.build`).
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


DLA_BOARDS = "AGX Orin and Orin NX 16GB have 2, Orin NX 8GB 1, Orin Nano none"
# Layer types kept in fp32 in a weakly typed fp16 build: what export.precision.FP32_OPS keeps in
# the fp16 ONNX (the ONNX parser imports ArgMax as a TopK layer with k=1).
FP32_LAYER_TYPES = ("RESIZE", "TOPK", "SOFTMAX")


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """How TensorRT builds one engine: the network's typing, the ONNX it reads, the builder flags."""

    strongly_typed: bool
    onnx: str                          # "fp32" (model.onnx) or the precision-baked variant it reads
    flags: tuple[str, ...] = ()        # BuilderFlag names (weakly typed builds only)
    why: str = ""

    @property
    def keeps_fp32_layers(self) -> bool:
        return "FP16" in self.flags

    def record(self) -> dict[str, Any]:
        """What model.json keeps of it (`EngineSpec.build`)."""
        return {"typing": "strong" if self.strongly_typed else "weak", "onnx": self.onnx, "flags": list(self.flags),
                "fp32_layers": list(FP32_LAYER_TYPES) if self.keeps_fp32_layers else [], "why": self.why}


def build_plan(trt: ModuleType, precision: str, *, legacy_precision_flags: bool = False,
               dla_core: int | None = None) -> BuildPlan:
    """Which ONNX a build reads and how it is typed, for this TensorRT (the flags exist on 10.x only)."""
    weak_flags_here = hasattr(trt.BuilderFlag, "FP16")
    reduced = ("FP16",) if precision in ("fp16", "int8") else ()
    int8 = ("INT8",) if precision == "int8" else ()
    if legacy_precision_flags:
        return BuildPlan(False, "fp32", reduced + int8 + (("OBEY_PRECISION_CONSTRAINTS",) if reduced else ()),
                         "--legacy-precision-flags: precision from builder flags on the fp32 ONNX")
    if dla_core is not None and weak_flags_here:
        # TensorRT 10.x documents DLA for weakly typed networks only; trtexec --useDLACore sets
        # kPREFER_PRECISION_CONSTRAINTS and, unless --int8, kFP16 itself (NVIDIA/TensorRT v10.3.0
        # samples/common/sampleEngines.cpp, setupNetworkAndConfig, lines 1123-1146). int8 reads
        # the Q/DQ ONNX, whose scales need no calibrator.
        return BuildPlan(False, "int8" if precision == "int8" else "fp32",
                         ("FP16",) + int8 + ("PREFER_PRECISION_CONSTRAINTS",),
                         "DLA on TensorRT 10.x: weakly typed with the FP16 flag, as trtexec --useDLACore")
    if precision == "int8" and weak_flags_here:
        return BuildPlan(False, "int8", ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"),
                         "int8 on TensorRT 10.x: the Q/DQ ONNX weakly typed with FP16, so layers left "
                         "unquantized run in fp16 rather than fp32")
    why = "precision from the ONNX" + ("; layers left unquantized run in fp32" if precision == "int8" else "")
    return BuildPlan(True, precision, (), why)


def dla_cores(trt: ModuleType) -> int:
    """DLA cores TensorRT sees here (IRuntime.num_DLA_cores): see DLA_BOARDS; 0 on discrete GPUs."""
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

    `onnx_path` is the file `build_plan(...).onnx` names: the precision-baked variant
    (model.<precision>.onnx; `calibration` records how its Q/DQ scales were found), or the fp32
    ONNX for weakly typed builds. With `legacy_precision_flags` (TensorRT 10.x only) precision
    comes from builder flags, and int8 calibrates here with `calibration_reader`; the entry then
    records that calibration. With `dla_core` (AGX Orin, Orin NX) layers run on that DLA core,
    and those the DLA cannot run fall back to the GPU.
    """
    version = str(trt.__version__)
    if int(version.split(".")[0]) < 10 or not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise UserError(f"TensorRT {version} is too old; uda-adapt builds engines with TensorRT 10 or newer")
    if legacy_precision_flags and not hasattr(trt.BuilderFlag, "FP16"):
        raise UserError(f"TensorRT {version} has no FP16/INT8 builder flags (removed in 11); drop "
                        "--legacy-precision-flags: the precision comes from the exported ONNX")
    plan_ = build_plan(trt, precision, legacy_precision_flags=legacy_precision_flags, dla_core=dla_core)
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:  # "factory function returned nullptr" without a usable GPU
        raise TensorRTUnavailable(f"TensorRT cannot use the GPU ({exc})") from exc
    device = gpu.for_tensorrt(version, int(getattr(builder, "num_DLA_cores", 0)))
    if dla_core is not None:
        _check_dla(trt, device, dla_core, precision)
        shapes = _pinned_for_dla(shapes)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan_.strongly_typed else 0
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
        _use_dla(trt, config, dla_core)
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])
        config.add_optimization_profile(profile)
    for flag in plan_.flags:
        # INT8 on the fp32 ONNX calibrates; on the Q/DQ ONNX the scales are in the graph.
        if flag != "INT8" or plan_.onnx != "fp32":
            config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan_.keeps_fp32_layers:
        _keep_fp32_layers(trt, network)
    record = dict(calibration or {}) if precision == "int8" and plan_.onnx == "int8" else {}
    calibrator = None
    if plan_.onnx == "fp32" and precision == "int8":
        record, calibrator = _calibrate_with_entropy(trt, builder, config, calibration_reader, out_dir, version,
                                                     input_name, shapes, gpu.device)

    plan = builder.build_serialized_network(network, config)
    if calibrator is not None:
        calibrator.raise_if_failed(out_dir / record["cache"])
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
        device_model=device.model, build={**plan_.record(), "onnx_file": onnx_path.name},
    )


def _keep_fp32_layers(trt: ModuleType, network: Any) -> int:
    """Pin Resize/TopK/Softmax to fp32 in a weakly typed network built with FP16; returns how many.

    With the FP16 flag TensorRT may run any layer in half precision; the upsampled logits and
    their argmax are exactly where half-precision ties flip pixels (export.precision.FP32_OPS).
    The constraint holds because the plan also sets OBEY_/PREFER_PRECISION_CONSTRAINTS.
    """
    wanted = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in wanted:
            layer.precision = trt.float32
            layer.set_output_type(0, trt.float32)      # output 0 is the values (TopK's 1 is int32 indices)
            pinned += 1
    return pinned


def _pinned_for_dla(shapes: dict[str, tuple[int, ...]] | None) -> dict[str, tuple[int, ...]] | None:
    """The profile a DLA build can use: min = opt = max = opt.

    The DLA runs static shapes only; with a range every layer would quietly fall back to the
    GPU (TensorRT developer guide, "Working with DLA": dynamic dimensions need min = opt = max).
    """
    if shapes is None:
        return None
    return {key: tuple(shapes["opt"]) for key in ("min", "opt", "max")}


def _check_dla(trt: ModuleType, device: Device, core: int, precision: str) -> None:
    """Refuse a DLA build this TensorRT or device cannot make; asked of TensorRT, never read from its version."""
    if not hasattr(trt, "DeviceType") or not hasattr(trt.DeviceType, "DLA"):
        raise UserError(f"TensorRT {trt.__version__} has no DLA device type; drop --dla-core")
    cores = device.dla_cores
    if core >= cores:
        choice = f"use 0..{cores - 1}" if cores else "drop --dla-core"
        raise UserError(f"--dla-core {core}: this device has {cores} DLA core{'s' if cores != 1 else ''} "
                        f"({DLA_BOARDS}); {choice}")
    if precision == "fp32":
        raise UserError("the DLA runs fp16 or int8 only; add --precision fp16 (or int8 with --calib-data)")


def _use_dla(trt: ModuleType, config: Any, core: int) -> None:
    """Default every layer to DLA `core`, with GPU fallback for layers the DLA cannot run."""
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _calibrate_with_entropy(trt: ModuleType, builder: Any, config: Any, reader: CalibrationSource | None,
                            out_dir: Path, version: str, input_name: str,
                            shapes: dict[str, tuple[int, ...]] | None, device: int) -> tuple[dict[str, Any], Any]:
    """Legacy int8: the INT8 flag, an entropy calibrator and, for dynamic shapes, a fixed calibration profile.

    TensorRT calibrates at the calibration profile's OPT shape, and the calibrator hands it
    one (1, 3, H, W) image at a time: with the build profile (whose OPT may be 2x3x...) TensorRT
    would read past the end of the batch buffer. So calibration gets its own profile, pinned
    to (1, 3, H, W). Returns the engine's calibration record (what actually ran) and the
    calibrator, whose `raise_if_failed` must be called after the build.
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
    calibrator = _entropy_calibrator(trt, reader, cache_path, shape, device)
    config.int8_calibrator = calibrator
    record = {"calibrator": ENTROPY_CALIBRATOR, "n_images": len(reader.files), "batch_shape": list(shape),
              "calib_data": _common_folder(reader.files), "cache": cache_path.name}
    return record, calibrator


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
        """TensorRT calls these methods back from C++ during `build_serialized_network`.

        TensorRT's Python trampoline catches any exception raised in them, prints it and goes on
        (NVIDIA/TensorRT python/src/infer/pyInt8.cpp, pyCalibratorTrampoline: `getBatch` returns
        false, read "no more batches"; `writeCalibrationCache` returns). One unreadable image
        would end calibration early and leave a cache of the images before it, reused by every
        later build. So nothing escapes: the first error is kept, calibration ends, no cache is
        written, and `raise_if_failed` raises it after the build.
        """

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cuda: Any = None
            self.buffer = 0
            self.batches = 0                      # images handed to TensorRT so far
            self.error: BaseException | None = None

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.error is not None:
                return None
            try:
                pointer = self._next_batch()
            except Exception as exc:  # noqa: BLE001  (kept and raised after the build; see the class docstring)
                self.error = exc
                pointer = None
            if pointer is None:
                self.close()
                return None
            self.batches += 1
            return [pointer]

        def _next_batch(self) -> int | None:
            feed = reader.get_next()
            if feed is None:
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
            return int(self.buffer)

        def close(self) -> None:
            if self.cuda is not None:
                self.cuda.close()
                self.cuda = None

        def read_calibration_cache(self) -> bytes | None:
            try:
                return cache_path.read_bytes() if cache_path.is_file() else None
            except OSError as exc:
                self.error = self.error or exc
                return None

        def write_calibration_cache(self, cache: Any) -> None:
            if self.error is not None:
                return                          # scales from part of the images: never kept
            try:
                atomic_write_bytes(cache_path, bytes(cache))
            except OSError as exc:
                self.error = exc

        def raise_if_failed(self, cache: Path) -> None:
            """After the build: the kept error as a UserError, with no calibration cache left behind."""
            self.close()
            if self.error is None:
                return
            cache.unlink(missing_ok=True)
            where = ""
            if self.batches < len(reader.files):
                where = f" at image {self.batches + 1} of {len(reader.files)} ({reader.files[self.batches]})"
            raise UserError(f"int8 calibration failed{where}: {self.error}; fix or remove that image from --calib-data "
                            "and build again (no engine and no calibration cache were kept)") from self.error

    return EntropyCalibrator()


def trtexec_command(onnx_file: str | os.PathLike, engine_file: str | os.PathLike, *, input_name: str,
                    shapes: dict[str, tuple[int, ...]] | None = None, workspace_gib: float = 4.0,
                    timing_cache: str | os.PathLike | None = None, dla_core: int | None = None) -> str:
    """The trtexec (TensorRT 10/11 syntax) line that builds the same engine on the device.

    From the precision-baked ONNX with --stronglyTyped (trtexec 11 has no --fp16/--int8, and on
    10.x a legacy --int8 build without a calibrator would use made-up scales), except for the
    DLA: TensorRT 10.x documents it for weakly typed networks, and --useDLACore sets FP16 itself.
    """
    typing = [] if dla_core is not None else ["--stronglyTyped"]
    parts = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}", *typing,
             f"--memPoolSize=workspace:{int(round(workspace_gib * 1024))}M"]
    if shapes is not None:
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            parts.append(f"{flag}={input_name}:{'x'.join(str(d) for d in shapes[key])}")
    if timing_cache is not None:
        parts.append(f"--timingCacheFile={timing_cache}")
    if dla_core is not None:
        parts += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    return " ".join(parts)
