"""ONNX -> TensorRT engine with the Python API, on TensorRT 10.x (JetPack 6) and 11.x.

`tensorrt` is imported lazily, only here. Version differences are found by asking the module
what it has (`hasattr`), never by parsing version numbers alone:
- networks are strongly typed (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`, 10.0+): the
  precision comes from the ONNX (model.fp16.onnx, model.int8.onnx with Q/DQ);
- `EXPLICIT_BATCH` is never passed (0 is explicit batch on 10.x; the flag is gone in 11);
- the legacy FP16/INT8 builder flags and the entropy calibrator are used only with
  `--legacy-precision-flags`, and only where `BuilderFlag.FP16` exists (10.x).
The engine file is a plain TensorRT plan (no header), named
`model.trt<major.minor.patch>.sm<cc>.<precision>.engine`; the manifest records how it was built.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from common.atomic import atomic_write_bytes
from common.errors import UserError
from common.manifest import EngineSpec, Manifest


class TensorRTUnavailable(UserError):
    """TensorRT or a CUDA GPU is missing here; the ONNX bundle is still usable elsewhere."""


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but its CUDA libraries are not
        raise TensorRTUnavailable(f"TensorRT is not installed (import tensorrt failed: {exc})") from exc
    return tensorrt


def detect_gpu() -> GpuInfo:
    """The first CUDA device, from torch or else cuda-python."""
    import torch

    if torch.cuda.is_available():
        return GpuInfo(torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0)))
    try:  # JetPack images often carry a CPU-only torch but cuda-python
        from cuda.bindings import runtime as cudart

        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
            return GpuInfo(name.strip("\x00"), (int(props.major), int(props.minor)))
    except ImportError:
        pass
    raise TensorRTUnavailable("no CUDA GPU is visible (torch.cuda.is_available() is False)")


def trt_version_key(version: str) -> str:
    """major.minor.patch: engines are tied to it, and the engine file name carries it."""
    return ".".join(str(version).split(".")[:3])


def engine_file_name(trt_version: str, gpu: GpuInfo, precision: str) -> str:
    major, minor = gpu.compute_capability
    return f"model.trt{trt_version_key(trt_version)}.sm{major}{minor}.{precision}.engine"


def build_engine(trt: ModuleType, gpu: GpuInfo, onnx_path: Path, out_dir: Path, *, precision: str,
                 input_name: str, shapes: dict[str, tuple[int, ...]] | None = None, workspace_gib: float = 4.0,
                 timing_cache: Path | None = None, legacy_precision_flags: bool = False,
                 calibration_reader: Any = None, calibration: dict[str, Any] | None = None) -> EngineSpec:
    """Build an engine from `onnx_path` into `out_dir`; returns its manifest entry.

    Strongly typed: `onnx_path` must already carry the precision (model.<precision>.onnx).
    With `legacy_precision_flags` (TensorRT 10.x only) it is the fp32 ONNX, and precision comes
    from builder flags; int8 then calibrates with `calibration_reader` (see precision.py).
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
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = None
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, min=shapes["min"], opt=shapes["opt"], max=shapes["max"])
        config.add_optimization_profile(profile)
    if legacy_precision_flags and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 too: layers TensorRT cannot quantize fall back to fp16
    if legacy_precision_flags and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _entropy_calibrator(trt, calibration_reader, out_dir / "calib.cache")
        if profile is not None:
            config.set_calibration_profile(profile)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT {version} failed to build an engine from {onnx_path.name}; see its log above")
    engine_file = out_dir / engine_file_name(version, gpu, precision)
    atomic_write_bytes(engine_file, bytes(plan))
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    record = dict(calibration or {})
    if legacy_precision_flags:
        record["legacy_precision_flags"] = True
    return EngineSpec(
        file=engine_file.name, precision=precision, trt_version=version, gpu_name=gpu.name,
        compute_capability=gpu.cc,
        min_shape=shapes["min"] if shapes else None, opt_shape=shapes["opt"] if shapes else None,
        max_shape=shapes["max"] if shapes else None,
        calibration=record or None,
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def _entropy_calibrator(trt: ModuleType, reader: Any, cache_path: Path) -> Any:
    """A TensorRT 10.x IInt8EntropyCalibrator2 fed by a CalibrationDataReader, batch size 1."""
    import torch

    if reader is None:
        raise UserError("--precision int8 needs calibration images: add --calib-data DIR")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batch: torch.Tensor | None = None

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            feed = reader.get_next()
            if feed is None:
                return None
            # Kept on self: TensorRT reads the device pointer after this returns.
            device = "cuda" if torch.cuda.is_available() else "cpu"
            self.batch = torch.from_numpy(feed[reader.input_name]).to(device)
            return [int(self.batch.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def trtexec_command(onnx_file: str | os.PathLike, engine_file: str | os.PathLike, *, input_name: str,
                    shapes: dict[str, tuple[int, ...]] | None = None, workspace_gib: float = 4.0,
                    timing_cache: str | os.PathLike | None = None) -> str:
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
    return " ".join(parts)


def check_engine_compatible(engine: EngineSpec, trt_version: str, compute_capability: str | tuple[int, int]) -> None:
    """Refuse an engine built for another TensorRT (major.minor.patch) or GPU compute capability."""
    problems = _mismatches(engine, trt_version, compute_capability)
    if problems:
        raise UserError(f"engine {engine.file} was built for {' and '.join(problems)}; rebuild it on this device "
                        f"with `uda-adapt export CKPT --trt --precision {engine.precision}`")


def compatible_engine(manifest: Manifest, trt_version: str, compute_capability: str | tuple[int, int],
                      precision: str | None = None) -> EngineSpec:
    """The manifest's engine for this TensorRT and GPU (and `precision`, if given)."""
    candidates = [e for e in manifest.engines if precision is None or e.precision == precision]
    if not candidates:
        option = f" --precision {precision}" if precision else ""
        raise UserError(f"the export has no {precision + ' ' if precision else ''}TensorRT engine; build one on "
                        f"this device with `uda-adapt export CKPT --trt{option}`")
    for engine in candidates:
        if not _mismatches(engine, trt_version, compute_capability):
            return engine
    check_engine_compatible(candidates[0], trt_version, compute_capability)  # raises, naming the mismatch
    return candidates[0]


def _mismatches(engine: EngineSpec, trt_version: str, compute_capability: str | tuple[int, int]) -> list[str]:
    here_cc = _cc_text(compute_capability)
    problems = []
    if trt_version_key(engine.trt_version) != trt_version_key(trt_version):
        problems.append(f"TensorRT {engine.trt_version} (this system has {trt_version})")
    if _cc_text(engine.compute_capability) != here_cc:
        problems.append(f"compute capability {engine.compute_capability} (this GPU is {here_cc})")
    return problems


def _cc_text(value: str | tuple[int, int]) -> str:
    """"8.7", "sm87", "87" or (8, 7) -> "8.7"."""
    if isinstance(value, (tuple, list)):
        return f"{int(value[0])}.{int(value[1])}"
    text = str(value).lower().removeprefix("sm").removeprefix("_")
    if "." in text:
        major, minor = text.split(".", 1)
        return f"{int(major)}.{int(minor)}"
    return f"{int(text[:-1])}.{int(text[-1])}"
