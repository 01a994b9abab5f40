"""TensorRT 10.x legacy int8 calibration: an entropy calibrator fed one image at a time.

Only `--legacy-precision-flags` builds calibrate in TensorRT (strongly typed int8 reads its
scales from the Q/DQ ONNX). The calibrator hands TensorRT device pointers (`common.cuda`), keys
its cache by what the scales depend on, and keeps any error TensorRT's Python trampoline would
swallow, to raise after the build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from uda_adapt.common.atomic import atomic_write_bytes
from uda_adapt.common.cuda import open_cuda
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import InputSpec

ENTROPY_CALIBRATOR = "IInt8EntropyCalibrator2"


class CalibrationSource(Protocol):
    """What the legacy calibrator reads (export.precision.ImageCalibrationReader): (1, 3, H, W) batches."""

    input_name: str
    files: list[Path]
    spec: InputSpec
    size: tuple[int, int]

    def get_next(self) -> dict[str, np.ndarray] | None: ...


def calibrate_with_entropy(trt: ModuleType, builder: Any, config: Any, reader: CalibrationSource | None,
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
