"""A stand-in `tensorrt` module with the 10.x or the 11.x Python API surface, recording calls.

Only what the build code may touch is modelled, and only where the real version has it:
10.x has BuilderFlag.FP16/INT8, NetworkDefinitionCreationFlag.EXPLICIT_BATCH, the
IInt8EntropyCalibrator2 base class and config.int8_calibrator; 11.x has none of them
(TensorRT 11 removed them), and both have STRONGLY_TYPED. Checked against the TensorRT 10/11
Python API docs: `IBuilderConfig.set_timing_cache` returns a bool (False: the cache is from
another TensorRT or device); DLA builds set `default_device_type = DeviceType.DLA`, `DLA_core`
and `BuilderFlag.GPU_FALLBACK`, and `IBuilder.num_DLA_cores` / `IRuntime.num_DLA_cores` say how
many cores there are; `IBuilderConfig.set_calibration_profile` takes an optimization profile
whose shapes the legacy calibrator's batches must have.

A parsed network holds the layers `trt.network_layers` names (a segmentation head: convolutions,
a Resize, the TopK the ONNX parser makes of ArgMax); a layer's precision and output types are
recorded when set. The calibrator is driven as TensorRT 10's Python trampoline does it
(python/src/infer/pyInt8.cpp): an exception raised in a callback is printed and swallowed, and
`get_batch` then counts as the end of the data.

The GPU a fake build runs on is `trt.gpu_tag` (tests switch it with the detected GPU): a timing
cache serialized on one tag is refused on another, as TensorRT refuses one from another device.
"""

from __future__ import annotations

import enum
import types
from pathlib import Path


def make_fake_tensorrt(version: str, *, parse_ok: bool = True, build_ok: bool = True,
                       builder_error: Exception | None = None, timing_cache_ok: bool = True,
                       dla_cores: int = 0) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: list[tuple] = []
    trt.calls = calls
    trt.gpu_tag = "gpu-a"

    network_flags = {"STRONGLY_TYPED": 5} if major >= 11 else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 5}
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", network_flags)
    builder_flags = ["GPU_FALLBACK", "REFIT", "VERSION_COMPATIBLE", "STRIP_PLAN", "TF32"]
    if major < 11:
        builder_flags += ["FP16", "BF16", "INT8", "FP8", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
    trt.DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"])
    trt.LayerType = enum.IntEnum("LayerType", ["CONVOLUTION", "ACTIVATION", "ELEMENTWISE", "RESIZE", "TOPK",
                                               "SOFTMAX", "SHUFFLE", "CAST"])
    trt.DataType = enum.IntEnum("DataType", ["FLOAT", "HALF", "INT8", "INT32"])
    trt.float32, trt.float16 = trt.DataType.FLOAT, trt.DataType.HALF
    trt.network_layers = ["CONVOLUTION", "ACTIVATION", "CONVOLUTION", "RESIZE", "TOPK"]

    class Logger:
        WARNING = 2
        INFO = 3

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    class TimingCache:
        def __init__(self, previous: bytes) -> None:
            self.previous = bytes(previous)

        def serialize(self) -> bytes:
            return b"timing:" + trt.gpu_tag.encode() + b":" + self.previous[-16:] + b"+1"

        def fits_here(self) -> bool:
            return not self.previous.startswith(b"timing:") or self.previous.startswith(b"timing:" + trt.gpu_tag.encode() + b":")

    class Profile:
        def __init__(self) -> None:
            self.shapes: tuple = ()

        def set_shape(self, name: str, min, opt, max) -> None:  # noqa: A002  (TensorRT's keyword names)
            calls.append(("set_shape", name, tuple(min), tuple(opt), tuple(max)))
            self.shapes = (tuple(min), tuple(opt), tuple(max))

    class Config:
        def __init__(self) -> None:
            self.flags: set = set()
            self.calibrator = None
            self._device_type, self._dla_core = trt.DeviceType.GPU, -1

        @property
        def default_device_type(self):
            return self._device_type

        @default_device_type.setter
        def default_device_type(self, value) -> None:
            calls.append(("default_device_type", value.name))
            self._device_type = value

        @property
        def DLA_core(self) -> int:  # noqa: N802  (TensorRT's attribute name)
            return self._dla_core

        @DLA_core.setter
        def DLA_core(self, value: int) -> None:  # noqa: N802
            calls.append(("DLA_core", value))
            self._dla_core = value

        def set_memory_pool_limit(self, pool, size: int) -> None:
            calls.append(("set_memory_pool_limit", pool, size))

        def create_timing_cache(self, previous: bytes) -> TimingCache:
            calls.append(("create_timing_cache", bytes(previous)))
            return TimingCache(previous)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            calls.append(("set_timing_cache", ignore_mismatch))
            return timing_cache_ok and (ignore_mismatch or cache.fits_here())

        def add_optimization_profile(self, profile: Profile) -> int:
            calls.append(("add_optimization_profile",))
            return 0

        def set_flag(self, flag) -> None:
            calls.append(("set_flag", flag.name))
            self.flags.add(flag.name)

    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                calls.append(("calibrator_init",))

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

        def _set_calibrator(self, calibrator) -> None:
            calls.append(("int8_calibrator", type(calibrator).__mro__[1].__name__))
            self.calibrator = calibrator

        Config.int8_calibrator = property(lambda self: self.calibrator, _set_calibrator)
        def _set_calibration_profile(self, profile) -> None:
            calls.append(("set_calibration_profile", profile.shapes))
            self.calibration_shape = profile.shapes[1]      # TensorRT calibrates at the OPT shape

        Config.set_calibration_profile = _set_calibration_profile

    class Layer:
        def __init__(self, index: int, kind: str) -> None:
            self.name, self.type, self._precision = f"layer{index}", trt.LayerType[kind], None

        @property
        def precision(self):
            return self._precision

        @precision.setter
        def precision(self, value) -> None:
            calls.append(("layer_precision", self.type.name, value.name))
            self._precision = value

        def set_output_type(self, index: int, dtype) -> None:
            calls.append(("layer_output_type", self.type.name, index, dtype.name))

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.layers: list[Layer] = []

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, index: int) -> Layer:
            return self.layers[index]

    class Builder:
        def __init__(self, logger: Logger) -> None:
            if builder_error is not None:
                raise builder_error
            calls.append(("Builder",))
            self.num_DLA_cores = dla_cores

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config):
            calls.append(("build_serialized_network", network.flags, sorted(config.flags)))
            if config.calibrator is not None:
                _drive_calibrator(config.calibrator, calls, getattr(config, "calibration_shape", None))
            return b"PLAN" + bytes([major]) if build_ok else None

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.errors: list[str] = []
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse_from_file", Path(path).name))
            if not parse_ok or not Path(path).is_file():
                self.errors = [f"In node 3 (importResize): UNSUPPORTED_NODE: cubic mode in {Path(path).name}"]
                return False
            self.network.layers = [Layer(i, kind) for i, kind in enumerate(trt.network_layers)]
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> str:
            return self.errors[index]

    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])

    class Engine:
        """A deserialized plan: input "image" (static 1x3x64x128, or dynamic with one profile), output "mask"."""

        num_io_tensors = 2

        def __init__(self, dynamic: bool) -> None:
            self.dynamic = dynamic

        def get_tensor_name(self, index: int) -> str:
            return ["image", "mask"][index]

        def get_tensor_mode(self, name: str):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple:
            if name == "image":
                return (-1, 3, -1, -1) if self.dynamic else (1, 3, 64, 128)
            return (-1, -1, -1) if self.dynamic else (1, 64, 128)

        def get_tensor_profile_shape(self, name: str, profile: int) -> list:
            return [(1, 3, 32, 64), (1, 3, 64, 128), (2, 3, 128, 256)]

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.num_DLA_cores = dla_cores
            self.DLA_core = -1

        def deserialize_cuda_engine(self, plan: bytes):
            """A plan this fake built (or a trtexec stand-in: b"PLAN..."); None for anything else, as TensorRT does."""
            calls.append(("deserialize_cuda_engine", bytes(plan[:8])))
            plan = bytes(plan)
            return Engine(dynamic=plan.endswith(b"dynamic")) if plan.startswith(b"PLAN") else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


def _trampoline(calls: list[tuple], method, *args, failed=None):
    """A Python callback as pyInt8.cpp calls it: an exception is printed, swallowed and becomes `failed`."""
    try:
        return method(*args)
    except Exception as exc:  # noqa: BLE001  (what the C++ trampoline does)
        calls.append(("callback_exception_swallowed", method.__name__, type(exc).__name__))
        return failed


def _drive_calibrator(calibrator, calls: list[tuple], shape: tuple | None) -> None:
    """What TensorRT 10 does with a calibrator: read the cache, pull batches, write the cache.

    Each batch is read at the calibration profile's OPT shape (`shape`; None for a static
    network): recorded so a test can check it against what the calibrator uploaded.
    """
    if _trampoline(calls, calibrator.read_calibration_cache) is None:
        pointers = []
        while (batch := _trampoline(calls, calibrator.get_batch, ["image"])) is not None:
            pointers.append(batch[0])
        calls.append(("calibration_batches", len(pointers), calibrator.get_batch_size()))
        calls.append(("calibration_pointers", pointers))
        calls.append(("calibration_read_shape", shape))
        _trampoline(calls, calibrator.write_calibration_cache, b"calibration-table")
    else:
        calls.append(("calibration_cache_used",))
