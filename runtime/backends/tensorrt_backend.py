"""TensorRT 10/11: one engine, one CUDA stream, device buffers allocated and bound once.

`tensorrt` and the CUDA layer (cuda-python's `cuda.bindings.runtime`, else torch's CUDA) are
imported only when an engine is opened, so this module imports anywhere. The engine's entry in
`model.json` must match the installed TensorRT and the GPU's compute capability: a TensorRT
plan only runs on the version and GPU it was built for.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from common.errors import UserError
from common.manifest import EngineSpec, Manifest, manifest_for, read_manifest
from runtime.backends.base import input_size_from, logits_to_mask

INSTALL_HINT = (
    "TensorRT is not installed: on Jetson it comes with JetPack (python3-libnvinfer); on x86 "
    "`pip install tensorrt-cu12 cuda-python`; or run the .onnx with --backend ort"
)


class CudaLayer(Protocol):
    """The few CUDA calls the backend makes; all copies are async on one stream."""

    stream_handle: int

    def compute_capability(self) -> str: ...
    def device_buffer(self, nbytes: int) -> int: ...              # -> device pointer
    def pinned(self, nbytes: int) -> np.ndarray: ...              # page-locked host uint8
    def upload(self, device_ptr: int, host: np.ndarray) -> None: ...
    def download(self, host: np.ndarray, device_ptr: int) -> None: ...
    def synchronize(self) -> None: ...
    def close(self) -> None: ...


class TensorRTBackend:
    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        threads: int | None = None,
        device: int = 0,
        input_size: tuple[int, int] | None = None,
        trt: Any = None,
        cuda: CudaLayer | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(model_path)
        self.manifest: Manifest = read_manifest(manifest_for(self.path))
        trt = trt if trt is not None else _import_tensorrt()
        self._cuda = cuda if cuda is not None else open_cuda(device)
        try:
            note = check_engine(self.manifest, self.path, trt.__version__, self._cuda.compute_capability())
            if note and log:
                log(note)
            self._open_engine(trt, input_size)
        except BaseException:
            self._cuda.close()           # setup failed halfway: free what we allocated
            raise
        self.providers = [f"TensorRT {trt.__version__}"]

    def _open_engine(self, trt: Any, input_size: tuple[int, int] | None) -> None:
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise UserError(f"TensorRT {trt.__version__} cannot load {self.path}: it was built for another TensorRT version or GPU; rebuild it here with `uda-adapt export CKPT --trt`")
        self._engine = engine
        self._context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not outputs:
            raise UserError(f"{self.path} has inputs {inputs} and outputs {outputs}; expected one image input and a mask output")
        self._input = inputs[0]
        self._output = self.manifest.output.name if self.manifest.output.name in outputs else outputs[0]
        shape = tuple(engine.get_tensor_shape(self._input))
        if -1 in shape:
            _, opt_shape, max_shape = (tuple(s) for s in engine.get_tensor_profile_shape(self._input, 0))
        else:
            opt_shape = max_shape = shape
        self._max_input_shape = max_shape
        self.input_size = input_size_from(self.manifest, input_size or (int(opt_shape[2]), int(opt_shape[3])))

        # Allocate at the profile maximum once; later shapes only change the views.
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._input)))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._output)))
        self._context.set_input_shape(self._input, max_shape)
        max_out = tuple(self._context.get_tensor_shape(self._output))
        in_bytes = int(np.prod(max_shape)) * self._in_dtype.itemsize
        out_bytes = int(np.prod(max_out)) * self._out_dtype.itemsize
        self._d_input = self._cuda.device_buffer(in_bytes)
        self._d_output = self._cuda.device_buffer(out_bytes)
        self._h_input = self._cuda.pinned(in_bytes)
        self._h_output = self._cuda.pinned(out_bytes)
        self._context.set_tensor_address(self._input, self._d_input)
        self._context.set_tensor_address(self._output, self._d_output)
        self._shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] = max_out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape != self._shape:
            if any(b > m for b, m in zip(batch.shape, self._max_input_shape)):
                raise UserError(f"input {batch.shape} exceeds the engine's maximum {self._max_input_shape}; rebuild with a larger --max-shape")
            self._context.set_input_shape(self._input, batch.shape)
            self._out_shape = tuple(self._context.get_tensor_shape(self._output))
            self._shape = batch.shape
        n_in = batch.size * self._in_dtype.itemsize
        n_out = int(np.prod(self._out_shape)) * self._out_dtype.itemsize
        np.copyto(self._h_input[:n_in].view(self._in_dtype).reshape(batch.shape), batch, casting="same_kind")
        self._cuda.upload(self._d_input, self._h_input[:n_in])
        if not self._context.execute_async_v3(self._cuda.stream_handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.path}")
        self._cuda.download(self._h_output[:n_out], self._d_output)
        # The one host sync per frame: the renderer needs the mask on the host.
        self._cuda.synchronize()
        # Copy out of the pinned buffer: the next infer overwrites it while this mask is rendered.
        output = self._h_output[:n_out].view(self._out_dtype).reshape(self._out_shape).copy()
        return logits_to_mask(output)

    def describe(self) -> str:
        h, w = self.input_size
        return f"tensorrt {self.path.name} on {self.providers[0]}, compute {self._cuda.compute_capability()}, input {h}x{w}"

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._cuda.close()


def check_engine(manifest: Manifest, engine_path: Path, trt_version: str, compute_capability: str) -> str | None:
    """Refuse an engine whose manifest entry names another TensorRT or GPU.

    Returns a note when the manifest has no entry for this file (an engine from trtexec): then
    TensorRT's own check at deserialisation is all there is.
    """
    spec = next((e for e in manifest.engines if Path(e.file).name == engine_path.name), None)
    if spec is None:
        return f"{manifest_for(engine_path)} lists no entry for {engine_path.name}; relying on TensorRT's own version check"
    try:
        from export.tensorrt_build import check_engine_compatible
    except ImportError:
        check_engine_compatible = _check_engine_compatible
    check_engine_compatible(spec, trt_version, compute_capability)
    return None


def _check_engine_compatible(spec: EngineSpec, trt_version: str, compute_capability: str) -> None:
    if _version_key(spec.trt_version) != _version_key(trt_version):
        raise UserError(
            f"engine {spec.file} was built with TensorRT {spec.trt_version} but TensorRT {trt_version} is installed; "
            "rebuild it on this machine with `uda-adapt export CKPT --trt`"
        )
    if spec.compute_capability != compute_capability:
        raise UserError(
            f"engine {spec.file} was built for a GPU of compute capability {spec.compute_capability} ({spec.gpu_name}) "
            f"but this GPU is {compute_capability}; rebuild it on this machine with `uda-adapt export CKPT --trt`"
        )


def _version_key(version: str) -> tuple[str, ...]:
    """Engines are tied to major.minor.patch; the build number may differ (10.3.0 vs 10.3.0.30)."""
    return tuple(version.split(".")[:3])


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return tensorrt


def open_cuda(device: int = 0) -> CudaLayer:
    """cuda-python when installed (NVIDIA's samples use it), else torch's CUDA."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        return CudaPythonLayer(cudart, device)
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU is visible (torch.cuda.is_available() is False); TensorRT engines need one, run the .onnx with --backend ort instead")
    return TorchCudaLayer(torch, device)


class CudaPythonLayer:
    def __init__(self, cudart: Any, device: int) -> None:
        self._rt = cudart
        self._device_ptrs: list[int] = []
        self._host_ptrs: list[int] = []
        self._call("cudaSetDevice", device, what=f"no usable CUDA GPU {device}; TensorRT engines need an NVIDIA GPU and driver, or run the .onnx with --backend ort")
        self._device = device
        self.stream_handle = int(self._call("cudaStreamCreate"))

    def _call(self, name: str, *args: Any, what: str | None = None) -> Any:
        result = getattr(self._rt, name)(*args)
        err, values = result[0], result[1:]
        if int(err) != 0:
            raise UserError(f"{what or 'CUDA call ' + name + ' failed'} ({getattr(err, 'name', err)})")
        return values[0] if len(values) == 1 else values

    def compute_capability(self) -> str:
        props = self._call("cudaGetDeviceProperties", self._device)
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
        self._device = torch.device(f"cuda:{device}")
        self._stream = torch.cuda.Stream(self._device)
        self.stream_handle = int(self._stream.cuda_stream)
        self._tensors: dict[int, Any] = {}

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
