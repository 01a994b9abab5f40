"""`uda-adapt run BUNDLE_DIR`: which of a bundle's models runs on this device.

A TensorRT engine built for this device (`common.engines`: TensorRT version, GPU, board, DLA)
when there is one. Where TensorRT is installed and the bundle has no engine for this device,
one is built from the bundle's ONNX and kept in the bundle (`common.engine_build`), so the
first run takes minutes and later runs start at once; `build=False` (`--no-build`) refuses.
Otherwise the bundle's ONNX runs in ONNX Runtime: its fp16 variant where this onnxruntime has
a GPU provider (CUDA, or TensorRT's with its library), the fp32 model.onnx on the CPU (half
precision is slower there). Each choice that is passed over is said once, with the reason, so a
user knows why the slow path runs; where TensorRT is installed and still cannot run, loudly.
"""

from __future__ import annotations

import os
from pathlib import Path

from uda_adapt.common.engines import Device, compatible_engine, device_model_name, matching_engine
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import MANIFEST_NAME, EngineSpec, Manifest, read_manifest
from uda_adapt.runtime.capture import Log, log_to_stderr


def resolve_model(model: str | Path, backend: str = "auto", device: int = 0, log: Log = log_to_stderr,
                  build: bool = True) -> Path:
    """A model file as given; for an export bundle directory, the model to run here."""
    path = Path(model)
    return model_in_bundle(path, backend, device, log, build) if path.is_dir() else path


def model_in_bundle(bundle: str | Path, backend: str = "auto", device: int = 0, log: Log = log_to_stderr,
                    build: bool = True) -> Path:
    """The model file in `bundle` to run with `backend` (auto|trt|ort) on GPU `device`."""
    folder = Path(bundle)
    if backend == "torch":
        raise UserError(f"{folder} is an export bundle; --backend torch runs a checkpoint (.pt), not a bundle")
    manifest = read_manifest(folder / MANIFEST_NAME)
    if backend in ("auto", "trt"):
        try:
            return folder / engine_for_this_device(folder, manifest, device, build, log).file
        except UserError as exc:
            if backend == "trt":
                raise
            onnx = onnx_for_this_device(folder, manifest, log)
            version = tensorrt_version()
            if version is None:
                log(f"note: {exc}; running {onnx.name} with ONNX Runtime")
            else:     # the user installed TensorRT to use it: a quiet fallback would pass for the fast path
                log(f"WARNING: TensorRT {version} is installed but cannot run this bundle here: {exc}. Running "
                    f"{onnx.name} with ONNX Runtime instead, much slower than an engine; fix the cause (on x86 "
                    "`pip install 'uda-adapt[runtime,trt]'` brings cuda-python), or pass --backend ort to choose this")
            return onnx
    return onnx_for_this_device(folder, manifest, log)


def onnx_for_this_device(folder: Path, manifest: Manifest, log: Log = log_to_stderr) -> Path:
    """The bundle's fp16 ONNX where onnxruntime has a GPU provider to run it, else its fp32 model.onnx."""
    from uda_adapt.runtime.backends.onnxruntime_backend import choose_providers, tensorrt_library_found

    fp16 = manifest.variants.get("fp16", {}).get("file")
    if not fp16 or not (folder / fp16).is_file():
        return folder / manifest.onnx_file
    try:
        import onnxruntime
    except ImportError:          # open_backend says what to install
        return folder / manifest.onnx_file
    gpu = [p for p in choose_providers(onnxruntime.get_available_providers(), None, tensorrt_library_found())
           if p != "CPUExecutionProvider"]
    if not gpu:
        return folder / manifest.onnx_file
    log(f"note: running {fp16} (this onnxruntime has {', '.join(gpu)}); give {folder / manifest.onnx_file} as MODEL "
        "to run the fp32 one")
    return folder / fp16


def tensorrt_version() -> str | None:
    """The installed TensorRT's version; None where it does not import."""
    try:
        import tensorrt
    except (ImportError, OSError):
        return None
    return str(getattr(tensorrt, "__version__", "?"))


def engine_for_this_device(folder: Path, manifest: Manifest, device: int, build: bool, log: Log) -> EngineSpec:
    """The bundle's engine for this device; built now (and kept) when it has none and `build` allows."""
    here = installed_device(device)
    spec = matching_engine(manifest, here)
    if spec is not None:
        return spec
    if not build:
        compatible_engine(manifest, here)           # raises, naming why no engine fits and the build command
    if not os.access(folder, os.W_OK):              # say so before minutes of building, not after
        raise UserError(f"{folder} has no TensorRT engine for this {here.model} and is not writable, so none can be "
                        f"built and kept there; copy the bundle somewhere writable, or run `uda-adapt build` as its owner")
    from uda_adapt.common.engine_build import BuildConfig, build_from_bundle

    log(f"{folder} has no TensorRT engine for this {here.model} with TensorRT {here.trt_version}: building one now "
        "(minutes; it is kept in the bundle, later runs start at once; --no-build to skip)")
    spec = build_from_bundle(folder, BuildConfig(device=device), log=log)
    log(f"built {spec.file}; `uda-adapt check {folder}` compares it with the ONNX")
    return spec


def installed_device(device: int = 0) -> Device:
    """This device as engines are keyed (TensorRT version, GPU, board, DLA cores); a UserError saying what is missing."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise UserError(f"TensorRT is not usable here ({exc})") from None
    from uda_adapt.common.cuda import open_cuda
    from uda_adapt.common.tensorrt_build import dla_cores

    cuda = open_cuda(device)
    try:
        name, capability = cuda.name(), cuda.compute_capability()
    finally:
        cuda.close()
    return Device(str(tensorrt.__version__), capability, device_model_name(name), dla_cores(tensorrt))
