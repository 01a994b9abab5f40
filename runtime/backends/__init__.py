"""Inference backends behind one interface (`runtime.backends.base.Backend`).

`open_backend(model, "auto")` picks by file type: `.engine`/`.plan` -> TensorRT, `.onnx` ->
ONNX Runtime, `.pt`/`.pth` -> PyTorch checkpoint. Each backend module imports its heavy
dependency only when opened.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from uda_adapt.common.errors import UserError
from uda_adapt.common.file_kinds import require_kind
from uda_adapt.runtime.backends.base import Backend

# backend name -> (module, class, the file suffixes it runs)
BACKENDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "trt": ("uda_adapt.runtime.backends.tensorrt_backend", "TensorRTBackend", (".engine", ".plan")),
    "ort": ("uda_adapt.runtime.backends.onnxruntime_backend", "OnnxRuntimeBackend", (".onnx",)),
    "torch": ("uda_adapt.runtime.backends.torch_backend", "TorchBackend", (".pt", ".pth")),
}
# backend name -> (the file kind it runs, other kinds let through to its loader); see common.file_kinds.
# Engines have no documented header, so content sniffing cannot tell one from noise: only known
# other kinds are refused. The PyTorch backend's load_checkpoint does its own check.
EXPECTED_KIND: dict[str, tuple[str, tuple[str, ...]]] = {"trt": ("engine", ("unknown",)), "ort": ("onnx", ())}
BACKEND_BY_SUFFIX: dict[str, str] = {suffix: name for name, (_, _, suffixes) in BACKENDS.items() for suffix in suffixes}


def backend_for(model_path: str | os.PathLike, backend: str = "auto") -> str:
    """The backend name for `model_path`; a UserError for a missing file or an unknown type."""
    path = Path(model_path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    if backend == "auto":
        try:
            return BACKEND_BY_SUFFIX[path.suffix.lower()]
        except KeyError:
            raise UserError(f"model {path} has unknown type {path.suffix or '(no suffix)'}; expected one of {', '.join(BACKEND_BY_SUFFIX)}") from None
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; valid: auto, {', '.join(BACKENDS)}")
    suffixes = BACKENDS[backend][2]
    if path.suffix.lower() not in suffixes:
        raise UserError(f"--backend {backend} runs {'/'.join(suffixes)} files, not {path.name}; use --backend auto")
    return backend


def open_backend(model_path: str | os.PathLike, backend: str = "auto", **options: object) -> Backend:
    """Open `model_path` with `backend` (auto|trt|ort|torch).

    Options all backends take: threads (CPU threads), device (GPU index), input_size ((H, W)
    for models without a fixed size).
    """
    name = backend_for(model_path, backend)
    if name in EXPECTED_KIND:
        # A checkpoint renamed .onnx, or an ONNX given an .engine name: say so, not the loader's parse error.
        require_kind(model_path, *EXPECTED_KIND[name])
    module_name, class_name, _ = BACKENDS[name]
    cls: Callable[..., Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls(model_path, **options)
