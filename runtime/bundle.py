"""`uda-adapt run BUNDLE_DIR`: which of a bundle's models runs on this device.

A TensorRT engine built for the installed TensorRT and this GPU when there is one
(`common.engines.compatible_engine`), else the bundle's ONNX in ONNX Runtime. Each choice
that is passed over is said once, with the reason, so a user knows why the slow path runs.
"""

from __future__ import annotations

from pathlib import Path

from common.engines import compatible_engine
from common.errors import UserError
from common.manifest import MANIFEST_NAME, read_manifest
from runtime.capture import Log, log_to_stderr


def resolve_model(model: str | Path, backend: str = "auto", device: int = 0, log: Log = log_to_stderr) -> Path:
    """A model file as given; for an export bundle directory, the model to run here."""
    path = Path(model)
    return model_in_bundle(path, backend, device, log) if path.is_dir() else path


def model_in_bundle(bundle: str | Path, backend: str = "auto", device: int = 0, log: Log = log_to_stderr) -> Path:
    """The model file in `bundle` to run with `backend` (auto|trt|ort) on GPU `device`."""
    folder = Path(bundle)
    if backend == "torch":
        raise UserError(f"{folder} is an export bundle; --backend torch runs a checkpoint (.pt), not a bundle")
    manifest = read_manifest(folder / MANIFEST_NAME)
    if backend in ("auto", "trt"):
        if not manifest.engines:
            reason = f"{folder} holds no TensorRT engine (build one here with `uda-adapt build {folder}`)"
        else:
            try:
                trt_version, capability = installed_tensorrt(device)
                spec = compatible_engine(manifest, trt_version, capability)
            except UserError as exc:
                reason = str(exc)
            else:
                return folder / spec.file
        if backend == "trt":
            raise UserError(reason)
        log(f"note: {reason}; running {manifest.onnx_file} with ONNX Runtime")
    return folder / manifest.onnx_file


def installed_tensorrt(device: int = 0) -> tuple[str, str]:
    """(TensorRT version, GPU compute capability) here; a UserError saying what is missing."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise UserError(f"TensorRT is not usable here ({exc})") from None
    from common.cuda import open_cuda

    cuda = open_cuda(device)
    try:
        return str(tensorrt.__version__), cuda.compute_capability()
    finally:
        cuda.close()
