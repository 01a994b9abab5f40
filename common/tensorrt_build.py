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
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from uda_adapt.common.atomic import atomic_write_bytes
from uda_adapt.common.cuda import open_cuda
from uda_adapt.common.engines import Device, device_model_name, engine_file_name
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import EngineSpec
from uda_adapt.common.trt_calibration import CalibrationSource, calibrate_with_entropy

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
        record, calibrator = calibrate_with_entropy(trt, builder, config, calibration_reader, out_dir, version,
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
