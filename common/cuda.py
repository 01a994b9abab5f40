"""The few CUDA runtime calls TensorRT code needs, through cuda-python or else torch.

Used by the runtime's TensorRT backend and by the engine builder (device memory for the
legacy int8 calibrator, the GPU's name and compute capability). Neither library is required
to import this module: `open_cuda` picks what works here, and says exactly what to install
when nothing does.

Threads: the CUDA runtime's current device is per thread. `open_cuda(device)` selects the
device on the opening thread; code that runs on another thread (the pipeline's inference
thread) calls `use_on_this_thread()` first, or its copies and kernels go to GPU 0.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Protocol

import numpy as np

from uda_adapt.common.errors import UserError

# JetPack 6.0 ships CUDA 12.2, JetPack 6.1/6.2 CUDA 12.6; cuda-python's major.minor must not be
# newer than the driver's CUDA, or every call fails with cudaErrorInsufficientDriver.
CUDA_PYTHON_HINT = (
    "install the cuda-python that matches this system's CUDA (see /usr/local/cuda/version.json), "
    "e.g. `pip install 'cuda-python==12.6.*'` on JetPack 6.1/6.2 or `'cuda-python==12.2.*'` on JetPack 6.0"
)


class CudaLayer(Protocol):
    """Device memory, pinned host memory and async copies on one stream."""

    stream_handle: int
    device: int

    def use_on_this_thread(self) -> None: ...                   # select `device` on the calling thread
    def name(self) -> str: ...
    def compute_capability(self) -> str: ...                     # e.g. "8.7"
    def device_buffer(self, nbytes: int) -> int: ...              # -> device pointer
    def pinned(self, nbytes: int) -> np.ndarray: ...              # page-locked host uint8
    def upload(self, device_ptr: int, host: np.ndarray) -> None: ...
    def download(self, host: np.ndarray, device_ptr: int) -> None: ...
    def synchronize(self) -> None: ...
    def close(self) -> None: ...


def open_cuda(device: int = 0) -> CudaLayer:
    """cuda-python when it imports and works with this driver, else torch's CUDA.

    A cuda-python built for a newer CUDA than the driver imports fine and then fails every
    call (cudaErrorInsufficientDriver): that, too, falls back to torch.
    """
    problems = []
    try:
        return CudaPythonLayer(_import_cudart(), device)
    except ImportError as exc:
        problems.append(f"cuda-python is not installed ({exc})")
    except UserError as exc:
        problems.append(f"cuda-python cannot use the GPU: {exc}")
    try:
        import torch
    except ImportError:
        problems.append("torch is not installed")
    else:
        if torch.cuda.is_available():
            return TorchCudaLayer(torch, device)
        problems.append("torch has no CUDA here (torch.cuda.is_available() is False)")
    raise UserError(f"no usable CUDA for GPU {device}: {'; '.join(problems)}; {CUDA_PYTHON_HINT}, "
                    "or run the .onnx with --backend ort")


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6
    return cudart


class CudaPythonLayer:
    def __init__(self, cudart: Any, device: int) -> None:
        self._rt = cudart
        self.device = device
        self._device_ptrs: list[int] = []
        self._host_ptrs: list[int] = []
        self._thread = threading.local()
        self.stream_handle = 0
        self.use_on_this_thread()
        self.stream_handle = int(self._call("cudaStreamCreate"))

    def _call(self, name: str, *args: Any, what: str | None = None) -> Any:
        result = getattr(self._rt, name)(*args)
        err, values = result[0], result[1:]
        if int(err) != 0:
            raise UserError(f"{what or 'CUDA call ' + name + ' failed'} ({getattr(err, 'name', err)})")
        return values[0] if len(values) == 1 else (values or None)

    def use_on_this_thread(self) -> None:
        # Once per thread: cudaSetDevice is cheap, but the check is cheaper.
        if getattr(self._thread, "device", None) != self.device:
            self._call("cudaSetDevice", self.device,
                       what=f"no usable CUDA GPU {self.device}; TensorRT needs an NVIDIA GPU and a driver at least as new as cuda-python's CUDA")
            self._thread.device = self.device

    def _properties(self) -> Any:
        return self._call("cudaGetDeviceProperties", self.device)

    def name(self) -> str:
        raw = self._properties().name
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.strip("\x00").strip()

    def compute_capability(self) -> str:
        props = self._properties()
        return f"{props.major}.{props.minor}"

    def device_buffer(self, nbytes: int) -> int:
        ptr = int(self._call("cudaMalloc", nbytes))
        self._device_ptrs.append(ptr)
        return ptr

    def pinned(self, nbytes: int) -> np.ndarray:
        ptr = int(self._call("cudaMallocHost", nbytes))
        self._host_ptrs.append(ptr)
        return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

    def upload(self, device_ptr: int, host: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", device_ptr, host.ctypes.data, host.nbytes, kind, self.stream_handle)

    def download(self, host: np.ndarray, device_ptr: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", host.ctypes.data, device_ptr, host.nbytes, kind, self.stream_handle)

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self.stream_handle)

    def close(self) -> None:
        for ptr in self._device_ptrs:
            self._rt.cudaFree(ptr)
        for ptr in self._host_ptrs:
            self._rt.cudaFreeHost(ptr)
        self._device_ptrs, self._host_ptrs = [], []
        if self.stream_handle:
            self._rt.cudaStreamDestroy(self.stream_handle)
            self.stream_handle = 0


class TorchCudaLayer:
    """The same calls through torch tensors (what Ultralytics does); torch owns the memory."""

    def __init__(self, torch: Any, device: int) -> None:
        self._torch = torch
        self.device = device
        self._device = torch.device(f"cuda:{device}")
        self._thread = threading.local()
        self.use_on_this_thread()
        self._stream = torch.cuda.Stream(self._device)
        self.stream_handle = int(self._stream.cuda_stream)
        self._tensors: dict[int, Any] = {}

    def use_on_this_thread(self) -> None:
        if getattr(self._thread, "device", None) != self.device:
            self._torch.cuda.set_device(self._device)
            self._thread.device = self.device

    def name(self) -> str:
        return str(self._torch.cuda.get_device_name(self._device))

    def compute_capability(self) -> str:
        major, minor = self._torch.cuda.get_device_capability(self._device)
        return f"{major}.{minor}"

    def device_buffer(self, nbytes: int) -> int:
        tensor = self._torch.empty(nbytes, dtype=self._torch.uint8, device=self._device)
        self._tensors[tensor.data_ptr()] = tensor
        return tensor.data_ptr()

    def pinned(self, nbytes: int) -> np.ndarray:
        tensor = self._torch.empty(nbytes, dtype=self._torch.uint8, pin_memory=True)
        self._tensors[tensor.data_ptr()] = tensor
        return tensor.numpy()

    def upload(self, device_ptr: int, host: np.ndarray) -> None:
        with self._torch.cuda.stream(self._stream):
            self._tensors[device_ptr][: host.nbytes].copy_(self._torch.from_numpy(host), non_blocking=True)

    def download(self, host: np.ndarray, device_ptr: int) -> None:
        with self._torch.cuda.stream(self._stream):
            self._torch.from_numpy(host).copy_(self._tensors[device_ptr][: host.nbytes], non_blocking=True)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        self._tensors.clear()
