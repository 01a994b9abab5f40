"""TensorRT 10/11: one engine, one CUDA stream, device buffers allocated and bound once.

`tensorrt` and the CUDA layer (cuda-python's `cuda.bindings.runtime`, else torch's CUDA) are
imported only when an engine is opened, so this module imports anywhere. The engine's entry in
`model.json` must match this device (`common.engines`: the installed TensorRT, the GPU's compute
capability, the board, the DLA cores): a TensorRT plan only runs on the version and GPU it was
built for, and is tuned for the board it was built on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from uda_adapt.common.cuda import CudaLayer, open_cuda
from uda_adapt.common.engines import Device, check_engine_compatible, device_model_name
from uda_adapt.common.errors import UserError
from uda_adapt.common.manifest import Manifest, manifest_for, read_manifest
from uda_adapt.common.tensorrt_build import INSTALL_TENSORRT
from uda_adapt.runtime.backends.base import input_size_from, logits_to_mask

INSTALL_HINT = f"TensorRT is not installed: {INSTALL_TENSORRT}; or run the .onnx with --backend ort"


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
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            here = Device(str(trt.__version__), self._cuda.compute_capability(), device_model_name(self._cuda.name()),
                          int(getattr(self._runtime, "num_DLA_cores", 0)))
            note = check_engine(self.manifest, self.path, here)
            if note and log:
                log(note)
            dla = next((e.dla_core for e in self.manifest.engines if e.file == self.path.name), None)
            if dla is not None:
                self._runtime.DLA_core = dla      # as trtexec --useDLACore: the core the plan was built for
            self._open_engine(trt, input_size)
        except BaseException:
            self._cuda.close()           # setup failed halfway: free what we allocated
            raise
        self.providers = [f"TensorRT {trt.__version__}"]

    def _open_engine(self, trt: Any, input_size: tuple[int, int] | None) -> None:
        self._trt = trt
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise UserError(f"TensorRT {trt.__version__} cannot load {self.path}: it was built for another TensorRT version "
                            f"or GPU; build one here with `uda-adapt build {self.path.parent}` (the export bundle)")
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
            min_shape, opt_shape, max_shape = (tuple(s) for s in engine.get_tensor_profile_shape(self._input, 0))
        else:
            min_shape = opt_shape = max_shape = shape
        self._min_input_shape, self._max_input_shape = min_shape, max_shape
        self.input_size = input_size_from(self.manifest, input_size or (int(opt_shape[2]), int(opt_shape[3])))

        # Allocate at the profile maximum once; later shapes only change the views.
        self._in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._input)))
        self._out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self._output)))
        self._set_input_shape(max_shape)
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

    def _set_input_shape(self, shape: tuple[int, ...]) -> None:
        low, high = self._min_input_shape, self._max_input_shape
        if any(b > m for b, m in zip(shape, high)):
            raise UserError(f"input {_dims(shape)} exceeds the engine's maximum {_dims(high)}; use a smaller --size "
                            "or rebuild with a larger --max-shape")
        if any(b < m for b, m in zip(shape, low)):
            raise UserError(f"input {_dims(shape)} is below the engine's minimum {_dims(low)}; use a larger --size "
                            "or rebuild with a smaller --min-shape")
        # set_input_shape returns False for a shape the engine cannot take (TensorRT 10/11).
        if self._context.set_input_shape(self._input, shape) is False:
            raise UserError(f"TensorRT rejected input shape {_dims(shape)} for {self.path.name} (its range is "
                            f"{_dims(low)} .. {_dims(high)})")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        # Inference runs on the pipeline's thread, not the one that opened the engine: the
        # CUDA device is per thread, so select it here (once per thread) for --device N > 0.
        self._cuda.use_on_this_thread()
        if batch.shape != self._shape:
            self._set_input_shape(tuple(batch.shape))
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


def check_engine(manifest: Manifest, engine_path: Path, device: Device) -> str | None:
    """Refuse an engine whose manifest entry names another TensorRT, GPU or board, or a DLA core missing here.

    Returns a note when the manifest has no entry for this file (an engine from trtexec): then
    TensorRT's own check at deserialisation is all there is.
    """
    spec = next((e for e in manifest.engines if Path(e.file).name == engine_path.name), None)
    if spec is None:
        return (f"{manifest_for(engine_path)} lists no entry for {engine_path.name}; relying on TensorRT's own version "
                f"check (`uda-adapt build BUNDLE --register {engine_path.name}` records it)")
    check_engine_compatible(spec, device)
    return None


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return tensorrt


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(d)) for d in shape)
